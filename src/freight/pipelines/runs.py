"""Pipeline runs as rows: what one advancement of a run writes, decided purely.

A run is a prediction row of kind ``pipeline``; each of its steps is a row that
carries the run's id (``run_id``) and the step's name (``step``). A ``for_each``
step has one gathering row (kind ``for_each``) and one row per element
(``item_index``); a nested pipeline step is itself a run row whose steps carry
*its* id. Every row is created ``pending`` with the run and holds its count of
unfinished dependencies (``waiting_on``).

The store calls :func:`advance` inside the transaction that changed a row of a
run (a step completed, failed, expired or was canceled; the run was created,
got its input, timed out or was canceled) and writes back what it returns, so a
step's end, the queueing of the steps it unblocks and the run's outcome commit
together: kill the process at any moment and the run resumes from its rows.
:func:`advance` decides from the run's step *heads* only; a for_each step's
gathering row counts its unfinished elements (``waiting_on``), so an element's
end costs O(1), and the elements are read once, to gather them (it asks its
store for them by yielding :class:`Elements`). Replaying it changes nothing.

A run advances by the definition it started with: the run row keeps a
:class:`Bundle` (its pipeline, the pipelines it nests, and the defaults of the
models it calls) as JSON, so a changed ``freight.yaml`` never re-plans a run in
flight.

Outputs pass by reference: a step output (or run input) that is not small JSON
reads as ``{"object": "freight://<key>", "content_type": …, "bytes": …}`` in
templates (a :class:`~freight.pipelines.refs.Stored`, which only freight makes); a
step whose whole input is such a reference gets the object itself as its input
(its key), never a copy through the database.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import orjson

from freight.media import JSON
from freight.pipelines import callback
from freight.pipelines.http import request_fields
from freight.pipelines.plan import (
    BROKEN,
    MAX_FOR_EACH_ITEMS,
    Decision,
    StepError,
    StepState,
    StepStatus,
    fan_in,
    next_elements,
    plan,
    step_status,
)
from freight.pipelines.refs import Stored, refs_of, refs_text, restore
from freight.pipelines.retry import RetryPolicy
from freight.pipelines.spec import PipelineSpec, StepSpec, build_pipeline
from freight.prediction import ErrorCode, Kind, Prediction, Status

RUN = Kind.PIPELINE
FOR_EACH = Kind.FOR_EACH
#: what a failed attempt leaves behind when its step waits again (a callback's retry)
_AGAIN: dict[str, Any] = {
    "finished_at": None,
    "error_code": None,
    "error_message": None,
    "error_detail": None,
    "output_json": None,
    "output_key": None,
    "output_content_type": None,
    "output_bytes": None,
}
#: the kinds of step a ``retry:`` runs again (pipelines/retry.py)
_RETRIED = frozenset({Kind.MODEL, Kind.HTTP, Kind.CALLBACK})


@dataclass(frozen=True, slots=True)
class Bundle:
    """Everything a run needs to advance, stored on its row."""

    pipelines: dict[str, Any]  # name -> raw definition (checked at start-up)
    targets: dict[str, str]  # name -> "model" | "pipeline"
    models: dict[str, dict[str, float | int | None]]  # name -> timeout_s, max_attempts

    def dumps(self) -> str:
        return orjson.dumps(dataclasses.asdict(self), option=orjson.OPT_SORT_KEYS).decode()


@lru_cache(maxsize=256)
def bundle_of(text: str) -> Bundle:
    """A run's stored definition, parsed once per text."""
    return Bundle(**orjson.loads(text))


@lru_cache(maxsize=256)
def _spec(text: str, name: str) -> PipelineSpec:
    """Specs parsed once per (definition, pipeline): advancing a run only evaluates."""
    return build_pipeline(name, bundle_of(text).pipelines[name])


def spec_of(run: Prediction) -> PipelineSpec:
    assert run.definition is not None, f"run {run.id} has no definition"
    return _spec(run.definition, run.target)


