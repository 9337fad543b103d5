"""Pipeline specs: what a checked pipeline declaration is, compiled once.

:func:`parse_pipelines` checks a ``pipelines:`` section (every fault at once, see
``validate.py``) and only then builds specs, so a spec is always runnable: its
targets exist, its references name real steps, its steps form a DAG. Templates
and conditions are compiled into the spec, so planning a run only evaluates.

Defaults (decided here, documented for users): a step without ``input`` gets the
run's whole input (``$input``), or its element if it has ``for_each`` (``$item``);
a pipeline without ``output`` outputs every step's output by step name. A step's
dependencies are the steps its ``input``, ``when`` and ``for_each`` reference,
never declared twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from freight.pipelines import graph
from freight.pipelines.callback import CallbackSpec, parse_callback
from freight.pipelines.catch import Catcher, parse_catch
from freight.pipelines.declare import as_raw
from freight.pipelines.http import DEFAULT_TIMEOUT_S, HttpStep, parse_http, template_of
from freight.pipelines.retry import DEFAULT_ON, HTTP_DEFAULT_ON, RetryPolicy, parse_retry
from freight.pipelines.template import Expression, Template, expression, reference_text
from freight.pipelines.tolerate import Tolerance, parse_tolerate
from freight.pipelines.validate import (
    BUILTIN_KINDS,
    BUILTIN_TARGETS,
    StepKind,
    Targets,
    check_pipelines,
    raise_for,
    step_input,
)


@dataclass(frozen=True, slots=True)
class StepSpec:
    """One checked step. ``needs`` are inferred from its references."""

    name: str
    target: str  # a model or pipeline; a built-in kind's row carries BUILTIN_TARGETS[kind]
    kind: StepKind
    input: Any = field(hash=False)  # the template as declared (or the default)
    when: str | None
    for_each: str | None  # a reference (``$input.photos``)
    max_concurrency: int | None  # None: as many at once as the target takes
    optional: bool
    timeout_s: float | None  # None: the target's own
    max_attempts: int | None  # None: the target's own
    needs: frozenset[str]  # the steps it references: its dependencies
    input_template: Template = field(compare=False, hash=False, repr=False)
    when_expression: Expression | None = field(compare=False, hash=False, repr=False)
    for_each_expression: Expression | None = field(compare=False, hash=False, repr=False)
    retry: RetryPolicy | None = None  # what failures run again (pipelines/retry.py)
    catch: tuple[Catcher, ...] = ()  # where a failure goes (pipelines/catch.py)
    handles: str | None = None  # the step whose errors this one handles (catch: then:)
    tolerate: Tolerance | None = None  # for_each: failed elements it survives
    http: HttpStep | None = None  # kind: http: its method and headers (pipelines/http.py)
    callback: CallbackSpec | None = None  # kind: callback: heartbeat_s, schema

    @property
    def conditional(self) -> bool:
        """Whether the step may be skipped (it has ``when:``)."""
        return self.when is not None

    @property
    def fan_out(self) -> bool:
        """Whether the step runs once per element of ``for_each``."""
        return self.for_each is not None


@dataclass(frozen=True, slots=True)
class PipelineSpec:
    """One checked pipeline: steps by name (declaration order) and their DAG."""

    name: str
    steps: Mapping[str, StepSpec] = field(hash=False)
    output: Any = field(hash=False)  # the template as declared (or the default)
    timeout_s: float | None
    order: tuple[str, ...]  # dependencies first; declaration order among equals
    dependants: Mapping[str, frozenset[str]] = field(hash=False)
    output_template: Template = field(compare=False, hash=False, repr=False)

    @property
    def nested(self) -> frozenset[str]:
        """The pipelines this one runs as steps."""
        return frozenset(s.target for s in self.steps.values() if s.kind == "pipeline")

    @property
    def output_needs(self) -> frozenset[str]:
        """The steps the output template references."""
        return self.output_template.steps


def default_output(step_names: list[str]) -> dict[str, str]:
    """Every step's output by name: what a pipeline without ``output:`` returns."""
    return {name: f'$steps."{name}".output' for name in step_names}


