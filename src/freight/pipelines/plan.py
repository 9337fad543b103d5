"""What a pipeline run does next, decided purely from its spec and its steps' states.

The durable layer stores one row per step (status, output, error, and the count
of unfinished dependencies) and, in the transaction that records a step's end,
calls :func:`plan` and applies the :class:`Decision`: create the predictions to
start, mark skipped / completed / failed steps, cancel the ones listed, and
finish the run with the outcome. Nothing here reads a clock or a store, so the
same states always give the same decision and a replayed call is harmless.

Semantics, decided here:

* a step is ready when every step it references has finished (succeeded,
  skipped, failed-but-optional); it then starts, or is skipped when its ``when``
  is false. A skipped dependency does not skip its dependants: they see null
  (their own ``when`` can say otherwise, e.g. ``steps.a.status == 'succeeded'``);
* an optional step's failure resolves to a null output; a caught step's failure
  (``catch:``/``default:``, see ``catch.py``) to its default or its handler's
  output, the handler run only then; any other step's failure (or cancellation)
  fails the run with that step's error, and every unfinished step is canceled;
* ``for_each`` over null or ``[]`` completes at once with output ``[]``; over
  anything else that is no list, the step fails (``input_error``), as it does
  when its input, condition or list cannot be evaluated;
* ``when`` is evaluated once per step, before any fan-out (so it cannot read
  ``item``); a for_each step's elements are started and gathered by the durable
  layer (:func:`next_elements`, :func:`fan_in`);
* decisions cascade within one call: a skip can make dependants ready, which
  are decided in the same call (steps are visited dependencies first).

The per-step count of unfinished dependencies (:func:`unfinished_counts`,
:func:`unblock`) lets the durable layer skip planning when a step's end readies
nothing: decrement the dependants of every step that finishes (including those
a decision skips, completes or fails) and call :func:`plan` when one reaches
zero, when a required step failed, or when no step is left unfinished. Planning
with the full states alone is also correct; the counts only save loading outputs.

:func:`mermaid` draws the DAG for ``freight pipelines NAME --graph``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from freight.pipelines.catch import Catcher, catcher_for
from freight.pipelines.spec import PipelineSpec, StepSpec
from freight.pipelines.template import TemplateError, truthy
from freight.pipelines.tolerate import Tolerance, marker
from freight.pipelines.validate import StepKind
from freight.prediction import ErrorCode, Status


class StepStatus(enum.StrEnum):
    """A step row's status. Only ``pending`` steps are ever started."""

    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELED = "canceled"

    @property
    def finished(self) -> bool:
        """Finished steps never change again (and release their dependants)."""
        return self in FINISHED


FINISHED = frozenset(
    {StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELED}
)
_BROKEN = frozenset({StepStatus.FAILED, StepStatus.CANCELED})
#: the most elements one for_each step may fan out to: each is a row of the queue, and
#: its run's output gathers all of them (measured: 10,000 elements advance in ~1 s)
MAX_FOR_EACH_ITEMS = 100_000
BROKEN = _BROKEN  # the statuses that end a for_each step (and its run, unless optional)


def step_status(status: Status) -> StepStatus:
    """A step's status from its prediction's (an expired prediction is a failed step)."""
    if status is Status.EXPIRED:
        return StepStatus.FAILED
    if status is Status.AWAITING_INPUT:
        return StepStatus.QUEUED
    return StepStatus(status.value)


