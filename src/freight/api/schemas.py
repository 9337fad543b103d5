"""Pydantic shapes of the HTTP API: request validation and the OpenAPI document."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from freight.access import MAX_KEY_LIFETIME_S
from freight.batch.options import Options
from freight.waiting import Reason

StatusName = Literal[
    "pending",
    "awaiting_input",
    "queued",
    "running",
    "succeeded",
    "failed",
    "canceled",
    "expired",
    "skipped",
]


WebhookEvent = Literal["started", "completed", "waiting"]
WEBHOOK_EVENTS: tuple[str, ...] = ("started", "completed", "waiting")
#: what the API takes as a webhook URL before the SSRF guard looks at it (the service's)
WEBHOOK_URL_PATTERN = r"^[Hh][Tt][Tt][Pp][Ss]?://"
WEBHOOK_URL_MAX = 2048


def check_webhook_events(names: list[str]) -> list[str]:
    """Refuse an unknown event by name (a ``Literal`` error would only say where)."""
    unknown = [name for name in names if name not in WEBHOOK_EVENTS]
    if unknown:
        raise ValueError(
            f"unknown webhook event {', '.join(map(repr, unknown))}: "
            f"use {' or '.join(WEBHOOK_EVENTS)}"
        )
    return names


def _completed_only() -> list[WebhookEvent]:
    return ["completed"]


class WebhookIn(BaseModel):
    """Where to POST this prediction's events (Standard Webhooks, signed with the
    server's secret: ``freight webhooks secret``)."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        min_length=1,
        max_length=WEBHOOK_URL_MAX,
        pattern=WEBHOOK_URL_PATTERN,
        description="http(s) URL of the receiver",
    )
    events: list[WebhookEvent] = Field(
        default_factory=_completed_only,
        min_length=1,
        description="which events to send: started (it began running), completed (any end), "
        "waiting (a pipeline run's callback step waits for its answer: step.waiting)",
    )

    @field_validator("events", mode="before")
    @classmethod
    def _known_events(cls, value: Any) -> Any:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return check_webhook_events(value)
        return value


class CreatePrediction(BaseModel):
    """Body of ``POST /v1/predictions``. Give ``input`` (JSON), or ``input_uri``
    (``freight://<key>`` of a stored object), or neither: the response then
    carries an ``upload_url`` to PUT the input to."""

    model_config = ConfigDict(extra="forbid")

    target: str = Field(min_length=1, max_length=200)
    input: Any = None
    input_uri: str | None = None
    input_content_type: str | None = None
    metadata: dict[str, Any] | None = None
    priority: int = Field(0, ge=-1000, le=1000)
    ttl_s: float | None = Field(None, gt=0)
    webhook: WebhookIn | None = None


class ErrorInfo(BaseModel):
    code: str
    message: str
    detail: dict[str, Any] = {}


class ErrorBody(BaseModel):
    error: ErrorInfo


class BulkItem(CreatePrediction):
    """One prediction of ``POST /v1/predictions/bulk``: a single create's body, and the
    idempotency key its ``Idempotency-Key`` header would carry."""

    idempotency_key: str | None = Field(None, min_length=1, max_length=255)


class BulkResult(BaseModel):
    index: int = Field(description="the item's place in the request")
    status: int = Field(description="202 created (or an idempotent replay), else the error's")
    id: str | None = None
    target: str | None = None
    prediction_status: str | None = None
    url: str | None = Field(None, description="where to follow it")
    error: ErrorInfo | None = None


class BulkOut(BaseModel):
    data: list[BulkResult]


class Metrics(BaseModel):
    queue_ms: float | None
    run_ms: float | None
    total_ms: float | None
    batch_size: int | None


class StepMetrics(BaseModel):
    queue_ms: float | None
    run_ms: float | None


class StepItemOut(BaseModel):
    """One element of a ``for_each`` step: fetch its ``prediction_id`` for the rest."""

    index: int
    prediction_id: str
    status: StatusName
    error: ErrorInfo | None