def build_step(name: str, raw: Mapping[str, Any]) -> StepSpec:
    """A spec from a step that passed the checks (unchecked input raises anything)."""
    kind: StepKind
    if raw.get("kind") in BUILTIN_KINDS:
        kind = raw["kind"]
        target = BUILTIN_TARGETS[kind]
    else:
        kind = "model" if raw.get("model") is not None else "pipeline"
        target = raw[kind]
    template = Template(step_input(raw))
    http = parse_http(raw)
    if http is not None:  # its URL renders with its body (pipelines/http.py)
        template = Template(template_of(http, step_input(raw)))
    when = raw.get("when")
    for_each = raw.get("for_each")
    when_expression = expression(when) if when is not None else None
    for_each_text = reference_text(for_each) if for_each is not None else None
    for_each_expression = expression(for_each_text) if for_each_text is not None else None
    needs = set(template.steps)
    for extra in (when_expression, for_each_expression):
        if extra is not None:
            needs |= extra.steps
    catchers = parse_catch(raw)
    for catcher in catchers:  # a default may read other steps (its own error is no need)
        if catcher.default_template is not None:
            needs |= catcher.default_template.steps - {name}
    return StepSpec(
        name=name,
        target=target,
        kind=kind,
        input=step_input(raw),
        when=when,
        for_each=for_each,
        max_concurrency=raw.get("max_concurrency"),
        optional=bool(raw.get("optional", False)),
        timeout_s=raw.get("timeout_s") or (DEFAULT_TIMEOUT_S if http is not None else None),
        max_attempts=raw.get("max_attempts"),
        needs=frozenset(needs),
        retry=parse_retry(
            raw.get("retry"), default_on=DEFAULT_ON if http is None else HTTP_DEFAULT_ON
        ),
        catch=catchers,
        tolerate=parse_tolerate(raw),
        http=http,
        callback=parse_callback(raw),
        input_template=template,
        when_expression=when_expression,
        for_each_expression=for_each_expression,
    )


def build_pipeline(name: str, raw: Mapping[str, Any]) -> PipelineSpec:
    """A spec from a pipeline that passed the checks."""
    steps = _with_handlers(
        {str(s): build_step(str(s), spec) for s, spec in raw["steps"].items()}
    )
    needs = {s: spec.needs for s, spec in steps.items()}
    output = raw.get("output", default_output(list(steps)))
    return PipelineSpec(
        name=name,
        steps=MappingProxyType(steps),
        output=output,
        timeout_s=raw.get("timeout_s"),
        order=graph.topological(needs),
        dependants=MappingProxyType(graph.dependants(needs)),
        output_template=Template(output),
    )


def _with_handlers(steps: dict[str, StepSpec]) -> dict[str, StepSpec]:
    """The handlers' edges (``catch: then:``) added to the steps' needs: a handler needs
    the step it handles, whose dependants need the handler (its output stands in)."""
    owner = {c.then: s.name for s in steps.values() for c in s.catch if c.then is not None}
    if not owner:
        return steps
    out = dict(steps)
    for handler, name in owner.items():
        spec = out[handler]
        out[handler] = replace(spec, needs=spec.needs | {name}, handles=name)
    for other, spec in list(out.items()):
        extra = {h for h, name in owner.items() if name in spec.needs and h != other}
        if extra:
            out[other] = replace(spec, needs=spec.needs | extra)
    return out


def parse_pipelines(raw: Mapping[str, Any], *, targets: Targets) -> dict[str, PipelineSpec]:
    """Check a ``pipelines:`` section and build its specs; raises one
    PipelineDefinitionError listing every fault. Values may be dicts (``freight.yaml``)
    or :class:`freight.Pipeline` declarations. ``targets``: the runnable names and their
    kinds, or just the model names (the pipelines declared here are added)."""
    raise_for(check_pipelines(raw, targets=targets))
    return {name: build_pipeline(name, as_raw(value)) for name, value in raw.items()}
