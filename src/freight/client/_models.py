"""What the client hands back: the prediction object, model listings, the error.

These mirror the HTTP API's JSON. They are pydantic models so that timestamps
arrive as ``datetime`` and a malformed answer fails loudly here rather than as
a ``KeyError`` somewhere in the caller's code. Unknown fields are kept (the
API may add fields, and pipeline runs add ``steps``): a newer server never
breaks an older client.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from freight.errors import FreightError

#: a pipeline step also ends ``skipped`` (its ``when`` was false)
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "canceled", "expired", "skipped"})


class FreightClientError(FreightError):
    """The server answered with an error, or could not be reached.

    ``status`` is the HTTP status (0 when no response came back: connection
    refused, network timeout), ``code`` the API's stable machine-readable code
    (``not_found``, ``queue_full``, ``model_error``, ...), ``detail`` its
    structured fields. A 429 sets ``retry_after_s`` from ``Retry-After``.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        detail: dict[str, Any] | None = None,
        *,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.status = status
        self.detail = dict(detail or {})
        self.retry_after_s = retry_after_s

    def __str__(self) -> str:
        where = f"HTTP {self.status}" if self.status else "no response"
        return f"{self.code}: {self.message} ({where})"

    def __repr__(self) -> str:
        return f"FreightClientError({self.status!r}, {self.code!r}, {self.message!r})"


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class Metrics(_Wire):
    """Timings in milliseconds, and the size of the batch the prediction ran in."""

    queue_ms: float | None = None
    run_ms: float | None = None
    total_ms: float | None = None
    batch_size: int | None = None


class ErrorInfo(_Wire):
    """Why a prediction failed: a stable ``code`` plus a human ``message``."""

    code: str
    message: str = ""
    detail: dict[str, Any] = Field(default_factory=dict)


class Urls(_Wire):
    self: str | None = None
    cancel: str | None = None
    output: str | None = None


class StepItem(_Wire):
    """One element of a ``for_each`` step; ``client.get(prediction_id)`` for the rest."""

    index: int
    prediction_id: str
    status: str
    error: ErrorInfo | None = None


class CallbackInfo(_Wire):
    """A callback step waiting for its answer: what it asks (``input``), until when
    (``deadline``), and the URLs that answer it (``success``, ``failure``,
    ``heartbeat``: each carries the wait's single-use token, the only credential they
    need). Answer with ``client.callback_success(url, output)`` and its siblings."""

    step: str | None = None
    prediction_id: str
    run_id: str | None = None
    attempt: int = 1
    input: Any = None
    input_uri: str | None = None
    deadline: datetime | None = None
    timeout_at: datetime | None = None
    urls: dict[str, str] = Field(default_factory=dict)


class CallbackAnswered(_Wire):
    """A callback step as an answer left it: ``succeeded``, ``failed``, or ``running``
    again (a failure its ``retry:`` covers waits anew; a heartbeat: the new
    ``deadline``)."""

    prediction_id: str
    run_id: str | None = None
    step: str | None = None
    status: str
    attempt: int = 1
    deadline: datetime | None = None


class StepInfo(_Wire):
    """One step of a pipeline run. A nested run (``kind == "pipeline"``) lists its own
    steps on its own prediction: ``client.get(step.prediction_id).steps``."""

    status: str
    prediction_id: str
    target: str
    kind: str = "model"
    attempts: int = 0
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    metrics: Metrics = Field(default_factory=Metrics)
    output: Any = None
    output_url: str | None = None
    error: ErrorInfo | None = None
    waiting_reason: str | None = None  # why a queued step is not running yet
    items: list[StepItem] | None = None
    callback: CallbackInfo | None = None  # a callback step waiting for its answer


class Notifications(_Wire):
    """How a prediction's notifications went, apart from its own status: its outbox
    rows (one per event and subscription) counted, the counts adding up to
    ``deliveries``, and ``state`` the worst of them: ``dead``, ``failing`` (retried
    after a failed attempt), ``pending``, ``stopped`` (410 Gone), then ``delivered``
    (the prediction ended and every event was delivered)."""

    state: str
    deliveries: int = 0
    delivered: int = 0
    pending: int = 0
    failing: int = 0
    dead: int = 0
    stopped: int = 0


class PastAttempt(_Wire):
    """An attempt that ended without completing (its replica died, its worker's lease
    lapsed, the process running it died)."""

    attempt: int
    started_at: datetime | None = None
    ended_at: datetime | None = None
    why: str