@dataclass(frozen=True, slots=True)
class StepError:
    """Why a step (or the run) failed: a stable code (see ``ErrorCode``) and a message."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class StepState:
    """What the durable layer knows of one step: status, and output/error once finished."""

    status: StepStatus = StepStatus.PENDING
    output: Any = None  # for a for_each step: the list of element outputs, in order
    error: StepError | None = None


PENDING = StepState()


@dataclass(frozen=True, slots=True)
class Start:
    """Start a step: one prediction (``input``), or one per element (``inputs``)."""

    step: str
    target: str
    kind: StepKind
    input: Any = None
    inputs: list[Any] | None = None  # for_each: one rendered input per element, in order


@dataclass(frozen=True, slots=True)
class Outcome:
    """How the run ended: succeeded with its output, or failed/canceled with an error."""

    status: Status
    output: Any = None
    error: StepError | None = None
    failed_step: str | None = None  # the required step whose failure failed the run


@dataclass(frozen=True, slots=True)
class Decision:
    """Everything to do now, applied in one transaction (lists are dependency-ordered)."""

    start: tuple[Start, ...] = ()
    skip: tuple[str, ...] = ()
    complete: Mapping[str, Any] = field(default_factory=dict)  # finished at once: output
    fail: Mapping[str, StepError] = field(default_factory=dict)  # could not even start
    cancel: tuple[str, ...] = ()  # unfinished steps of a run that has ended
    outcome: Outcome | None = None  # None: the run goes on

    @property
    def finished(self) -> bool:
        """Whether the run ends with this decision."""
        return self.outcome is not None


def initial_states(spec: PipelineSpec) -> dict[str, StepState]:
    """A new run: every step pending."""
    return dict.fromkeys(spec.order, PENDING)


def unfinished_counts(spec: PipelineSpec) -> dict[str, int]:
    """Per step, how many of its dependencies have not finished: at the start, its
    in-degree (store it per step row; a step is ready when it reaches zero)."""
    return {name: len(spec.steps[name].needs) for name in spec.order}


def unblock(
    spec: PipelineSpec, finished: str, counts: Mapping[str, int]
) -> tuple[dict[str, int], list[str]]:
    """The counts after ``finished`` ends, and the dependants that became ready (their
    count reached zero), in dependency order. Call it once per finished step."""
    new = dict(counts)
    ready: list[str] = []
    users = spec.dependants[finished]
    for name in spec.order:
        if name in users:
            new[name] -= 1
            if new[name] == 0:
                ready.append(name)
    return new, ready


def context(spec: PipelineSpec, run_input: Any, states: Mapping[str, StepState]) -> dict[str, Any]:
    """The value references are evaluated over: ``{"input", "steps": {name: {"output",
    "status", "error"}}}``; a step's output is null unless it succeeded (or failed and
    was caught: :class:`_Pass` puts its stand-in there)."""
    steps = {name: _view(states.get(name, PENDING)) for name in spec.order}
    return {"input": run_input, "steps": steps}


def _view(state: StepState) -> dict[str, Any]:
    output = state.output if state.status is StepStatus.SUCCEEDED else None
    error = state.error
    shown = {"code": error.code, "message": error.message} if error is not None else None
    return {"output": output, "status": state.status.value, "error": shown}


class _Pass:
    """One dependency-ordered pass over a run's steps, collecting the decisions."""

    def __init__(self, spec: PipelineSpec, run_input: Any, states: Mapping[str, StepState]) -> None:
        self.spec = spec
        self.states = {name: states.get(name, PENDING) for name in spec.order}
        self.context = context(spec, run_input, self.states)
        self.start: list[Start] = []
        self.skip: list[str] = []
        self.complete: dict[str, Any] = {}
        self.fail: dict[str, StepError] = {}
        self.uncaught: set[str] = set()  # caught, but their default failed to render
        for name in spec.order:
            if self.states[name].status is StepStatus.FAILED and spec.steps[name].catch:
                self.stand_in(name)

    def ready(self, step: StepSpec) -> bool:
        """Pending, with every dependency finished (a failed one is caught or optional,
        else the run has ended)."""
        if self.states[step.name].status is not StepStatus.PENDING:
            return False
        return all(self.states[dep].status.finished for dep in step.needs)

    def set(self, name: str, state: StepState) -> None:
        """Record a step's new state where later steps of this pass will read it."""
        self.states[name] = state
        self.context["steps"][name] = _view(state)
        step = self.spec.steps[name]
        if state.status is StepStatus.FAILED and step.catch:
            self.stand_in(name)
        if step.handles is not None and self.caught(step.handles) is not None:
            self.stand_in(step.handles)  # the handler's output stands in for its step's

    def caught(self, name: str) -> Catcher | None:
        """The catch entry that takes this step's failure, if it failed and one does."""
        state = self.states[name]
        if state.status is not StepStatus.FAILED or name in self.uncaught:
            return None
        code = state.error.code if state.error is not None else ErrorCode.MODEL_ERROR
        return catcher_for(self.spec.steps[name].catch, code)

    def stand_in(self, name: str) -> None:
        """A caught step's output as its dependants read it: its handler's output (null
        until the handler succeeds), or its default rendered (it may read the error).
        A default that cannot be rendered leaves the step uncaught: the run fails."""
        catcher = self.caught(name)
        if catcher is None:
            return
        view = self.context["steps"][name]
        if catcher.then is not None:
            handler = self.states[catcher.then]
            ok = handler.status is StepStatus.SUCCEEDED
            view["output"] = handler.output if ok else None
            return
        assert catcher.default_template is not None
        try:
            view["output"] = catcher.default_template.render(self.context)
        except TemplateError as exc:
            error = self.states[name].error
            message = f"{error.message if error else 'it failed'}; and its default: {exc}"
            self.uncaught.add(name)
            self.states[name] = StepState(
                StepStatus.FAILED, error=StepError(ErrorCode.OUTPUT_ERROR, message)
            )
            self.context["steps"][name] = _view(self.states[name])

    def ends_run(self, name: str) -> bool:
        """Whether this step's state ends the run: failed or canceled, neither optional
        nor caught."""
        if self.states[name].status not in _BROKEN or self.spec.steps[name].optional:
            return False
        return self.caught(name) is None

    def decide(self, step: StepSpec) -> None:
        """Skip, complete, fail or start one ready step (and record its new state)."""
        try:
            start = self.evaluate(step)
        except TemplateError as exc:
            error = StepError(ErrorCode.INPUT_ERROR, str(exc))  # the text is in it
            self.fail[step.name] = error
            self.set(step.name, StepState(StepStatus.FAILED, error=error))
            return
        if start is not None and len(start.inputs or ()) > MAX_FOR_EACH_ITEMS:
            assert start.inputs is not None
            error = StepError(
                ErrorCode.TOO_MANY_ITEMS,
                f"for_each gave {len(start.inputs)} items; a step takes at most "
                f"{MAX_FOR_EACH_ITEMS}",
            )
            self.fail[step.name] = error
            self.set(step.name, StepState(StepStatus.FAILED, error=error))
            return
        if start is None:
            self.skip.append(step.name)
            self.set(step.name, StepState(StepStatus.SKIPPED))
        elif start.inputs == []:
            self.complete[step.name] = []
            self.set(step.name, StepState(StepStatus.SUCCEEDED, output=[]))
        else:
            self.start.append(start)
            self.set(step.name, StepState(StepStatus.QUEUED))

    def evaluate(self, step: StepSpec) -> Start | None:
        """The step's Start (rendered input), or None when its condition is false (or it
        is a handler whose step handed it no error)."""
        if step.handles is not None:
            catcher = self.caught(step.handles)
            if catcher is None or catcher.then != step.name:
                return None
        if step.when_expression is not None and not truthy(
            step.when_expression.search(self.context)
        ):
            return None
        if step.for_each_expression is None:
            rendered = step.input_template.render(self.context)
            return Start(step.name, step.target, step.kind, input=rendered)
        items = step.for_each_expression.search(self.context)
        if items is None:
            items = []
        if not isinstance(items, list):
            kind = type(items).__name__
            raise TemplateError(f"for_each {step.for_each!r} gave a {kind}, not a list")
        inputs = [step.input_template.render({**self.context, "item": it}) for it in items]
        return Start(step.name, step.target, step.kind, inputs=inputs)

    def broken(self) -> str | None:
        """The first step whose failure (or cancellation) ends the run, if any."""
        return next((name for name in self.spec.order if self.ends_run(name)), None)

    def decision(self, outcome: Outcome | None, cancel: tuple[str, ...] = ()) -> Decision:
        """The decision; once the run is over, nothing more starts."""
        start = () if outcome is not None else tuple(self.start)
        return Decision(
            start=start,
            skip=tuple(self.skip),
            complete=self.complete,
            fail=self.fail,
            cancel=cancel,
            outcome=outcome,
        )