@dataclass
class Changes:
    """What one advancement writes, and whom to tell once it committed.

    ``updated`` rows are written back (the columns that differ from ``read``, the row
    as it was read), each guarded by the status it had when read (``was``): a row that
    changed meanwhile is not overwritten. Cancels are guarded by "not terminal" only,
    so they also stop a step claimed meanwhile."""

    updated: dict[str, Prediction] = field(default_factory=dict)
    was: dict[str, Status] = field(default_factory=dict)  # id -> status when read
    read: dict[str, Prediction] = field(default_factory=dict)  # id -> the row as read
    inserted: list[Prediction] = field(default_factory=list)
    canceled: dict[str, str] = field(default_factory=dict)  # id -> message, unless terminal
    cancel_elements: list[tuple[str, str]] = field(default_factory=list)  # (step, message)
    cancel_rest: str | None = None  # the run ended: cancel every unfinished row of it
    queued: set[str] = field(default_factory=set)  # targets with new queued work
    finished: list[str] = field(default_factory=list)  # ids that became terminal
    ended: list[Prediction] = field(default_factory=list)  # rows of runs that ended
    again: list[str] = field(default_factory=list)  # runs to advance next
    waits: list[Prediction] = field(default_factory=list)  # callback steps that began a wait


# -- creating rows ------------------------------------------------------------------


def step_rows(
    spec: PipelineSpec, run: Prediction, bundle: Bundle, new_id: Callable[[], str]
) -> list[Prediction]:
    """A new run's steps: one pending row each, holding its dependency count."""
    return [
        _new_row(spec.steps[name], run, bundle, new_id(), len(spec.steps[name].needs))
        for name in spec.order
    ]


def _new_row(
    step: StepSpec,
    run: Prediction,
    bundle: Bundle,
    row_id: str,
    waiting_on: int,
    item_index: int | None = None,
) -> Prediction:
    gathering = step.fan_out and item_index is None  # the row that gathers the elements
    defaults = bundle.models.get(step.target, {})
    timeout = step.timeout_s or defaults.get("timeout_s") or run.timeout_s
    return Prediction(
        id=row_id,
        target=step.target,
        status=Status.PENDING,
        created_at=run.created_at,
        kind=FOR_EACH if gathering else Kind(step.kind),
        priority=run.priority,
        max_attempts=int(
            step.retry.max_attempts
            if step.retry is not None
            else step.max_attempts or defaults.get("max_attempts") or run.max_attempts
        ),
        timeout_s=float(min(timeout, run.timeout_s)),
        expires_at=run.expires_at,
        run_id=run.id,
        step=step.name,
        item_index=item_index,
        waiting_on=waiting_on,
        definition=run.definition if step.kind == RUN else None,
        tenant=run.tenant,
        trace_context=run.trace_context,  # one trace per run, a span per step
    )


# -- reading rows -------------------------------------------------------------------


def value_of_input(row: Prediction) -> Any:
    if row.input_json is not None:
        return orjson.loads(row.input_json)
    return _reference(row.input_key, row.input_content_type, row.input_bytes)


def value_of_output(row: Prediction) -> Any:
    if row.output_json is not None:
        value = orjson.loads(row.output_json)
        return restore(value, refs_of(row.output_refs)) if row.output_refs else value
    return _reference(row.output_key, row.output_content_type, row.output_bytes)


def _reference(key: str | None, content_type: str | None, size: int | None) -> Any:
    return None if key is None else Stored.of(key, content_type, size)


def state_of(row: Prediction) -> StepState:
    status = step_status(row.status)
    if status is StepStatus.SUCCEEDED:
        return StepState(status, output=value_of_output(row))
    if status in (StepStatus.FAILED, StepStatus.CANCELED):
        code = row.error_code or ErrorCode.MODEL_ERROR
        return StepState(status, error=StepError(code, row.error_message or str(row.status)))
    return StepState(status)


# -- advancing ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Elements:
    """What an advancement asks its store for: the element rows of a for_each step,
    in element order (only the first ``limit`` pending ones when ``pending``)."""

    step: str
    pending: bool = False
    limit: int | None = None


