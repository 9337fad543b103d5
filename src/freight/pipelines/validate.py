"""Every fault a pipeline declaration can have, found without running anything.

The checks read the raw ``pipelines:`` dicts (from ``freight.yaml`` or
:meth:`freight.Pipeline.to_dict`) and never stop at the first fault: ``freight
check`` prints them all at once, so a user fixes a file in one pass rather than
one error per start-up. Each fault is a :class:`PipelineDefinitionError` whose
message names the pipeline (and step) and the fault, with ``detail["fault"]`` a
stable kind for tools and tests. :func:`raise_for` turns a list into one error.

Only what a spec cannot be built or run with is a fault; style is not policed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Literal

from freight.errors import PipelineDefinitionError
from freight.pipelines import graph
from freight.pipelines.callback import check_callback
from freight.pipelines.catch import check_catch, entries
from freight.pipelines.declare import Pipeline, as_raw
from freight.pipelines.http import check_http
from freight.pipelines.retry import check_retry
from freight.pipelines.template import (
    ROOTS,
    STEP_FIELDS,
    TemplateError,
    expression,
    reference_text,
    scan,
)
from freight.pipelines.tolerate import check_tolerate

TargetKind = Literal["model", "pipeline"]
#: what a step is: a target's run, or one of the steps that run no target (``kind:``)
StepKind = Literal["model", "pipeline", "callback", "http"]
#: the step kinds declared with ``kind:`` rather than by naming a target
BUILTIN_KINDS: frozenset[str] = frozenset({"callback", "http"})
#: the target a step row of a built-in kind carries (not a valid model name: no clash)
BUILTIN_TARGETS = {"callback": ":callback", "http": ":http"}
#: what steps may run: ``{name: "model" | "pipeline"}``, or just the set of model names
Targets = Mapping[str, TargetKind] | Collection[str]

STEP_KEYS = frozenset(
    {"model", "pipeline", "kind", "input", "when", "for_each", "max_concurrency", "optional",
     "timeout_s", "max_attempts", "retry", "catch", "default", "tolerate",
     "heartbeat_s", "schema",  # kind: callback
     "method", "url", "headers"}  # kind: http
)  # fmt: skip
PIPELINE_KEYS = frozenset({"steps", "output", "timeout_s"})
STEP_NAME = re.compile(r"[a-z0-9_-]+")
PIPELINE_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")  # the model-name rule: one namespace


def fault(
    pipeline: str | None, message: str, *, kind: str, step: str | None = None, **detail: Any
) -> PipelineDefinitionError:
    """A fault whose message starts with where it is: ``pipeline 'p', step 's': …``."""
    where = "pipelines" if pipeline is None else f"pipeline {pipeline!r}"
    if step is not None:
        where += f", step {step!r}"
    return PipelineDefinitionError(
        f"{where}: {message}", pipeline=pipeline, step=step, fault=kind, **detail
    )


def raise_for(faults: Sequence[PipelineDefinitionError]) -> None:
    """Raise one error listing every fault (``detail["faults"]``), or nothing if none."""
    if not faults:
        return
    if len(faults) == 1:
        raise faults[0]
    lines = "\n".join(f"  - {f.message}" for f in faults)
    raise PipelineDefinitionError(
        f"{len(faults)} pipeline faults:\n{lines}",
        fault="many",
        faults=[f.message for f in faults],
        pipelines=sorted({str(f.detail.get("pipeline")) for f in faults}),
    )


def target_kinds(raw: Mapping[str, Any], targets: Targets) -> dict[str, TargetKind]:
    """Every runnable name and its kind: the given targets plus the pipelines declared
    here (a model keeps its name when a pipeline clashes with it; that is a fault)."""
    if isinstance(targets, Mapping):
        kinds: dict[str, TargetKind] = dict(targets)
    else:
        kinds = dict.fromkeys(targets, "model")
    for name in raw:
        kinds.setdefault(name, "pipeline")
    return kinds


def check_pipelines(raw: Any, *, targets: Targets) -> list[PipelineDefinitionError]:
    """All faults of all pipelines in a ``pipelines:`` section (empty: all is well)."""
    if not isinstance(raw, Mapping):
        return [fault(None, "must be a mapping of pipeline names to pipelines", kind="type")]
    kinds = target_kinds(raw, targets)
    models = {n for n, k in kinds.items() if k == "model"}
    faults: list[PipelineDefinitionError] = []
    nests: dict[str, set[str]] = {}
    for name, value in raw.items():
        checker = _Pipeline(str(name), kinds)
        if isinstance(value, Pipeline) and value.name != name:
            checker.add(f"is declared as {value.name!r}", kind="name")
        checker.check_name(name, models)
        checker.check(as_raw(value))
        faults += checker.faults
        nests[str(name)] = checker.nests
    return faults + _nesting_faults(nests)


def _nesting_faults(nests: Mapping[str, set[str]]) -> list[PipelineDefinitionError]:
    """Pipelines that contain themselves, directly or through others (never ending)."""
    out = [
        fault(name, f"nests itself: {name} -> {name}", kind="nesting_cycle", cycle=[name, name])
        for name, used in nests.items()
        if name in used
    ]
    for loop in graph.cycles(nests):
        uses = loop[::-1]  # cycles() gives data flow; a nesting reads "p1 uses p2"
        text = " -> ".join(uses)
        out.append(
            fault(uses[0], f"pipelines nest in a cycle: {text}", kind="nesting_cycle", cycle=uses)
        )
    return out


def step_input(raw: Mapping[str, Any]) -> Any:
    """A step's input template; left out, each element for a for_each step (``$item``),
    else the run's whole input (``$input``)."""
    if "input" in raw:
        return raw["input"]
    if raw.get("kind") == "http":  # an http step without input sends no body
        return None
    return "$item" if raw.get("for_each") is not None else "$input"


