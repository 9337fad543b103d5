"""Pydantic shapes of the HTTP API: request validation and the OpenAPI document."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

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


class ErrorInfo(BaseModel):
    code: str
    message: str
    detail: dict[str, Any] = {}


class ErrorBody(BaseModel):
    error: ErrorInfo


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
    items: list[StepItemOut] | None = Field(None, description="for_each steps only")


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
    urls: dict[str, str]
    run_id: str | None = Field(None, description="a pipeline step: the run it belongs to")
    step: str | None = Field(None, description="a pipeline step: its name in the run")
    item_index: int | None = Field(None, description="a for_each element: its index")
    steps: dict[str, StepOut] | None = Field(
        None, description="a pipeline run: its steps by name, in run order"
    )


class PredictionPage(BaseModel):
    data: list[PredictionOut]
    next_cursor: str | None


class ModelOut(BaseModel):
    name: str
    input_kind: str
    batching: dict[str, Any]
    replicas: dict[str, Any]
    backlog: dict[str, int]
    load_error: dict[str, Any] | None = None


class ModelList(BaseModel):
    data: list[ModelOut]


class PipelineStepOut(BaseModel):
    name: str
    target: str
    kind: Literal["model", "pipeline"]
    needs: list[str] = Field(description="the steps it references, inferred, sorted")
    input: Any = Field(description="the input template")
    when: str | None
    for_each: str | None
    max_concurrency: int | None
    optional: bool
    timeout_s: float | None
    max_attempts: int | None


class PipelineOut(BaseModel):
    name: str
    timeout_s: float | None
    output: Any = Field(description="the output template")
    steps: list[PipelineStepOut] = Field(description="in dependency order")
    graph: str = Field(description="the DAG as Mermaid text")


class PipelineList(BaseModel):
    data: list[PipelineOut]
