"""Domain types of the prediction lifecycle, shared by store, agent and api.

A :class:`Prediction` is one row of the ``predictions`` table: the table is the
queue, so this type is both the job and its status record. Times are epoch
seconds (float) everywhere inside freight; the API renders them as ISO 8601.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Status(enum.StrEnum):
    PENDING = "pending"  # a pipeline step waiting for the steps it depends on
    AWAITING_INPUT = "awaiting_input"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    EXPIRED = "expired"
    SKIPPED = "skipped"  # a pipeline step whose ``when`` was false

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset(
    {Status.SUCCEEDED, Status.FAILED, Status.CANCELED, Status.EXPIRED, Status.SKIPPED}
)


class Kind(enum.StrEnum):
    """What a row of the queue table is. Rows of kinds in :data:`LEASED` are claimed and
    leased by workers; a pipeline run's lease is its deadline."""

    MODEL = "model"  # a prediction of a model (a top-level one, or a pipeline step's)
    PIPELINE = "pipeline"  # a pipeline run (top-level, or a nested run inside another)
    FOR_EACH = "for_each"  # the row that gathers a for_each step's elements
    CHUNK = "chunk"  # a batch job's chunk of records, run by a model
    BATCH = "batch"  # a batch job, held by its driver
    CALLBACK = "callback"  # a pipeline step waiting for an outside answer (its lease: deadline)
    HTTP = "http"  # a pipeline step that calls an HTTP endpoint

    @property
    def leased(self) -> bool:
        return self in LEASED


LEASED = frozenset({Kind.MODEL, Kind.CHUNK, Kind.BATCH, Kind.HTTP})

#: a prediction requeued after a failed attempt (its replica died, its lease lapsed, the
#: process running it crashed) waits this long per attempt made before it is claimed
#: again: an input that crashes its replica does not crash-loop the fleet at full speed
RETRY_BACKOFF_S = 1.0


class ErrorCode(enum.StrEnum):
    """Stable codes of a failed / canceled / expired prediction."""

    MODEL_ERROR = "model_error"
    TIMEOUT = "timeout"
    EXPIRED = "expired"
    CANCELED = "canceled"
    ATTEMPTS_EXHAUSTED = "attempts_exhausted"
    INPUT_ERROR = "input_error"
    OUTPUT_ERROR = "output_error"
    REPLICA_FAILED = "replica_failed"
    BATCH_MISMATCH = "batch_mismatch"  # predict_batch returned the wrong number of outputs
    MODEL_UNAVAILABLE = "model_unavailable"  # the model failed to load max_load_attempts times
    TOO_MANY_ITEMS = "too_many_items"  # a for_each step over more elements than it may take
    CALLBACK_FAILED = "callback_failed"  # a callback step answered failure (its error, cause)
    HTTP_ERROR = "http_error"  # an http step's call answered non-2xx, or broke off
    URL_REFUSED = "url_refused"  # an http step's URL refused by the SSRF guard
    MISSING_SECRET = "missing_secret"  # an http step's header variable is not set