class Prediction(_Wire):
    """One prediction as the API reports it, at the moment it was fetched. A pipeline
    run carries ``steps`` (by name, in run order); a step carries its ``run_id`` and
    ``step`` name (and a for_each element its ``item_index``)."""

    id: str
    target: str
    kind: str = "model"
    status: str
    created_at: datetime | None = None
    queued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    metrics: Metrics = Field(default_factory=Metrics)
    attempts: int = 0
    attempt_history: list[PastAttempt] = Field(default_factory=list)
    redrives: int = 0  # a pipeline run: how many times it was redriven
    priority: int = 0
    input: Any = None
    input_uri: str | None = None
    input_content_type: str | None = None
    input_bytes: int | None = None
    output: Any = None
    output_content_type: str | None = None
    output_bytes: int | None = None
    output_url: str | None = None
    upload_url: str | None = None
    error: ErrorInfo | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    #: why it is not running yet (None once it runs or ended): awaiting_input,
    #: retry_backoff, quota, no_replica, cold_start, lower_priority, at_capacity
    waiting_reason: str | None = None
    waiting_message: str | None = None
    urls: Urls = Field(default_factory=Urls)
    run_id: str | None = None
    step: str | None = None
    item_index: int | None = None
    steps: dict[str, StepInfo] | None = None
    #: None where it has no subscriptions (nobody is notified of it)
    notifications: Notifications | None = None
    #: a callback step waiting for its answer: what answers it
    callback: CallbackInfo | None = None

    @property
    def terminal(self) -> bool:
        """True once the status can no longer change."""
        return self.status in TERMINAL_STATUSES

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"


#: a batch job's statuses that can no longer change
BATCH_TERMINAL_STATUSES = frozenset({"succeeded", "failed", "canceled"})


class Created(_Wire):
    """One item's result of a bulk create (:meth:`Client.create_many`), in the request's
    order: ``status`` 202 with its ``id`` (also for an idempotent replay), else the
    status and ``error`` a single create would have raised with."""

    index: int
    status: int
    id: str | None = None
    target: str | None = None
    prediction_status: str | None = None
    url: str | None = None
    error: ErrorInfo | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class BatchOptions(_Wire):
    """How a batch job splits, calls and joins (the server's defaults filled in)."""

    split: str = "line"
    records_per_call: int | None = None
    max_call_bytes: int | None = None
    concurrency: int | None = None
    on_error: str = "fail"
    join: str = "none"
    input_filter: str | None = None
    output_filter: str | None = None
    content_type: str | None = None
    priority: int | None = None


class BatchInput(_Wire):
    """Where a job reads: the stored object or prefix, and how many files it holds
    (None until the input was listed or uploaded)."""

    uri: str | None = None
    files: int | None = None


class BatchOutputLocation(_Wire):
    """Where a job writes: the output prefix and its manifest (``manifest_url``, a
    presigned download, appears once the manifest exists)."""

    uri: str | None = None
    manifest_uri: str | None = None
    manifest_url: str | None = None


class BatchCounts(_Wire):
    """Records done and failed; ``total`` is None until every input file was split."""

    total: int | None = None
    done: int = 0
    failed: int = 0


class BatchOutput(_Wire):
    """One finished input file: where its output (and its failed records, if any)
    went, with presigned ``*_url`` downloads."""

    name: str
    input_uri: str | None = None
    output_uri: str | None = None
    output_url: str | None = None
    errors_uri: str | None = None
    errors_url: str | None = None
    records: int = 0
    failed: int = 0


class BatchJob(_Wire):
    """One batch-transform job as the API reports it, at the moment it was fetched.

    ``upload_urls`` (name -> signed PUT URL) is set while it is ``awaiting_input``;
    ``outputs`` lists the files finished so far."""

    id: str
    target: str
    target_kind: str = "model"
    status: str
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    options: BatchOptions = Field(default_factory=BatchOptions)
    input: BatchInput = Field(default_factory=BatchInput)
    output: BatchOutputLocation = Field(default_factory=BatchOutputLocation)
    counts: BatchCounts = Field(default_factory=BatchCounts)
    progress: float = 0.0
    records_per_s: float | None = None
    eta_s: float | None = None
    outputs: list[BatchOutput] = Field(default_factory=list)
    error: ErrorInfo | None = None
    upload_urls: dict[str, str] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    urls: Urls = Field(default_factory=Urls)

    @property
    def terminal(self) -> bool:
        """True once the status can no longer change."""
        return self.status in BATCH_TERMINAL_STATUSES

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One event of ``GET /v1/predictions/{id}/events``: ``id`` counts from 1 within
    the prediction (pass it as ``after`` to resume), ``type`` is the status reached
    (``queued``, ``running``, ``succeeded``, ...) or ``step.<status>`` for a pipeline
    run's step, ``prediction`` the prediction (a step's own for a step event) as it
    was when the event was sent. ``cursor`` is the event's id as sent: ``id``, and
    on a stream with log lines the last line's seq too (``"3-17"``): pass it as
    ``after`` to resume without the lines already seen."""

    id: int
    type: str
    prediction: Prediction
    cursor: str = ""

    @property
    def final(self) -> bool:
        """True for the followed prediction's terminal event: the stream's last."""
        return self.type in TERMINAL_STATUSES


class DeliveryTry(_Wire):
    """One attempt to deliver a notification: the receiver's answer, or the error."""

    attempt: int
    at: datetime
    status_code: int | None = None
    error: str | None = None
    next_at: datetime | None = None
    latency_ms: float | None = None  # how long the receiver took to answer (or to fail)
    response: str | None = None  # the first KB of its answer (webhooks)


