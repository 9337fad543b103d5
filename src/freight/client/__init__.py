"""The Python client for freight's HTTP API, blocking (:class:`Client`) and asyncio
(:class:`AsyncClient`), with the same methods.

    with freight.Client() as client:                    # $FREIGHT_URL or localhost:8000
        print(client.run("echo", {"x": 1}))             # real-time: the output
        print(client.run_pipeline("claim", {"x": 1}))   # a pipeline, in real time
        handle = client.predict("digits", file="7.png") # asynchronous: upload, queue
        print(handle.wait(timeout=60).status, handle.output())

Errors: every error the server reports, and every failure to reach it, is a
:class:`FreightClientError` (a ``freight.errors.FreightError``) carrying the
HTTP ``status`` (0 when there was no response), the API's stable ``code`` and
its ``detail``; a 429 also carries ``retry_after_s``. ``handle.wait(timeout)``
raises the built-in ``TimeoutError``; invalid arguments raise ``ValueError``.

Following: ``handle.wait()`` long-polls (``GET /v1/predictions/{id}?wait=``: the server
holds the answer until the prediction ends); ``client.events(id)`` yields each
:class:`StreamEvent` of its server-sent event stream, resuming a dropped connection
where it left off (``client.events(id, logs=True)``: each line the model prints too,
a :class:`LogEvent`).

Streaming: ``for chunk in client.stream("teller", {"n": 10})`` runs a model whose
``predict`` is a generator and yields each chunk as the model yields it (``async for``
on an :class:`AsyncClient`); ``client.events(id, chunks=True)`` follows a queued one's
chunks as :class:`ChunkEvent`s.

Batch jobs run a model or pipeline over whole files (JSON Lines, CSV):

    job = client.batch("tabular", "rows/", output="freight://results/run1/")
    job = client.wait_batch_job(job.id)                 # polled until terminal
    for out in job.outputs:                             # one per input file
        client.download(out.output_url, f"results/{out.name}")
"""

from __future__ import annotations

from freight.client._async import AsyncClient, AsyncPredictionHandle
from freight.client._chunks import Chunk, ChunkEvent
from freight.client._flows import BatchJobOptions
from freight.client._logs import LogEvent, LogLine
from freight.client._models import (
    BATCH_TERMINAL_STATUSES,
    TERMINAL_STATUSES,
    BatchCounts,
    BatchInput,
    BatchJob,
    BatchOptions,
    BatchOutput,
    BatchOutputLocation,
    CallbackAnswered,
    CallbackInfo,
    Created,
    Delivery,
    DeliveryTry,
    ErrorInfo,
    FreightClientError,
    Metrics,
    ModelInfo,
    Notifications,
    PipelineInfo,
    PipelineStepInfo,
    Prediction,
    StepInfo,
    StepItem,
    StreamEvent,
    UsageLine,
)
from freight.client._sync import Client, PredictionHandle

__all__ = [
    "BATCH_TERMINAL_STATUSES",
    "TERMINAL_STATUSES",
    "AsyncClient",
    "AsyncPredictionHandle",
    "BatchCounts",
    "BatchInput",
    "BatchJob",
    "BatchJobOptions",
    "BatchOptions",
    "BatchOutput",
    "BatchOutputLocation",
    "CallbackAnswered",
    "CallbackInfo",
    "Chunk",
    "ChunkEvent",
    "Client",
    "Created",
    "Delivery",
    "DeliveryTry",
    "ErrorInfo",
    "FreightClientError",
    "LogEvent",
    "LogLine",
    "Metrics",
    "ModelInfo",
    "Notifications",
    "PipelineInfo",
    "PipelineStepInfo",
    "Prediction",
    "PredictionHandle",
    "StepInfo",
    "StepItem",
    "StreamEvent",
    "UsageLine",
]