@dataclass(slots=True)
class Prediction:
    """One prediction (a row of the queue table)."""

    id: str
    target: str
    status: Status
    created_at: float
    kind: Kind = Kind.MODEL
    priority: int = 0
    queued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int = 0
    max_attempts: int = 3
    timeout_s: float = 3600.0
    expires_at: float | None = None  # TTL: not started by then -> expired
    upload_expires_at: float | None = None  # awaiting_input past this -> expired
    lease_expires_at: float | None = None
    worker_id: str | None = None
    input_json: str | None = None  # JSON text when the input is small JSON
    input_key: str | None = None  # object-store key of the input
    input_content_type: str | None = None
    input_bytes: int | None = None
    output_json: str | None = None
    output_key: str | None = None
    output_content_type: str | None = None
    output_bytes: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    error_detail: str | None = None  # JSON text
    metadata: str | None = None  # JSON text
    idempotency_key: str | None = None
    request_hash: str | None = None
    batch_size: int | None = None
    # traces: the W3C traceparent of the span that created it (freight.tracing), so a
    # worker continues the prediction's trace; a run's steps carry their run's
    trace_context: str | None = None
    # pipelines: a run is a row of kind "pipeline"; each of its steps is a row that
    # carries the run's id, its step name (and element index under for_each), and
    # while pending the count of its unfinished dependencies
    run_id: str | None = None
    step: str | None = None
    item_index: int | None = None
    waiting_on: int | None = None
    definition: str | None = None  # a run's pipeline, as JSON: runs advance by it
    # notifications: who asked to be told of this prediction's changes (JSON list of
    # subscriptions); the database writes an outbox row per event and subscription
    notify: str | None = None
    # keys of the object references freight put in output_json (JSON list), so a caller's
    # JSON shaped like a reference is never taken for one (pipelines/refs.py)
    output_refs: str | None = None
    # who owns it (freight.access): a run's steps, a job's chunks are their owner's
    tenant: str = "default"
    # requeued after a failed attempt: not claimed again before this (its back-off)
    not_before: float | None = None
    # the attempts that ended without completing: "attempt,started_at,ended_at,worker,why;"
    # each (:func:`attempts_of` reads it)
    attempt_history: str | None = None
    # a pipeline run: how many times it was redriven (restarted after it failed or was
    # canceled, its succeeded steps kept: ``store/ops.py`` ``redrive``)
    redrives: int = 0


@dataclass(frozen=True, slots=True)
class PastAttempt:
    """An attempt that ended without completing: its worker lost it."""

    attempt: int
    started_at: float | None
    ended_at: float
    worker: str
    why: str  # replica_died, lease_expired, process_died


def attempts_of(history: str | None) -> list[PastAttempt]:
    """The past attempts a row's ``attempt_history`` holds, oldest first (a malformed
    entry is skipped: the history is for people, never a rule)."""
    found: list[PastAttempt] = []
    for entry in (history or "").split(";"):
        parts = entry.split(",")
        if len(parts) != 5:
            continue
        attempt, started, ended, worker, why = parts
        try:
            found.append(
                PastAttempt(int(attempt), float(started) or None, float(ended), worker, why)
            )
        except ValueError:
            continue
    return found


@dataclass(slots=True)
class Completion:
    """The outcome of one claimed prediction, reported by the worker that holds it.

    ``attempt`` and ``worker_id`` fence the write: a worker whose lease was lost
    (and whose prediction was requeued and claimed again) cannot complete it.
    """

    id: str
    attempt: int
    worker_id: str
    status: Status  # SUCCEEDED or FAILED
    finished_at: float
    output_json: str | None = None
    output_key: str | None = None
    output_content_type: str | None = None
    output_bytes: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    error_detail: str | None = None
    batch_size: int | None = None
    # what it cost, for the usage ledger (``freight.ledger``): its share of the replica's
    # wall time (a batch of n: 1/n each), the GPUs of that replica, and how long it
    # waited, queued, for that replica to load
    compute_s: float = 0.0
    gpus: int = 0
    cold_start_s: float = 0.0


@dataclass(slots=True)
class Release:
    """Give a claimed prediction back: requeue it, or fail it when attempts are spent."""

    id: str
    attempt: int
    worker_id: str
    count_attempt: bool = True  # False: the attempt was not the prediction's fault
    error_code: str = ErrorCode.ATTEMPTS_EXHAUSTED
    error_message: str = "the replica running this prediction died"
    backoff_s: float = RETRY_BACKOFF_S  # requeued: not claimed before backoff_s x attempts


@dataclass(slots=True)
class ReapResult:
    """What one sweep of lease/TTL enforcement changed (ids per outcome)."""

    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)


@dataclass(slots=True)
class TargetStats:
    queued: int = 0
    running: int = 0
    awaiting_input: int = 0
    oldest_queued_id: str | None = None  # UUIDv7: it carries its creation time

    @property
    def oldest_queued_at(self) -> float | None:
        """Epoch seconds the oldest queued prediction was created (its id's UUIDv7
        timestamp; None when nothing is queued or the id is not a UUIDv7)."""
        text = (self.oldest_queued_id or "").replace("-", "")[:12]
        try:
            return int(text, 16) / 1000 if len(text) == 12 else None
        except ValueError:
            return None
