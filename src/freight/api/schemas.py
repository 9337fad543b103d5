"""Pydantic shapes of the HTTP API: request validation and the OpenAPI document."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

StatusName = Literal[
    "awaiting_input",
    "queued",
    "running",
    "succeeded",
    "failed",
    "canceled",
    "expired",
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
