"""Pure translation between claimed rows, runner frames and completions (no I/O).

Why pure: what a batch's result means for the queue (which rows succeed, which
objects the agent must store, what fails and with which code) is the core of
the engine, so it is a function of its inputs alone, tested without processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from freight.keys import output_key
from freight.media import JSON
from freight.model import PredictionContext
from freight.prediction import Completion, ErrorCode, Kind, Prediction, Status
from freight.runner.protocol import (
    Batch,
    BatchItem,
    Failed,
    Inline,
    Result,
    ResultItem,
    Stored,
)

#: objects the agent writes for a batch (``storage.put_many``): ``(key, data)``
Objects = list[tuple[str, bytes]]


def job_of_chunk(chunk_id: str) -> str:
    """The batch job a chunk belongs to: chunk ids are ``{job}.{file}.{piece}``
    (:func:`freight.batch.job.chunk_id`), and job ids hold no dot."""
    return chunk_id.split(".", 1)[0]


def context(row: Prediction, deadline: float) -> PredictionContext:
    """What the model may read of a claimed row (``attempts`` is already this one's)."""
    return PredictionContext(
        prediction_id=row.id,
        attempt=row.attempts,
        max_attempts=row.max_attempts,
        deadline=deadline,
        run_id=row.run_id,
        step=row.step,
        item_index=row.item_index,
        job_id=job_of_chunk(row.id) if row.kind == Kind.CHUNK else None,
    )


def batch_item(row: Prediction, deadline: float) -> BatchItem:
    """What a runner needs to read one input (inline JSON or an object key) and to tell
    the model which prediction it runs, until when."""
    return BatchItem(
        id=row.id,
        input_json=row.input_json,
        input_key=row.input_key,
        content_type=row.input_content_type,
        size=row.input_bytes,
        context=context(row, deadline),
    )


def batch(rows: Sequence[Prediction], deadline: float) -> Batch:
    """The rows as one runner batch; ``deadline`` (epoch seconds) is when the agent
    kills it."""
    return Batch(tuple(batch_item(row, deadline) for row in rows))


def _apply(done: Completion, item: ResultItem, objects: Objects) -> None:
    """Fill a fresh completion from its result item (appending what must be stored)."""
    if isinstance(item, Failed):
        done.error_code = item.code
        done.error_message = item.message
        done.error_detail = orjson.dumps(item.detail).decode()
        return
    done.status = Status.SUCCEEDED
    if isinstance(item, Stored):
        done.output_key, done.output_content_type = item.key, item.content_type
        done.output_bytes, done.output_json = item.size, item.inline_json
        return
    if isinstance(item, Inline):
        data = item.json.encode()
        done.output_json, done.output_content_type = item.json, JSON
    else:  # HandedBack
        data = item.data
        done.output_content_type = item.content_type
    done.output_key = output_key(item.id)
    done.output_bytes = len(data)
    objects.append((done.output_key, data))


def outcome(
    rows: Sequence[Prediction],
    result: Result,
    worker_id: str,
    now: float,
) -> tuple[list[Completion], Objects]:
    """One completion per claimed row (a row the runner did not answer for fails), and
    the small outputs the runner handed back, to store *before* completing."""
    by_id: dict[str, ResultItem] = {item.id: item for item in result.items}
    done: list[Completion] = []
    objects: Objects = []
    for row in rows:
        completion = _base(row, worker_id, now, len(rows))
        item = by_id.get(row.id)
        if item is None:
            completion.error_code = ErrorCode.MODEL_ERROR
            completion.error_message = "the runner returned no result for this prediction"
        else:
            _apply(completion, item, objects)
        done.append(completion)
    return done, objects


def _base(row: Prediction, worker_id: str, now: float, size: int | None) -> Completion:
    return Completion(
        id=row.id,
        attempt=row.attempts,
        worker_id=worker_id,
        status=Status.FAILED,
        finished_at=now,
        batch_size=size,
    )


def cold_start_s(row: Prediction, loaded: tuple[float, float] | None) -> float:
    """How long ``row`` waited, queued, for its replica to load: the overlap of its
    wait (queued -> started) with that load (``loaded``: spawn and ready, epoch s)."""
    if loaded is None or row.queued_at is None or row.started_at is None:
        return 0.0
    began, ready = loaded
    return max(0.0, min(row.started_at, ready) - max(row.queued_at, began))


def charge(
    rows: Sequence[Prediction],
    completions: Sequence[Completion],
    *,
    wall_s: float,
    gpus: int,
    loaded: tuple[float, float] | None,
) -> None:
    """What the batch of ``rows`` cost, on their completions (the usage ledger): the
    replica's wall time shared equally (1/n each), its GPUs, each one's cold start."""
    share = wall_s / len(rows) if rows else 0.0
    by_id = {row.id: row for row in rows}
    for done in completions:
        done.compute_s, done.gpus = share, gpus
        row = by_id.get(done.id)
        done.cold_start_s = cold_start_s(row, loaded) if row is not None else 0.0


def failed(
    rows: Sequence[Prediction],
    worker_id: str,
    now: float,
    code: str,
    message: str,
    detail: dict[str, Any] | None = None,
    *,
    ran: bool = True,
) -> list[Completion]:
    """Every row failed with one code (timeout, model unavailable, ...); rows that never
    reached a model (``ran=False``) have no batch size."""
    size = len(rows) if ran else None
    text = orjson.dumps(detail).decode() if detail is not None else None
    completions = [_base(row, worker_id, now, size) for row in rows]
    for completion in completions:
        completion.error_code, completion.error_message = code, message
        completion.error_detail = text
    return completions


__all__ = [
    "Objects",
    "batch",
    "batch_item",
    "charge",
    "cold_start_s",
    "context",
    "failed",
    "job_of_chunk",
    "outcome",
]