class CallbackOut(BaseModel):
    """A callback step waiting for an outside answer: what it asks, until when, and the
    URLs that answer it. The URLs carry the wait's single-use token: they are the
    credential (no API key needed), so hand them only to whom should answer."""

    step: str | None
    prediction_id: str = Field(description="the step's own prediction")
    run_id: str | None = Field(description="the run it belongs to (a nested run's)")
    attempt: int = Field(description="the wait: a retry or redrive waits under a new token")
    input: Any = Field(description="the step's rendered input: what it asks about")
    input_uri: str | None = Field(None, description="the input, when stored as an object")
    deadline: str | None = Field(
        description="it times out then unless answered (a heartbeat moves it on, up to "
        "timeout_at)"
    )
    timeout_at: str = Field(description="started_at + timeout_s: the latest deadline")
    urls: dict[str, str] = Field(
        description="POST success (a JSON body: the step's output, checked against its "
        "schema), failure ({error, cause}) and heartbeat"
    )


class StepOut(BaseModel):
    """One step of a pipeline run. A nested pipeline's own steps are on its
    ``prediction_id`` (fetch it to drill down)."""

    status: StatusName
    prediction_id: str
    target: str
    kind: str = Field(description="model, pipeline (a nested run) or for_each")
    attempts: int
    created_at: str
    started_at: str | None
    finished_at: str | None
    metrics: StepMetrics
    output: Any
    output_url: str | None
    error: ErrorInfo | None
    waiting_reason: Reason | None = Field(None, description="why a queued step waits")
    items: list[StepItemOut] | None = Field(None, description="for_each steps only")
    callback: CallbackOut | None = Field(
        None, description="a callback step waiting for its answer: what answers it"
    )


class NotificationsOut(BaseModel):
    """A prediction's notifications (one per event and subscription) counted by how
    each went; the counts add up to ``deliveries``."""

    state: Literal["dead", "failing", "pending", "stopped", "delivered"] = Field(
        description="the worst: dead (an event's retries ran out), failing (an event is "
        "retried after a failed attempt), pending (an event is on its way, or the "
        "prediction has not ended), stopped (a receiver answered 410 Gone), delivered "
        "(it ended and every event was delivered)"
    )
    deliveries: int = Field(description="one per event and subscription, so far")
    delivered: int
    pending: int = Field(description="not yet delivered, no attempt failed")
    failing: int = Field(description="not yet delivered after at least one failed attempt")
    dead: int = Field(description="retried for delivery_max_age_s, never delivered")
    stopped: int = Field(description="the receiver answered 410 Gone")


class PastAttemptOut(BaseModel):
    """An attempt that ended without completing: its worker lost it."""

    attempt: int
    started_at: str | None
    ended_at: str
    why: Literal["replica_died", "lease_expired", "process_died"] = Field(
        description="replica_died (its replica crashed or was killed), lease_expired (its "
        "worker stopped renewing the lease), process_died (the embedded server restarted)"
    )


class PredictionOut(BaseModel):
    id: str
    target: str
    kind: str
    status: StatusName
    created_at: str
    queued_at: str | None
    started_at: str | None
    finished_at: str | None
    metrics: Metrics
    attempts: int
    attempt_history: list[PastAttemptOut] = Field(
        default_factory=list, description="the attempts lost before the current one"
    )
    redrives: int = Field(
        default=0,
        description="a pipeline run: how many times it was redriven "
        "(`POST /v1/predictions/{id}/redrive`)",
    )
    priority: int
    input: Any
    input_uri: str | None = Field(
        None, description="where the input is stored: give it as input_uri to reuse it"
    )
    input_content_type: str | None
    input_bytes: int | None
    output: Any
    output_content_type: str | None
    output_bytes: int | None
    output_url: str | None
    upload_url: str | None
    error: ErrorInfo | None
    metadata: dict[str, Any]
    waiting_reason: Reason | None = Field(
        None,
        description="why it is not running yet (null once it runs or ended): awaiting_input "
        "(no upload yet), retry_backoff (a failed attempt's back-off), quota (its tenant's "
        "max_in_flight), no_replica (no live worker serves the model, or its replicas fail "
        "to load), cold_start (replicas starting), lower_priority (replicas busy, higher "
        "priorities first), at_capacity (replicas busy); awaiting_callback (a callback "
        "step waiting for its answer: it runs, holding nothing)",
    )
    waiting_message: str | None = Field(None, description="the reason in words")
    notifications: NotificationsOut | None = Field(
        None,
        description="how its notifications went, apart from its own status (null: it has "
        "no subscriptions; null in the notifications themselves)",
    )
    urls: dict[str, str]
    run_id: str | None = Field(None, description="a pipeline step: the run it belongs to")
    step: str | None = Field(None, description="a pipeline step: its name in the run")
    item_index: int | None = Field(None, description="a for_each element: its index")
    steps: dict[str, StepOut] | None = Field(
        None, description="a pipeline run: its steps by name, in run order"
    )
    callback: CallbackOut | None = Field(
        None, description="a callback step waiting for its answer: what answers it"
    )