#: an advancement: yields what it must read, receives the rows, returns its writes
Advancing = Generator[Elements, list[Prediction], "Changes"]


class _Advance:
    """One advancement of one run over its step heads (the rows of its steps, and of
    its for_each steps' gathering rows; never all of their elements)."""

    def __init__(
        self, run: Prediction, heads: Iterable[Prediction], now: float, new_id: Callable[[], str]
    ) -> None:
        self.run = run
        self.now = now
        self.new_id = new_id
        self.changes = Changes()
        self.heads = {row.step: row for row in heads if row.step is not None}

    @property
    def bundle(self) -> Bundle:
        assert self.run.definition is not None
        return bundle_of(self.run.definition)

    def current(self, row: Prediction) -> Prediction:
        return self.changes.updated.get(row.id, row)

    # writing ------------------------------------------------------------------
    def write(self, row: Prediction, **fields: Any) -> Prediction:
        before = self.current(row)
        self.changes.was.setdefault(row.id, row.status)
        self.changes.read.setdefault(row.id, row)
        after = dataclasses.replace(before, **fields)
        self.changes.updated[row.id] = after
        if after.status.terminal and not before.status.terminal:
            self.changes.finished.append(after.id)
            if after.run_id is not None and after.run_id != self.run.id:
                self.changes.ended.append(after)  # this run, nested in its parent
            if after.kind == RUN and after.run_id is not None:
                self.changes.again.append(after.run_id)  # a nested run ended: its parent
        return after

    def finish(self, row: Prediction, status: Status, **fields: Any) -> None:
        fields.setdefault("lease_expires_at", None)
        self.write(row, status=status, finished_at=self.now, waiting_on=0, **fields)

    def cancel(self, row: Prediction, message: str) -> None:
        """Cancel a step head, and (in the store, in one statement) what is left of its
        elements or, for a nested run, of its own rows."""
        if self.current(row).status.terminal:
            return
        self.changes.canceled[row.id] = message
        if row.kind == FOR_EACH:
            self.changes.cancel_elements.append((row.step or "", message))

    def start(self, row: Prediction, value: Any, fields: dict[str, Any] | None = None) -> None:
        """Queue a model step (its input rendered, or by reference); start a nested run.
        ``fields``: the row's input fields when not ``value`` alone (an http step's)."""
        fields = _input_fields(value) if fields is None else fields
        if row.kind == RUN:
            started = self.write(
                row,
                status=Status.RUNNING,
                started_at=self.now,
                waiting_on=0,
                lease_expires_at=self.now + row.timeout_s,
                **fields,
            )
            self.changes.inserted += self.children(started)
            return
        if row.kind == Kind.CALLBACK:
            self.wait(row, **fields)
            return
        self.write(row, status=Status.QUEUED, queued_at=self.now, waiting_on=0, **fields)
        self.changes.queued.add(row.target)

    def wait(self, row: Prediction, **fields: Any) -> None:
        """A callback step begins a wait (:mod:`freight.pipelines.callback`): running at
        once, claimed by no worker, one more attempt (its token's), its deadline as its
        lease; announced to the run's subscribers by the store (``Changes.waits``)."""
        step = _spec(self.run.definition or "", self.run.target).steps.get(row.step or "")
        beat = step.callback.heartbeat_s if step is not None and step.callback else None
        waiting = self.write(
            row,
            status=Status.RUNNING,
            queued_at=self.now,
            started_at=self.now,
            attempts=self.current(row).attempts + 1,
            waiting_on=0,
            lease_expires_at=callback.deadline(self.now, row.timeout_s, beat, self.now),
            **fields,
        )
        self.changes.waits.append(waiting)

    def start_new(self, row: Prediction) -> Prediction:
        """Start an element created in this same advancement (not yet a stored row)."""
        if row.kind == RUN:
            started = dataclasses.replace(
                row,
                status=Status.RUNNING,
                started_at=self.now,
                lease_expires_at=self.now + row.timeout_s,
            )
            self.changes.inserted += self.children(started)
            return started
        self.changes.queued.add(row.target)
        return dataclasses.replace(row, status=Status.QUEUED, queued_at=self.now)

    def children(self, nested: Prediction) -> list[Prediction]:
        """The step rows of a nested run just started (advanced next, in turn)."""
        self.changes.again.append(nested.id)
        spec = _spec(self.run.definition or "", nested.target)
        return step_rows(spec, nested, self.bundle, self.new_id)

    # deciding -----------------------------------------------------------------
    def retry(self, spec: PipelineSpec) -> None:
        """Queue again each model step that just failed with a code its ``retry:`` covers
        and attempts left (:mod:`freight.pipelines.retry`): held back by its delay, the
        failed attempt kept in its ``attempt_history``; the run goes on. A callback step
        waits again at once, under a new token (nothing runs: nothing to back off from)."""
        for name, head in self.heads.items():
            step = spec.steps.get(name)
            row = self.current(head)
            policy = step.retry if step is not None else None
            if policy is None or row.kind not in _RETRIED or row.status != Status.FAILED:
                continue
            self.again(row, policy)

    def again(self, row: Prediction, policy: RetryPolicy) -> bool:
        """Run a failed step (or for_each element) again if ``policy`` covers its error and
        attempts are left; whether it does."""
        if not policy.covers(row.error_code) or row.attempts >= policy.max_attempts:
            return False
        ended = row.finished_at if row.finished_at is not None else self.now
        history = (
            f"{row.attempts},{row.started_at or 0},{ended},{row.worker_id or ''},"
            f"{row.error_code};"
        )
        if row.kind == Kind.CALLBACK:
            self.write(row, **_AGAIN, attempt_history=(row.attempt_history or "") + history)
            self.wait(row)
            return True
        self.write(
            row,
            status=Status.QUEUED,
            queued_at=self.now,
            not_before=self.now + policy.delay_s(row.attempts, row.id),
            finished_at=None,
            error_code=None,
            error_message=None,
            error_detail=None,
            batch_size=None,
            worker_id=None,
            lease_expires_at=None,
            attempt_history=(row.attempt_history or "") + history,
        )
        self.changes.queued.add(row.target)
        return True

    def states(
        self, spec: PipelineSpec, ended: dict[str, list[Prediction]]
    ) -> Generator[Elements, list[Prediction], dict[str, StepState]]:
        states: dict[str, StepState] = {}
        for name in spec.order:
            head = self.heads.get(name)
            if head is None:
                continue
            if head.kind == FOR_EACH and head.status == Status.RUNNING and name in ended:
                yield from self.gather(spec.steps[name], head, ended[name])
            states[name] = state_of(self.current(head))
        return states

    def gather(
        self, step: StepSpec, head: Prediction, ended: list[Prediction]
    ) -> Generator[Elements, list[Prediction], None]:
        """Some elements of a running for_each step ended: run again those its ``retry:``
        covers; fail the step at the first broken one past what it tolerates; finish it
        when none is left (the only read of every element), or start as many pending
        ones as ended. Linear in the elements over the step's life: the head counts its
        unfinished elements (``waiting_on``) and, with ``tolerate:``, its failed ones."""
        if step.retry is not None:
            ended = [
                e
                for e in ended
                if step_status(e.status) is not StepStatus.FAILED or not self.again(e, step.retry)
            ]
        broken = [e for e in ended if step_status(e.status) in BROKEN]
        if broken:
            first = min(broken, key=lambda e: e.item_index or 0)
            if step.tolerate is None:
                self.fail_elements(step, head, first)
                return
            items, failed = _tolerated(head)
            failed += len(broken)
            if not step.tolerate.allows(failed, items):
                self.fail_elements(step, head, first, step.tolerate.exceeded(failed, items))
                return
            self.write(head, error_detail=_counts(items, failed))
        left = (head.waiting_on or 0) - len(ended)
        if left <= 0:  # none left by the count: read them all, once, and gather
            elements = yield Elements(step.name)
            self.settle(step, head, elements)
            return
        self.write(head, waiting_on=left)
        if step.max_concurrency is not None:
            for element in (yield Elements(step.name, pending=True, limit=len(ended))):
                self.start(element, value_of_input(element))

    def fail_elements(
        self, step: StepSpec, head: Prediction, element: Prediction, why: str = ""
    ) -> None:
        error = state_of(element).error or StepError(ErrorCode.MODEL_ERROR, "no error recorded")
        message = f"{why}element {element.item_index}: {error.message}"
        self.fail_step(step, head, StepError(error.code, message))

    def fail_step(self, step: StepSpec, head: Prediction, error: StepError) -> None:
        """A for_each step failed: its gathering row ends, what is left of its elements
        is canceled in the same transaction."""
        self.finish(head, Status.FAILED, error_code=error.code, error_message=error.message)
        self.changes.cancel_elements.append(
            (step.name, f"another element of step {step.name!r} failed")
        )

    def settle(self, step: StepSpec, head: Prediction, elements: list[Prediction]) -> None:
        """Every element read: the step's outcome, or (a count that drifted, e.g. a run
        started before the count existed) the count made right and the next started."""
        elements = [self.current(e) for e in elements]  # as this advancement left them
        gathered = fan_in([state_of(e) for e in elements], step.tolerate)
        if gathered.status is StepStatus.SUCCEEDED:
            output = orjson.dumps(gathered.output).decode()
            refs = refs_text(gathered.output)
            self.finish(
                head,
                Status.SUCCEEDED,
                output_json=output,
                output_content_type=JSON,
                output_refs=refs,
            )
            return
        if gathered.status is StepStatus.FAILED:
            assert gathered.error is not None
            self.fail_step(step, head, gathered.error)
            return
        statuses = [step_status(e.status) for e in elements]
        self.write(head, waiting_on=sum(not s.finished for s in statuses))
        tolerated = step.tolerate is not None
        for index in next_elements(statuses, step.max_concurrency, tolerated):
            self.start(elements[index], value_of_input(elements[index]))

    def apply(self, spec: PipelineSpec, decision: Decision) -> None:
        for start in decision.start:
            head = self.heads[start.step]
            if start.inputs is None:
                self.start(head, start.input, _step_fields(spec.steps[start.step], start.input))
            else:
                self.fan_out(spec.steps[start.step], head, start.inputs)
        for name in decision.skip:
            self.finish(self.heads[name], Status.SKIPPED)
        for name, output in decision.complete.items():
            text = orjson.dumps(output).decode()
            self.finish(self.heads[name], Status.SUCCEEDED, output_json=text)
        for name, error in decision.fail.items():
            self.finish(
                self.heads[name], Status.FAILED, error_code=error.code, error_message=error.message
            )
        for name in decision.cancel:
            if name in self.heads:
                self.cancel(self.heads[name], "the run ended first")
        if decision.outcome is not None:
            self.conclude(decision)

    def fan_out(self, step: StepSpec, head: Prediction, inputs: list[Any]) -> None:
        """Create a for_each step's elements; start as many as ``max_concurrency`` lets."""
        if not inputs:
            self.finish(head, Status.SUCCEEDED, output_json="[]", output_content_type=JSON)
            return
        self.write(
            head,
            status=Status.RUNNING,
            started_at=self.now,
            waiting_on=len(inputs),
            error_detail=_counts(len(inputs), 0) if step.tolerate is not None else None,
        )
        first = len(inputs) if step.max_concurrency is None else step.max_concurrency
        for index, value in enumerate(inputs):
            row = _new_row(step, self.run, self.bundle, self.new_id(), 0, item_index=index)
            row = dataclasses.replace(row, **_step_fields(step, value))
            self.changes.inserted.append(self.start_new(row) if index < first else row)

    def count_waiting(self, spec: PipelineSpec) -> None:
        """Keep each pending step's count of unfinished dependencies current."""
        for name, head in self.heads.items():
            row = self.current(head)
            if row.status != Status.PENDING or name not in spec.steps:
                continue
            waiting = sum(
                1
                for dep in spec.steps[name].needs
                if dep in self.heads and not self.current(self.heads[dep]).status.terminal
            )
            if waiting != row.waiting_on:
                self.write(row, waiting_on=waiting)

    def conclude(self, decision: Decision) -> None:
        outcome = decision.outcome
        assert outcome is not None
        if outcome.status == Status.SUCCEEDED:
            self.finish(self.run, Status.SUCCEEDED, **_output_fields(outcome.output))
            return
        error = outcome.error or StepError(ErrorCode.MODEL_ERROR, "the run failed")
        detail = {"step": outcome.failed_step} if outcome.failed_step else {}
        self.finish(
            self.run,
            outcome.status,
            error_code=error.code,
            error_message=error.message,
            error_detail=orjson.dumps(detail).decode(),
        )


