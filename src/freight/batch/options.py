"""A batch job's options: the one definition (see :class:`Options`).

Apart from :mod:`freight.batch.spec` on purpose: runners import that module to
run chunks, and this one pulls in pydantic (~75 ms of every replica's start).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from freight.batch.spec import (
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_CALL_BYTES,
    DEFAULT_PRIORITY,
    DEFAULT_RECORDS_PER_CALL,
    Join,
    OnError,
    Split,
)


class Options(BaseModel):
    """The job's knobs, named as SageMaker batch-transform users know them.

    The one definition: the API's request body (``api.schemas.CreateBatchJob``)
    inherits these fields, bounds and descriptions; the client's
    ``BatchJobOptions`` and the CLI's options are checked against them by a test
    (typed keyword arguments cannot be derived without losing their types)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    split: Split = Field(
        "line",
        description="line: a record per line (JSON Lines) or data row (CSV); "
        "none: each file is one record",
    )
    records_per_call: int = Field(
        DEFAULT_RECORDS_PER_CALL, ge=1, le=100_000, description="records per model call"
    )
    max_call_bytes: int = Field(
        DEFAULT_MAX_CALL_BYTES, ge=1, le=1 << 30, description="input bytes per model call"
    )
    concurrency: int = Field(
        DEFAULT_CONCURRENCY, ge=1, le=1024, description="chunks of the job queued or running"
    )
    on_error: OnError = Field(
        "fail",
        description="fail: a failed record fails the job; continue: it goes to the error file",
    )
    join: Join = Field("none", description="input: each output record carries its input")
    input_filter: str | None = Field(
        None, max_length=10_000, description="JMESPath over each record, before the model"
    )
    output_filter: str | None = Field(
        None, max_length=10_000, description="JMESPath over each result, after the model"
    )
    content_type: str | None = Field(
        None, max_length=200, description="the input format when file names do not tell it"
    )
    priority: int = Field(
        DEFAULT_PRIORITY, ge=-1000, le=1000, description="queue priority of the job's chunks"
    )

    def to_json(self) -> dict[str, Any]:
        return self.model_dump()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Options:
        return cls.model_validate(data)


__all__ = ["Options"]