def plan(spec: PipelineSpec, run_input: Any, states: Mapping[str, StepState]) -> Decision:
    """What to do now, given every step's state (a missing step counts as pending)."""
    run = _Pass(spec, run_input, states)
    broken = run.broken()
    if broken is None:
        for name in spec.order:
            step = spec.steps[name]
            if run.ready(step):
                run.decide(step)
                if name in run.fail and run.ends_run(name):
                    broken = name
                    break
    if broken is not None:
        # steps decided to start in this pass are dropped, and canceled with the rest
        cancel = tuple(n for n in spec.order if not run.states[n].status.finished)
        return run.decision(_failure(spec, broken, run.states[broken]), cancel)
    if all(run.states[n].status.finished for n in spec.order):
        return run.decision(_success(spec, run.context))
    return run.decision(None)


def _failure(spec: PipelineSpec, name: str, state: StepState) -> Outcome:
    step = spec.steps[name]
    canceled = state.status is StepStatus.CANCELED
    default = ErrorCode.CANCELED if canceled else ErrorCode.MODEL_ERROR
    error = state.error or StepError(default, "no error was recorded")
    verb = "was canceled" if canceled else "failed"
    message = f"step {name!r} ({step.kind} {step.target}) {verb}: {error.message}"
    return Outcome(Status.FAILED, error=StepError(error.code, message), failed_step=name)


