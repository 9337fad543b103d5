"""Starting a pipeline run: the rows ``store.create_run`` inserts, built purely.

One place for what a run is when it starts, whoever starts it: a caller through
the prediction service, or a batch job's driver (one run per record). A run is
running from the start (or awaiting its upload), advances by the definition it
carries (its bundle), and its whole-run timeout is its lease, counted from its
start: a run that awaits its upload gets it anew when the input lands
(``mark_input_ready``).
"""

from __future__ import annotations

from collections.abc import Callable

from freight.pipelines.runs import RUN, bundle_of, step_rows
from freight.pipelines.spec import PipelineSpec
from freight.prediction import Prediction, Status


def run_timeout_s(spec: PipelineSpec, max_run_s: float) -> float:
    """A run's whole-run timeout: its pipeline's, never past the server's limit."""
    return min(spec.timeout_s or max_run_s, max_run_s)


def new_run(target: str, bundle: str, *, run_id: str, now: float, timeout_s: float) -> Prediction:
    """The run's row before its caller's fields (input, priority, idempotency, ...)."""
    return Prediction(
        id=run_id,
        target=target,
        kind=RUN,
        status=Status.RUNNING,
        created_at=now,
        queued_at=now,
        started_at=now,
        max_attempts=1,
        timeout_s=timeout_s,
        lease_expires_at=now + timeout_s,
        definition=bundle,
    )


def start_rows(run: Prediction, spec: PipelineSpec, new_id: Callable[[], str]) -> list[Prediction]:
    """Make the run ready to insert, its fields all set (one awaiting its upload has
    not started), and return its step rows: one pending row per step, holding its
    dependency count, with the run's priority, expiry and limits."""
    if run.status == Status.AWAITING_INPUT:
        run.started_at = None
    return step_rows(spec, run, bundle_of(run.definition or ""), new_id)


__all__ = ["new_run", "run_timeout_s", "start_rows"]