def _number(value: Any, *, integer: bool) -> bool:
    if isinstance(value, bool):
        return False
    if integer:
        return isinstance(value, int) and value >= 1
    return isinstance(value, int | float) and value > 0 and math.isfinite(value)


class _Pipeline:
    """The checks of one pipeline; faults accumulate in ``faults``."""

    def __init__(self, name: str, kinds: Mapping[str, TargetKind]) -> None:
        self.name = name
        self.kinds = kinds
        self.faults: list[PipelineDefinitionError] = []
        self.nests: set[str] = set()  # pipelines its steps run
        self.steps: set[str] = set()

    def add(self, message: str, *, kind: str, step: str | None = None, **detail: Any) -> None:
        """Record a fault of this pipeline (and step)."""
        self.faults.append(fault(self.name, message, kind=kind, step=step, **detail))

    def check_name(self, name: Any, models: Collection[str]) -> None:
        """The pipeline's own name: model-name rule, and no clash with a model."""
        if not isinstance(name, str) or not PIPELINE_NAME.fullmatch(name):
            self.add("a pipeline name must be lowercase letters, digits, . _ -", kind="name")
        if name in models:
            self.add(
                "is also the name of a model (models and pipelines share one namespace)",
                kind="name_clash",
            )

    def check(self, raw: Any) -> None:
        """The pipeline's keys, timeout, steps (each, then their cycles) and output."""
        if not isinstance(raw, Mapping):
            self.add(f"must be a mapping, got {type(raw).__name__}", kind="type")
            return
        self.unknown_keys(raw, PIPELINE_KEYS)
        if raw.get("timeout_s") is not None and not _number(raw["timeout_s"], integer=False):
            self.add(f"timeout_s must be a number > 0, got {raw['timeout_s']!r}", kind="number")
        steps = raw.get("steps")
        if not isinstance(steps, Mapping) or not steps:
            self.add("needs steps: a mapping of step names to steps", kind="no_steps")
            return
        self.steps = {str(s) for s in steps}
        needs = {str(s): self.check_step(str(s), spec) for s, spec in steps.items()}
        needs = self.handlers(steps, needs)
        for loop in graph.cycles(needs):
            self.add(f"steps form a cycle: {' -> '.join(loop)}", kind="cycle", cycle=loop)
        if "output" in raw:
            self.template(raw["output"], "output", step=None, item=False)

    def handlers(
        self, steps: Mapping[Any, Any], needs: dict[str, set[str]]
    ) -> dict[str, set[str]]:
        """Each ``catch: then:`` names another step of this pipeline that handles no other
        step's errors; returns the dependencies with the handlers' edges added (a handler
        needs its step; its step's dependants need the handler, whose output stands in)."""
        owner: dict[str, str] = {}
        for name, raw in steps.items():
            if not isinstance(raw, Mapping) or not isinstance(raw.get("catch"), list):
                continue
            for entry in entries(raw):
                handler = entry.get("then")
                if not isinstance(handler, str):
                    continue
                if handler not in self.steps:
                    self.add(f"catch: then: unknown step {handler!r}", kind="catch", step=name)
                elif handler == name:
                    self.add("catch: then: a step cannot handle itself", kind="catch", step=name)
                elif owner.setdefault(handler, str(name)) != name:
                    self.add(
                        f"catch: then: {handler!r} already handles step {owner[handler]!r} "
                        "(a handler handles one step)",
                        kind="catch",
                        step=name,
                    )
        out = {name: set(deps) for name, deps in needs.items()}
        for handler, name in owner.items():
            out[handler].add(name)
            for other, deps in needs.items():
                if name in deps and other != handler:
                    out[other].add(handler)
        return out

    def unknown_keys(
        self, raw: Mapping[str, Any], known: Collection[str], step: str | None = None
    ) -> None:
        """Misspelt keys would otherwise be ignored silently."""
        for key in raw:
            if key not in known:
                expected = ", ".join(sorted(known))
                self.add(
                    f"unknown key {key!r} (expected {expected})", kind="unknown_key", step=step
                )

    def check_step(self, step: str, raw: Any) -> set[str]:
        """Check one step; returns the steps it depends on (for the cycle check)."""
        if not STEP_NAME.fullmatch(step):
            self.add(
                "a step name must be lowercase letters, digits, _ and -",
                kind="step_name",
                step=step,
            )
        if not isinstance(raw, Mapping):
            self.add(f"must be a mapping, got {type(raw).__name__}", kind="type", step=step)
            return set()
        self.unknown_keys(raw, STEP_KEYS, step)
        self.check_target(step, raw)
        self.check_options(step, raw)
        fan_out = raw.get("for_each") is not None
        needs = self.template(step_input(raw), "input", step=step, item=fan_out)
        needs |= self.check_http_step(step, raw, item=fan_out)
        if raw.get("when") is not None:
            needs |= self.condition(raw["when"], step)
        if fan_out:
            needs |= self.for_each(raw["for_each"], step)
        if "default" in raw:  # rendered once the step failed: may read its own error
            needs |= self.template(raw["default"], "default", step=step, item=False, own=True)
        return needs

    def check_http_step(self, step: str, raw: Mapping[str, Any], *, item: bool) -> set[str]:
        """An http step's url, method and headers (``pipelines/http.py``), and http keys
        on any other step; returns the steps its url references."""
        for problem in check_http(raw):
            self.add(problem, kind="http", step=step)
        url = raw.get("url")
        if raw.get("kind") != "http" or not isinstance(url, str):
            return set()
        return self.template(url, "url", step=step, item=item)

    def check_target(self, step: str, raw: Mapping[str, Any]) -> None:
        """Exactly one of model:/pipeline:, naming a target of that kind; or a built-in
        ``kind:`` (callback, http) and neither."""
        given = [key for key in ("model", "pipeline") if raw.get(key) is not None]
        if "kind" in raw:
            self.check_kind(step, raw, given)
            return
        if len(given) != 1:
            which = "both" if given else "neither"
            self.add(
                f"needs exactly one of model: or pipeline: (has {which})",
                kind="both_targets" if given else "no_target",
                step=step,
            )
            return
        key = given[0]
        target = raw[key]
        if not isinstance(target, str):
            self.add(f"{key}: must be a name, got {target!r}", kind="target", step=step)
            return
        kind = self.kinds.get(target)
        if kind is None:
            self.add(
                f"{key}: unknown target {target!r}", kind="unknown_target", step=step, target=target
            )
        elif kind != key:
            self.add(
                f"{key}: {target!r} is a {kind}; write {kind}: {target}",
                kind="wrong_kind",
                step=step,
            )
        elif kind == "pipeline":
            self.nests.add(target)

    def check_kind(self, step: str, raw: Mapping[str, Any], given: list[str]) -> None:
        """``kind:`` names a built-in step kind, and such a step names no target."""
        kind = raw["kind"]
        if kind in ("model", "pipeline"):
            self.add(f"kind: {kind} is written {kind}: NAME", kind="kind", step=step)
        elif not isinstance(kind, str) or kind not in BUILTIN_KINDS:
            known = ", ".join(sorted(BUILTIN_KINDS))
            self.add(f"kind: unknown step kind {kind!r} (known: {known})", kind="kind", step=step)
        elif given:
            self.add(
                f"a {kind} step runs no model or pipeline (remove {given[0]}:)",
                kind="kind",
                step=step,
            )

    def check_options(self, step: str, raw: Mapping[str, Any]) -> None:
        """Numbers, flags and types of a step's options."""
        for key, integer in (
            ("max_concurrency", True),
            ("max_attempts", True),
            ("timeout_s", False),
        ):
            value = raw.get(key)
            if value is not None and not _number(value, integer=integer):
                wanted = "an integer >= 1" if integer else "a number > 0"
                self.add(f"{key} must be {wanted}, got {value!r}", kind="number", step=step)
        if raw.get("max_concurrency") is not None and raw.get("for_each") is None:
            self.add("max_concurrency applies only to a for_each step", kind="option", step=step)
        self.check_failure_options(step, raw)
        for problem in check_callback(raw):  # heartbeat_s, schema (freight.pipelines.callback)
            self.add(problem, kind="callback", step=step)
        if raw.get("when") is not None and not isinstance(raw["when"], str):
            self.add(f"when must be a JMESPath string, got {raw['when']!r}", kind="type", step=step)

    def check_failure_options(self, step: str, raw: Mapping[str, Any]) -> None:
        """What a failure does: ``retry:``, ``catch:`` / ``default:``, ``optional:``."""
        if not isinstance(raw.get("optional", False), bool):
            self.add(
                f"optional must be true or false, got {raw['optional']!r}", kind="type", step=step
            )
        if raw.get("retry") is not None:
            for problem in check_retry(raw["retry"]):
                self.add(problem, kind="retry", step=step)
            if raw.get("pipeline") is not None:
                self.add(
                    "retry applies to a model step (a nested pipeline's steps take their own)",
                    kind="retry",
                    step=step,
                )
            elif raw.get("max_attempts") is not None:
                self.add(
                    "max_attempts and retry.max_attempts both bound the attempts: give one",
                    kind="retry",
                    step=step,
                )
        for problem in check_catch(raw):
            self.add(problem, kind="catch", step=step)
        for problem in check_tolerate(raw):
            self.add(problem, kind="tolerate", step=step)
        if raw.get("catch") is not None and raw.get("optional"):
            self.add(
                "optional and catch both decide what a failure passes on: give one",
                kind="catch",
                step=step,
            )

    def condition(self, when: Any, step: str) -> set[str]:
        """Check a ``when:`` (evaluated once per step, so no ``item``); returns its steps."""
        if not isinstance(when, str):
            return set()  # reported by check_options
        return self.expression(when, f"when {when!r}", step=step, item=False)

    def for_each(self, value: Any, step: str) -> set[str]:
        """Check a ``for_each:`` reference (no ``item``: it defines it); returns its steps."""
        try:
            text = reference_text(value) if isinstance(value, str) else None
        except TemplateError:
            text = None
        if text is None or text.startswith("item"):
            self.add(
                f"for_each must be a reference to a list ($input… or $steps…), got {value!r}",
                kind="for_each",
                step=step,
            )
            return set()
        return self.expression(text, f"for_each {value!r}", step=step, item=False)

    def template(
        self, template: Any, where: str, *, step: str | None, item: bool, own: bool = False
    ) -> set[str]:
        """Check a template's every part; returns the steps it references (``own``: it may
        read its own step's error and status, which is no dependency)."""
        needs: set[str] = set()
        for spot in scan(template, where):
            if spot.problem is not None or spot.reference is None:
                self.add(f"{spot.where}: {spot.problem}", kind="template", step=step)
                continue
            try:
                text = reference_text(spot.reference)
            except TemplateError as exc:
                self.add(f"{spot.where}: {exc}", kind="reference", step=step)
                continue
            assert text is not None  # scan yields only references
            needs |= self.expression(
                text, f"{spot.where}: {spot.reference!r}", step=step, item=item, own=own
            )
        return needs

    def expression(
        self, text: str, where: str, *, step: str | None, item: bool, own: bool = False
    ) -> set[str]:
        """Compile one expression and check what it reads; returns the steps it reads."""
        try:
            compiled = expression(text)
        except TemplateError as exc:
            self.add(f"{where}: malformed JMESPath: {exc}", kind="syntax", step=step)
            return set()
        needs: set[str] = set()
        for path in compiled.reads:
            if own and path[:2] == ("steps", step) and path[2:3] in (("error",), ("status",)):
                continue
            problem = self.read_problem(path, step, item)
            if problem:
                self.add(f"{where}: {problem[1]}", kind=problem[0], step=step)
            elif path[0] == "steps":
                needs.add(path[1])
        return needs

    def read_problem(
        self, path: tuple[str, ...], step: str | None, item: bool
    ) -> tuple[str, str] | None:
        """``(kind, message)`` when a read field path is a fault, else None."""
        root = path[0]
        if root not in ROOTS:
            return "unknown_root", f"reads {root!r}; only input, steps and item are in scope"
        if root == "item" and not item:
            return "item_outside_for_each", "$item is defined only in the input of a for_each step"
        if root != "steps":
            return None
        if len(path) == 1:
            return "whole_steps", "must name a step (steps.NAME), not read all steps"
        name = path[1]
        if name == step:
            return "self_reference", f"step {name!r} references itself"
        if name not in self.steps:
            return "unknown_step", f"references unknown step {name!r}"
        if len(path) > 2 and path[2] not in STEP_FIELDS:
            return (
                "unknown_field",
                f"steps.{name}.{path[2]}: a step has only output, status and error",
            )
        return None