def _success(spec: PipelineSpec, ctx: Mapping[str, Any]) -> Outcome:
    try:
        output = spec.output_template.render(ctx)
    except TemplateError as exc:
        error = StepError(ErrorCode.OUTPUT_ERROR, f"pipeline {spec.name!r}: output: {exc}")
        return Outcome(Status.FAILED, error=error)
    return Outcome(Status.SUCCEEDED, output=output)


def abort(
    spec: PipelineSpec,
    states: Mapping[str, StepState],
    error: StepError,
    *,
    status: Status = Status.FAILED,
) -> Decision:
    """End a run from outside (its timeout, a user's cancel): cancel every unfinished
    step and end with ``status`` (FAILED with code ``timeout``, or CANCELED)."""
    cancel = tuple(n for n in spec.order if not states.get(n, PENDING).status.finished)
    return Decision(cancel=cancel, outcome=Outcome(status, error=error))


def fan_in(elements: Sequence[StepState], tolerance: Tolerance | None = None) -> StepState:
    """A for_each step's state from its elements': failed with the first failed
    element's error (cancel the rest) once more failed than ``tolerance`` lets
    (none without one), succeeded with the outputs in element order once all
    finished (a tolerated failure's place marked: ``tolerate.marker``), else running."""
    broken = [i for i, e in enumerate(elements) if e.status in _BROKEN]
    if broken and (tolerance is None or not tolerance.allows(len(broken), len(elements))):
        index = broken[0]
        error = elements[index].error or StepError(ErrorCode.MODEL_ERROR, "no error was recorded")
        message = f"element {index}: {error.message}"
        if tolerance is not None:
            message = tolerance.exceeded(len(broken), len(elements)) + message
        return StepState(StepStatus.FAILED, error=StepError(error.code, message))
    if all(e.status.finished for e in elements):
        return StepState(StepStatus.SUCCEEDED, output=[_gathered(e) for e in elements])
    return StepState(StepStatus.RUNNING)


def _gathered(element: StepState) -> Any:
    if element.status not in _BROKEN:
        return element.output
    error = element.error or StepError(ErrorCode.MODEL_ERROR, "no error was recorded")
    return marker(error.code, error.message)


def next_elements(
    elements: Sequence[StepStatus], max_concurrency: int | None, tolerated: bool = False
) -> list[int]:
    """Indexes of the pending elements to start now, keeping at most ``max_concurrency``
    in flight (None: all of them); none once an element failed (unless ``tolerated``)."""
    if not tolerated and any(s in _BROKEN for s in elements):
        return []
    flight = sum(s in (StepStatus.QUEUED, StepStatus.RUNNING) for s in elements)
    room = len(elements) if max_concurrency is None else max(0, max_concurrency - flight)
    pending = [i for i, s in enumerate(elements) if s is StepStatus.PENDING]
    return pending[:room]