def advance(
    run: Prediction,
    heads: Iterable[Prediction],
    ended: Iterable[Prediction] = (),
    *,
    now: float,
    new_id: Callable[[], str],
) -> Advancing:
    """What to write now for ``run``, given its step heads and the elements of its
    for_each steps that ended in this transaction (see the module docstring).

    A run that ended (canceled, timed out, expired) cancels what is left of it, in
    one statement of the store; a run waiting for its uploaded input does nothing."""
    job = _Advance(run, heads, now, new_id)
    if run.status.terminal:
        job.changes.cancel_rest = f"the run {run.status}"
        return job.changes
    if run.status != Status.RUNNING or run.definition is None:
        return job.changes
    by_step: dict[str, list[Prediction]] = {}
    for element in ended:
        if element.step is not None and element.item_index is not None:
            by_step.setdefault(element.step, []).append(element)
    spec = spec_of(run)
    job.retry(spec)
    states = yield from job.states(spec, by_step)
    decision = plan(spec, value_of_input(run), states)
    job.apply(spec, decision)
    job.count_waiting(spec)
    return job.changes


def _counts(items: int, failed: int) -> str:
    """A tolerant for_each step's count of its failed elements (its ``error_detail``)."""
    return orjson.dumps({"items": items, "failed_items": failed}).decode()


