"""Redriving a run: a failed or canceled run restarted where it stopped, decided purely.

The store (``store/ops.py`` ``redrive``) reads the run and every row under it, calls
:func:`redrive`, writes back what it returns (each row guarded by the status it had
when read) and then advances the runs it restarted, in one transaction. What a
redrive does:

* the run goes back to ``running``, with a new deadline (now + its ``timeout_s``),
  its error and output cleared, ``redrives`` counted (and ``attempts``: the outbox's
  event ids count it, so its ``started`` and ``completed`` events are sent again);
  it advances by the definition it started with (its row's :class:`Bundle`);
* a step that succeeded keeps its output and is not run again;
* every other step (failed, canceled, skipped, never started) goes back to
  ``pending`` with fresh attempts, its error and output cleared: the advancement
  then starts those whose dependencies are done (a skipped step's ``when`` is
  evaluated again, over the same outputs, so it is skipped again unless what it
  reads was run again);
* a ``for_each`` step that started keeps its elements that succeeded; the others
  run again (queued at once, up to ``max_concurrency``; the rest when those end);
* a nested run that started is redriven the same way, recursively (its succeeded
  steps kept); one that never started goes back to ``pending`` like any step.

Only a top-level run (kind ``pipeline``) that failed (a step failed, or it timed
out) or was canceled after it started is redriven: :func:`refusal` says why not.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from freight.media import JSON
from freight.pipelines.plan import StepStatus, fan_in
from freight.pipelines.refs import refs_text
from freight.pipelines.runs import bundle_of, spec_of, state_of, step_rows
from freight.pipelines.spec import StepSpec
from freight.prediction import Kind, Prediction, Status

#: the statuses a run is redriven from (a timed-out run is failed, code ``timeout``)
REDRIVABLE = frozenset({Status.FAILED, Status.CANCELED})

#: what a row run again starts without: no error, no output, no holder, no deadline
_CLEARED: dict[str, Any] = {
    "finished_at": None,
    "lease_expires_at": None,
    "worker_id": None,
    "not_before": None,
    "error_code": None,
    "error_message": None,
    "error_detail": None,
    "output_json": None,
    "output_key": None,
    "output_content_type": None,
    "output_bytes": None,
    "output_refs": None,
    "batch_size": None,
    # a TTL bounds the first start ("not started by then"); a redrive is a start asked now
    "expires_at": None,
}


def refusal(run: Prediction) -> str | None:
    """Why ``run`` cannot be redriven (None: it can)."""
    if run.kind != Kind.PIPELINE or run.definition is None:
        return f"{run.id} is a prediction of kind {run.kind}: only pipeline runs are redriven"
    if run.run_id is not None:
        return f"run {run.id} is a step of run {run.run_id}: redrive that run"
    if run.status not in REDRIVABLE:
        return f"run {run.id} is {run.status}: only a failed or canceled run is redriven"
    if run.started_at is None:
        return f"run {run.id} never started (it never got its input): create it again"
    return None


@dataclass
class Redriven:
    """What a redrive writes: ``updated`` rows written back whole, each guarded by its
    status when read (``was``); ``inserted`` rows (a nested run's steps, started now);
    ``runs`` to advance next, the run first; ``queued``: targets with new queued work."""

    updated: dict[str, Prediction] = field(default_factory=dict)
    was: dict[str, Status] = field(default_factory=dict)
    inserted: list[Prediction] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    queued: set[str] = field(default_factory=set)


class _Redrive:
    def __init__(
        self, rows_of: Mapping[str, Sequence[Prediction]], now: float, new_id: Callable[[], str]
    ) -> None:
        self.rows_of = rows_of
        self.now = now
        self.new_id = new_id
        self.out = Redriven()

    def write(self, row: Prediction, **fields: Any) -> None:
        self.out.was.setdefault(row.id, row.status)
        self.out.updated[row.id] = dataclasses.replace(row, **fields)

    def restart(self, run: Prediction) -> None:
        """A run that started: running again, its rows reset (succeeded ones kept)."""
        self.write(
            run,
            **_CLEARED
            | {
                "status": Status.RUNNING,
                "lease_expires_at": self.now + run.timeout_s,  # its deadline
                "waiting_on": 0,
                "attempts": run.attempts + 1,
                "redrives": run.redrives + 1,
            },
        )
        self.out.runs.append(run.id)
        spec = spec_of(run)
        rows = self.rows_of.get(run.id, ())
        elements: dict[str, list[Prediction]] = {}
        for row in rows:
            if row.item_index is not None and row.step is not None:
                elements.setdefault(row.step, []).append(row)
        for head in rows:
            if head.item_index is not None or head.status == Status.SUCCEEDED:
                continue
            step = spec.steps.get(head.step or "")
            if head.kind == Kind.FOR_EACH and step is not None:
                found = sorted(elements.get(step.name, []), key=lambda e: e.item_index or 0)
                self.for_each(step, head, found)
            elif head.kind == Kind.PIPELINE and self.rows_of.get(head.id):
                self.restart(head)
            else:
                self.reset(head)

    def reset(self, row: Prediction, status: Status = Status.PENDING, **fields: Any) -> None:
        """Back to ``pending`` (or ``status``) with fresh attempts. Its input stays: a
        step's is rendered again when it starts, an element's is its own."""
        fresh = {"status": status, "attempts": 0, "queued_at": None, "started_at": None}
        # waiting_on: a step's count of unfinished dependencies is its advancement's
        self.write(row, **_CLEARED | fresh | {"waiting_on": 0} | fields)

    def for_each(self, step: StepSpec, head: Prediction, elements: list[Prediction]) -> None:
        """A for_each step that did not succeed: fanned out again when it never did;
        else its elements that did not succeed run again."""
        if not elements:
            self.reset(head)
            return
        again = [e for e in elements if e.status != Status.SUCCEEDED]
        if not again:  # every element succeeded, the step ended otherwise: gather them
            self.gather(head, elements)
            return
        self.write(head, **_CLEARED | {"status": Status.RUNNING, "waiting_on": len(again)})
        # a nested run that started is redriven (its rows kept); it counts as in flight
        nested = [e for e in again if e.kind == Kind.PIPELINE and self.rows_of.get(e.id)]
        rest = [e for e in again if e not in nested]
        room = len(rest) if step.max_concurrency is None else step.max_concurrency - len(nested)
        for element in nested:
            self.restart(element)
        for index, element in enumerate(rest):
            if index >= room:
                self.reset(element)
            elif element.kind == Kind.PIPELINE:
                self.start_run(element)
            else:
                self.reset(element, Status.QUEUED, queued_at=self.now)
                self.out.queued.add(element.target)

    def start_run(self, element: Prediction) -> None:
        """A nested run never started (an element): started now, its steps created."""
        self.reset(
            element,
            Status.RUNNING,
            started_at=self.now,
            lease_expires_at=self.now + element.timeout_s,
        )
        started = self.out.updated[element.id]
        assert started.definition is not None
        bundle = bundle_of(started.definition)
        self.out.inserted += step_rows(spec_of(started), started, bundle, self.new_id)
        self.out.runs.append(element.id)

    def gather(self, head: Prediction, elements: list[Prediction]) -> None:
        gathered = fan_in([state_of(e) for e in elements])
        assert gathered.status is StepStatus.SUCCEEDED
        output = {
            "status": Status.SUCCEEDED,
            "finished_at": self.now,
            "waiting_on": 0,
            "output_json": orjson.dumps(gathered.output).decode(),
            "output_content_type": JSON,
            "output_refs": refs_text(gathered.output),
        }
        self.write(head, **_CLEARED | output)


def redrive(
    run: Prediction,
    rows_of: Mapping[str, Sequence[Prediction]],
    *,
    now: float,
    new_id: Callable[[], str],
) -> Redriven:
    """What to write to redrive ``run`` (see the module docstring): ``rows_of`` holds the
    rows of the run, and of each nested run under it that did not succeed, by run id.
    The caller checked :func:`refusal`."""
    job = _Redrive(rows_of, now, new_id)
    job.restart(run)
    return job.out


__all__ = ["REDRIVABLE", "Redriven", "redrive", "refusal"]
