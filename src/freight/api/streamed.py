"""Real-time answers that stream a prediction's chunks as they are yielded: what the
real-time route (``POST /v1/models/{name}/predict``) and SageMaker's
``invocations-response-stream`` share, so that no route imports another.

Each follows the prediction it just created through :func:`freight.streams.events`
(with ``chunks``), like ``GET /v1/predictions/{id}/events``: a prediction queued behind a
cold start (a model at zero replicas) is waited for, never answered with an empty
stream. Three forms:

- :func:`sse_response`: server-sent events (``Accept: text/event-stream``), the same
  events and ids as the prediction's event stream with ``?chunks=true``, so a client
  whose connection drops resumes there with ``Last-Event-ID``; a comment line every
  :data:`KEEPALIVE_S` while nothing happens (a cold start), and the connection ends
  after ``max_wait_s`` like the event stream's;
- :func:`byte_chunks`: the chunks alone, for a body of bytes (chunked transfer
  encoding) or AWS's event stream. Nothing is sent before the first chunk, so a
  prediction that fails before it answers with its error status; one that fails after
  it raises :class:`StreamBroken` (the body ends abruptly: the client sees the
  transfer cut short, the only way HTTP/1.1 has to say so).

Each holds one of the process's ``max_event_streams`` slots while it streams (checked
before the prediction is created: 503 ``too_many_streams``, and nothing queued).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import orjson
from fastapi.sse import KEEPALIVE_COMMENT, format_sse_event
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Send

from freight import streams
from freight.api.params import StreamSlots, stream_slots
from freight.api.render import sse_events
from freight.errors import PredictionFailedError
from freight.prediction import Prediction, Status
from freight.service import PredictionService
from freight.streaming import Chunk

log = logging.getLogger("freight.api")

EVENT_STREAM = "text/event-stream"
#: a comment line this often while the stream has nothing to send (as the event stream)
KEEPALIVE_S = 15.0
#: headers of every streamed answer: no cache, no proxy buffering
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class StreamBroken(Exception):
    """The prediction failed after its first chunk was sent: the body is cut short."""


class CutShortResponse(StreamingResponse):
    """A body of chunks that ends without its last (empty) piece when the prediction
    fails mid-stream (:class:`StreamBroken`): the server closes the connection, and the
    client sees the transfer incomplete. Logged as one warning, not as a server error."""

    async def stream_response(self, send: Send) -> None:
        start = {"type": "http.response.start", "status": self.status_code}
        await send({**start, "headers": self.raw_headers})
        try:
            async for piece in self.body_iterator:
                data = piece.encode(self.charset) if isinstance(piece, str) else piece
                await send({"type": "http.response.body", "body": data, "more_body": True})
        except StreamBroken as exc:
            log.warning("%s", exc)
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def reserve(request: Request, svc: PredictionService) -> StreamSlots:
    """The process's stream slots, one of them free (503 ``too_many_streams`` else):
    checked before the prediction is created."""
    slots = stream_slots(request, svc.limits.max_event_streams)
    slots.check()
    return slots


async def _held(slots: StreamSlots, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """``body`` holding a slot while it is iterated (a body never started holds none)."""
    slots.open += 1
    try:
        async for piece in body:
            yield piece
    finally:
        slots.open -= 1


async def _next(body: AsyncIterator[bytes]) -> bytes | None:
    return await anext(body, None)


async def _keepalive(body: AsyncIterator[bytes], every_s: float) -> AsyncIterator[bytes]:
    """``body``, with a keep-alive comment whenever it is silent ``every_s``."""
    pending: asyncio.Task[bytes | None] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.create_task(_next(body))
            done, _ = await asyncio.wait([pending], timeout=every_s)
            if not done:
                yield KEEPALIVE_COMMENT
                continue
            task, pending = pending, None
            piece = task.result()
            if piece is None:
                return
            yield piece
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pending


def _events(svc: PredictionService, row: Prediction, max_s: float | None) -> Any:
    return streams.events(svc, row.id, chunks=True, poll_s=svc.limits.event_poll_s, max_s=max_s)


async def _sse(request: Request, svc: PredictionService, row: Prediction) -> AsyncIterator[bytes]:
    async for sent in sse_events(request, _events(svc, row, svc.limits.max_wait_s)):
        yield format_sse_event(data_str=sent.raw_data, event=sent.event, id=sent.id)


def sse_response(
    request: Request, svc: PredictionService, slots: StreamSlots, row: Prediction
) -> StreamingResponse:
    """The prediction's events with its chunks, as server-sent events."""
    body = _held(slots, _keepalive(_sse(request, svc, row), KEEPALIVE_S))
    headers = {**STREAM_HEADERS, "X-Freight-Prediction-Id": row.id}
    return StreamingResponse(body, media_type=EVENT_STREAM, headers=headers)


def _failure(row: Prediction) -> PredictionFailedError:
    detail = orjson.loads(row.error_detail) if row.error_detail else {}
    return PredictionFailedError(
        row.error_message or f"the prediction {row.status}",
        code=row.error_code or str(row.status),
        prediction_id=row.id,
        **detail,
    )


async def _chunks(svc: PredictionService, row: Prediction) -> AsyncGenerator[Chunk, None]:
    """Its chunks until it ends; PredictionFailedError at the end of one that did not
    succeed (its error: ``model_error``, ``canceled``...)."""
    async for event in _events(svc, row, None):
        if event.chunk is not None:
            yield event.chunk
        elif event.final and event.prediction.status != Status.SUCCEEDED:
            raise _failure(event.prediction)


async def byte_chunks(
    svc: PredictionService, slots: StreamSlots, row: Prediction
) -> tuple[Chunk | None, AsyncIterator[Chunk]]:
    """The prediction's first chunk (None: it succeeded without one) once it is there,
    and an iterator of all its chunks, the first among them. A prediction that failed
    before any chunk raises PredictionFailedError here, before anything is sent; one
    that fails later raises :class:`StreamBroken` (its error the cause) from the
    iterator."""
    chunks = _chunks(svc, row)
    try:
        first = await anext(chunks, None)
    except BaseException:
        await chunks.aclose()
        raise

    async def rest() -> AsyncIterator[Chunk]:
        slots.open += 1
        try:
            if first is None:
                return
            yield first
            async for chunk in chunks:
                yield chunk
        except PredictionFailedError as exc:
            raise StreamBroken(f"prediction {row.id} failed mid-stream: {exc}") from exc
        finally:
            slots.open -= 1
            await chunks.aclose()

    return first, rest()


__all__ = [
    "EVENT_STREAM",
    "KEEPALIVE_S",
    "STREAM_HEADERS",
    "CutShortResponse",
    "StreamBroken",
    "byte_chunks",
    "reserve",
    "sse_response",
]