# -- the DAG as Mermaid (``freight pipelines NAME --graph``) ------------------------
# Mermaid renders in GitHub, GitLab and most docs tools, so a pasted graph reads
# without installing anything. Node ids are s0, s1, … (step names may hold
# characters Mermaid ids may not); labels carry the names. A model step is a box,
# a nested pipeline a subroutine box, an http step a parallelogram (a call out of
# freight), a conditional step a hexagon with dashed incoming edges; for_each and
# optional steps say so in their label.

_ESCAPES = {"&": "#amp;", '"': "#quot;", "<": "#lt;", ">": "#gt;"}


def _label(text: str) -> str:
    return "".join(_ESCAPES.get(ch, ch) for ch in text)


def _node(node_id: str, step: StepSpec) -> str:
    lines = [step.name, f"{step.kind}: {step.target}"]
    if step.http is not None:  # what it calls, rather than its rows' target
        lines[1] = f"http: {step.http.method} {step.http.url}"
    if step.callback is not None:  # what it waits for, and how long
        lines[1] = "callback: waits for an answer"
        lines.append(_waits(step))
    if step.for_each is not None:
        lines.append(f"for each {step.for_each}")
    if step.when is not None:
        lines.append(f"when {step.when}")
    if step.optional:
        lines.append("optional")
    if step.retry is not None:
        on = ", ".join(sorted(step.retry.on))
        lines.append(f"retry {on} x{step.retry.max_attempts}")
    for catcher in step.catch:
        on = ", ".join(sorted(catcher.on)) if catcher.on is not None else "any error"
        then = f"-> {catcher.then}" if catcher.then is not None else "default"
        lines.append(f"catch {on} {then}")
    label = "<br/>".join(_label(line) for line in lines)
    if step.when is not None:
        return f'    {node_id}{{{{"{label}"}}}}'
    if step.kind == "pipeline":
        return f'    {node_id}[["{label}"]]'
    if step.kind == "http":
        return f'    {node_id}[/"{label}"/]'
    if step.kind == "callback":  # a flag: it waits for the outside
        return f'    {node_id}>"{label}"]'
    return f'    {node_id}["{label}"]'


def _waits(step: StepSpec) -> str:
    """A callback step's bounds: its timeout (the run's when it gives none), heartbeat."""
    bounds = [f"timeout {step.timeout_s:g}s" if step.timeout_s else "timeout: the run's"]
    if step.callback is not None and step.callback.heartbeat_s is not None:
        bounds.append(f"heartbeat {step.callback.heartbeat_s:g}s")
    return ", ".join(bounds)


def _reads_input(step: StepSpec) -> bool:
    roots = set(step.input_template.roots)
    for extra in (step.when_expression, step.for_each_expression):
        if extra is not None:
            roots |= extra.roots
    return "input" in roots


def mermaid(spec: PipelineSpec) -> str:
    """The DAG as a Mermaid ``graph TD`` (steps in dependency order)."""
    ids = {name: f"s{i}" for i, name in enumerate(spec.order)}
    lines = ["graph TD", '    input(["input"])']
    lines += [_node(ids[name], spec.steps[name]) for name in spec.order]
    lines.append('    output(["output"])')
    for name in spec.order:
        step = spec.steps[name]
        arrow = "-.->" if step.when is not None else "-->"
        if _reads_input(step):
            lines.append(f"    input {arrow} {ids[name]}")
        lines += [
            f"    {ids[dep]} {arrow} {ids[name]}"
            for dep in spec.order
            if dep in step.needs and dep != step.handles  # that edge is drawn as its catch
        ]
    lines += [
        f"    {ids[name]} -. catch .-> {ids[c.then]}"
        for name in spec.order
        for c in spec.steps[name].catch
        if c.then is not None
    ]
    lines += [f"    {ids[name]} --> output" for name in spec.order if name in spec.output_needs]
    if "input" in spec.output_template.roots:
        lines.append("    input --> output")
    return "\n".join(lines) + "\n"