def _tolerated(head: Prediction) -> tuple[int, int]:
    """How many elements a tolerant for_each step has, and how many of them failed."""
    counts = orjson.loads(head.error_detail) if head.error_detail else {}
    return int(counts.get("items", 0)), int(counts.get("failed_items", 0))


def _output_fields(value: Any) -> dict[str, Any]:
    """A run's output: the object itself when the value is one whole reference (so it is
    downloaded like a model's large output), else the JSON inline, listing the
    references it holds."""
    if isinstance(value, Stored):
        return {
            "output_json": None,
            "output_key": value.key,
            "output_content_type": value["content_type"],
            "output_bytes": value["bytes"],
        }
    text = orjson.dumps(value).decode()
    return {
        "output_json": text,
        "output_content_type": JSON,
        "output_bytes": len(text.encode()),
        "output_refs": refs_text(value),
    }


def _step_fields(step: StepSpec, value: Any) -> dict[str, Any]:
    """A step's rendered value as its row's fields: an http step's is its request (kept
    in ``definition``, no secret in it) and its body (the input: pipelines/http.py)."""
    if step.http is None:
        return _input_fields(value)
    definition, body = request_fields(step.http, value)
    return {"definition": definition, **_input_fields(body)}


def _input_fields(value: Any) -> dict[str, Any]:
    """A step's input: the object itself when the value is a whole reference freight
    made (never a caller's value shaped like one), else the rendered JSON inline."""
    if isinstance(value, Stored):
        return {
            "input_key": value.key,
            "input_content_type": value["content_type"],
            "input_bytes": value["bytes"],
            "input_json": None,
        }
    text = orjson.dumps(value).decode()
    return {
        "input_json": text,
        "input_key": None,
        "input_content_type": JSON,
        "input_bytes": len(text.encode()),
    }


__all__ = [
    "FOR_EACH",
    "MAX_FOR_EACH_ITEMS",
    "RUN",
    "Advancing",
    "Bundle",
    "Changes",
    "Elements",
    "advance",
    "bundle_of",
    "spec_of",
    "state_of",
    "step_rows",
    "value_of_input",
    "value_of_output",
]