class DeliveryTryOut(BaseModel):
    """One attempt to deliver an event: the receiver's status code or the error, and
    when the next one is due (null: it was the last)."""

    attempt: int
    at: str
    status_code: int | None
    error: str | None
    next_at: str | None
    latency_ms: float | None = Field(None, description="how long the receiver took to answer")
    response: str | None = Field(
        None, description="the first KB of a webhook receiver's answer (its body)"
    )


class DeliveryOut(BaseModel):
    """One event for one subscription of a prediction."""

    id: str = Field(description="what POST /v1/deliveries/{id}/redeliver names")
    sink: str = Field(description="`webhook <url without query>`, or a freight.yaml sink's name")
    event_id: str = Field(description="stable across retries: receivers de-duplicate on it")
    event: str
    status: Literal["pending", "sending", "delivered", "dead", "stopped"]
    attempts: int
    last_code: int | None
    last_error: str | None
    next_at: str | None = Field(description="when it is tried next (null once it ended)")
    finished_at: str | None
    created_at: str
    tries: list[DeliveryTryOut]


class DeliveryList(BaseModel):
    data: list[DeliveryOut]


class PredictionPage(BaseModel):
    data: list[PredictionOut]
    next_cursor: str | None


class ModelOut(BaseModel):
    name: str
    input_kind: str
    streams: bool = Field(False, description="predict is a generator: its chunks stream")
    stream_output: str | None = Field(
        None, description="a streaming model's output from its chunks: concat or list"
    )
    batching: dict[str, Any]
    replicas: dict[str, Any] = Field(
        description="min, max, target_backlog, idle_s, gpus (per replica); the replicas "
        "of this node, or on an API without replicas of every live worker node (their "
        "census): running / ready (loaded), busy (running a batch), starting, total "
        "(running or starting) and desired (the autoscalers' count)"
    )
    backlog: dict[str, int]
    load_error: dict[str, Any] | None = None
    scaling: dict[str, Any] | None = Field(
        None,
        description="served (false: this node cannot serve it, not_served says why), "
        "reason (the autoscaler's last tick), last_change {from, to, reason, at}, "
        "cold_starts [{seconds, load_s, at}] (spawn to ready, the last few); null "
        "where no replica runs in this process",
    )


class ModelList(BaseModel):
    data: list[ModelOut]


class PipelineStepOut(BaseModel):
    name: str
    target: str
    kind: Literal["model", "pipeline", "callback", "http"]
    needs: list[str] = Field(description="the steps it references, inferred, sorted")
    input: Any = Field(description="the input template")
    when: str | None
    for_each: str | None
    max_concurrency: int | None
    optional: bool
    timeout_s: float | None
    max_attempts: int | None
    retry: dict[str, Any] | None = Field(
        None,
        description="failures run again: on (error codes), max_attempts (every attempt), "
        "interval_s, backoff, max_interval_s, jitter",
    )
    catch: list[dict[str, Any]] = Field(
        default_factory=list,
        description="where a failure goes, tried in order: on (error codes; null: every "
        "code) and then (the handler step) or default (the template standing in)",
    )
    handles: str | None = Field(None, description="the step whose errors this one handles")
    tolerate: dict[str, Any] | None = Field(
        None, description="for_each: the failed elements it survives, count or percent"
    )
    http: dict[str, Any] | None = Field(
        None,
        description="a kind: http step's call: method, url (as declared), headers (each a "
        "value, or the environment variable its secret is read from: never the secret)",
    )
    callback: dict[str, Any] | None = Field(
        None,
        description="a kind: callback step's wait: heartbeat_s (null: none required) and "
        "schema (the JSON Schema its answer must satisfy; null: any JSON)",
    )


class PipelineOut(BaseModel):
    name: str
    timeout_s: float | None
    output: Any = Field(description="the output template")
    steps: list[PipelineStepOut] = Field(description="in dependency order")
    graph: str = Field(description="the DAG as Mermaid text")


