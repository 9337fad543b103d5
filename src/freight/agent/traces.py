"""The spans of one batch, in each prediction's own trace.

A batch holds rows of different traces, so each prediction gets its own spans,
children of the context its row stored (``trace_context``: the request that
created it, or its run's): ``freight.queue_wait`` (queued -> claimed, recorded with
those times), ``freight.predict`` (``freight.step`` for a pipeline's step: claimed ->
recorded), and under it ``freight.input_fetch``, ``freight.model_call`` (with
``freight.batch_size``) and ``freight.output_store``, timed by the runner's marks.
One span per prediction rather than one batch span linked to each: a trace viewer
shows a prediction's own trace whole, and links are followed by few of them; the
batch is an attribute (its size) and the spans' identical times.

Built only while tracing is on (the worker asks :data:`freight.tracing.ENABLED`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from freight import tracing
from freight.prediction import Completion, Prediction, Status

if TYPE_CHECKING:
    from opentelemetry.trace import Span


def attributes(row: Prediction) -> dict[str, Any]:
    """What a prediction's spans say of it (ids only: nothing of its input)."""
    found: dict[str, Any] = {
        "freight.prediction_id": row.id,
        "freight.target": row.target,
        "freight.tenant": row.tenant,
        "freight.attempt": row.attempts,
    }
    if row.run_id is not None:
        found["freight.run_id"] = row.run_id
        found["freight.step"] = row.step or ""
    return found


class BatchTrace:
    """One batch's spans: opened at the claim, the runner's phases recorded when it
    answered, ended with the outcomes."""

    def __init__(self, rows: Sequence[Prediction], claimed_at: float | None = None) -> None:
        now = claimed_at if claimed_at is not None else time.time()
        self.size = len(rows)
        self.spans: dict[str, Span] = {}
        self._written_from: float | None = None
        for row in rows:
            parent = tracing.context_of(row.trace_context)
            claimed = row.started_at or now
            tags = attributes(row)
            queued = row.queued_at or row.created_at
            tracing.record("freight.queue_wait", parent, queued, claimed, attributes=tags)
            name = "freight.step" if row.run_id is not None else "freight.predict"
            self.spans[row.id] = tracing.start(
                name, parent, kind=tracing.CONSUMER, at=claimed, attributes=tags
            )

    def ran(self, marks: Sequence[float], sent_at: float, answered_at: float) -> None:
        """The runner's phases (``marks``: started, inputs read, model called, outputs
        written); without marks, the whole run as the model call."""
        if len(marks) == 4:
            began, read, called, _written = marks
        else:
            began, read, called = sent_at, sent_at, answered_at
        for span in self.spans.values():
            tracing.record("freight.input_fetch", span, began, read)
            tracing.record(
                "freight.model_call",
                span,
                read,
                called,
                attributes={"freight.batch_size": self.size},
            )
        self._written_from = called

    def stored(self, ended: float) -> None:
        """Outputs stored: the runner's writes, then the agent's of handed-back ones."""
        began = self._written_from if self._written_from is not None else ended
        for span in self.spans.values():
            tracing.record("freight.output_store", span, began, ended)

    def end(self, outcomes: Iterable[Completion] = (), error: str | None = None) -> None:
        """Each span ended with its prediction's outcome (``error``: what ended them all,
        a timeout or a replica's death)."""
        by_id = {o.id: o for o in outcomes}
        for row_id, span in self.spans.items():
            outcome = by_id.get(row_id)
            if outcome is not None:
                span.set_attribute("freight.status", str(outcome.status))
                if outcome.status != Status.SUCCEEDED:
                    tracing.failed(span, outcome.error_code or str(outcome.status))
            elif error is not None:
                tracing.failed(span, error)
            span.end()
        self.spans.clear()


__all__ = ["BatchTrace", "attributes"]