class Delivery(_Wire):
    """One event for one subscription of a prediction (``sink`` is ``webhook <url>``
    or a server-wide sink's name) and how its delivery went; ``id`` names it to
    ``POST /v1/deliveries/{id}/redeliver``."""

    id: str = ""
    sink: str
    event_id: str
    event: str
    status: str
    attempts: int = 0
    last_code: int | None = None
    last_error: str | None = None
    next_at: datetime | None = None
    finished_at: datetime | None = None
    created_at: datetime | None = None
    tries: list[DeliveryTry] = Field(default_factory=list)


class BatchingInfo(_Wire):
    max_size: int
    max_wait_ms: float


class ReplicasInfo(_Wire):
    min: int
    max: int
    running: int = 0
    starting: int = 0
    desired: int | None = None
    target_backlog: int | None = None
    idle_s: float | None = None
    gpus: int = 0


class ScaleChangeInfo(_Wire):
    """The autoscaler's last change of a model's replica count."""

    from_: int = Field(0, alias="from")
    to: int = 0
    reason: str = ""
    at: str | None = None


class ColdStartInfo(_Wire):
    seconds: float
    load_s: float | None = None
    at: str | None = None


class ScalingInfo(_Wire):
    """What the autoscaler of the node that answered did, and why."""

    served: bool = True
    not_served: str | None = None
    reason: str | None = None
    last_change: ScaleChangeInfo | None = None
    cold_starts: list[ColdStartInfo] = Field(default_factory=list)


class BacklogInfo(_Wire):
    queued: int = 0
    running: int = 0


class ModelInfo(_Wire):
    """A served model, its batching and scaling settings and its current backlog."""

    name: str
    input_kind: str = "json"
    streams: bool = False  # predict is a generator: client.stream() follows its chunks
    batching: BatchingInfo | None = None
    replicas: ReplicasInfo | None = None
    backlog: BacklogInfo = Field(default_factory=BacklogInfo)
    scaling: ScalingInfo | None = None


class PipelineStepInfo(_Wire):
    """A declared step: its target, inferred ``needs``, templates and options."""

    name: str
    target: str
    kind: str = "model"
    needs: list[str] = Field(default_factory=list)
    input: Any = None
    when: str | None = None
    for_each: str | None = None
    max_concurrency: int | None = None
    optional: bool = False
    timeout_s: float | None = None
    max_attempts: int | None = None


class PipelineInfo(_Wire):
    """A declared pipeline: its steps in dependency order, output template, and
    ``graph``, the DAG as Mermaid text."""

    name: str
    timeout_s: float | None = None
    output: Any = None
    steps: list[PipelineStepInfo] = Field(default_factory=list)
    graph: str = ""


class UsageLine(_Wire):
    """One group of a usage report (:meth:`Client.usage`): predictions ended and what
    they cost. A key the report is not grouped by is None."""

    tenant: str | None = None
    target: str | None = None
    kind: str | None = None
    hour: datetime | None = None
    status: str | None = None
    count: int = 0
    compute_s: float = 0.0
    gpu_s: float = 0.0
    queue_s: float = 0.0
    cold_start_s: float = 0.0
    bytes_in: int = 0
    bytes_out: int = 0


class HandleBase:
    """What the sync and async prediction handles share: state, not I/O.

    ``prediction`` is the latest state seen; ``refresh()``/``wait()`` update it.
    """

    __slots__ = ("prediction",)

    def __init__(self, prediction: Prediction) -> None:
        self.prediction = prediction

    @property
    def id(self) -> str:
        return self.prediction.id

    @property
    def status(self) -> str:
        """The status as of the last request."""
        return self.prediction.status

    @property
    def terminal(self) -> bool:
        return self.prediction.terminal

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} {self.status}>"