class PipelineList(BaseModel):
    data: list[PipelineOut]


class UsageOut(BaseModel):
    """One group's usage; a key the report is not grouped by is null."""

    tenant: str | None
    target: str | None = Field(description="the model or pipeline")
    kind: str | None = Field(description="model, pipeline, chunk or batch")
    hour: str | None = Field(description="the hour's start (ISO 8601)")
    status: str | None = Field(description="the outcome: succeeded, failed, canceled, ...")
    count: int = Field(description="predictions ended")
    compute_s: float = Field(description="replica wall time (a batch of n: 1/n each)")
    gpu_s: float = Field(description="compute_s x the GPUs of the replica")
    queue_s: float = Field(description="queued -> started")
    cold_start_s: float = Field(description="waited, queued, for its replica to load")
    bytes_in: int
    bytes_out: int


class UsageReport(BaseModel):
    start: str = Field(alias="from", description="the first hour covered (ISO 8601)")
    end: str = Field(alias="to", description="the end of the last hour covered")
    group_by: list[str]
    data: list[UsageOut]


class BatchUpload(BaseModel):
    """Upload the input files through presigned URLs (``upload_urls`` of the job)."""

    model_config = ConfigDict(extra="forbid")

    upload: list[str] = Field(min_length=1, max_length=10_000)


class CreateBatchJob(Options):
    """Body of ``POST /v1/batch-jobs``: run ``target`` over every record of ``input``;
    the job's options are :class:`freight.batch.options.Options`' fields, inherited."""

    model_config = ConfigDict(extra="forbid", frozen=False)

    target: str = Field(min_length=1, max_length=200)
    input: str | BatchUpload = Field(
        description="freight://<key> of a file, a prefix ending in '/' (every file under "
        "it), a URI of the configured store, or {'upload': [names]}"
    )
    output: str | None = Field(None, description="a prefix for the outputs (freight://...)")
    metadata: dict[str, Any] | None = None
    webhook: WebhookIn | None = None

    def options(self) -> Options:
        return Options.model_validate(self.model_dump(include=set(Options.model_fields)))


# -- access (keys, the audit log) ---------------------------------------------------
ScopeName = Literal["predict", "read", "batch", "admin", "metrics"]


def _predict_and_read() -> list[ScopeName]:  # the scopes of a key unless told
    return ["predict", "read"]


class CreateKey(BaseModel):
    """A new API key for a tenant (the token is in the answer, once)."""

    model_config = ConfigDict(extra="forbid")

    tenant: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$", description="who it acts as")
    name: str = Field("", max_length=200, description="what it is for")
    scopes: list[ScopeName] = Field(default_factory=_predict_and_read, min_length=1, max_length=5)
    models: list[str] | None = Field(
        None, max_length=1000, description="only these models and pipelines (default: all)"
    )
    expires_in_s: float | None = Field(
        None, gt=0, le=MAX_KEY_LIFETIME_S, description="lifetime in seconds (10 years at most)"
    )
    sigv4: StrictBool = Field(
        False,
        description="an access-key pair for AWS clients (SigV4) instead of a bearer key",
    )


class KeyOut(BaseModel):
    id: str
    kind: Literal["bearer", "sigv4"] = Field(
        "bearer", description="a bearer key, or a SigV4 pair (`id` is its access key id)"
    )
    tenant: str
    name: str
    scopes: list[ScopeName]
    models: list[str] | None
    created_at: str
    created_by: str
    expires_at: str | None
    revoked_at: str | None
    token: str | None = Field(None, description="the key itself: only when created")
    access_key_id: str | None = Field(None, description="a SigV4 pair's: only when created")
    secret_access_key: str | None = Field(
        None, description="a SigV4 pair's secret: only when created"
    )


class KeyList(BaseModel):
    data: list[KeyOut]


class AuditOut(BaseModel):
    id: int
    at: str
    actor: str
    tenant: str
    action: str
    subject: str | None
    detail: dict[str, Any] | None


class AuditPage(BaseModel):
    data: list[AuditOut]
    next_before: int | None = Field(description="`before` of the next (older) page")


class WebhookSecretOut(BaseModel):
    tenant: str
    secret: str = Field(description="whsec_…: verify the webhook-signature header with it")
