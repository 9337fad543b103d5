"""HTTP rendering: JSON responses of the prediction object (see :mod:`freight.views`),
with its presigned URLs made absolute: what every route that answers with a
prediction (or streams one) shares, so that no route imports another."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from fastapi.sse import ServerSentEvent
from starlette.requests import Request
from starlette.responses import Response

from freight.api import deps
from freight.logs import LogLine
from freight.prediction import Prediction, Status
from freight.streaming import BYTES, Chunk, value_of
from freight.streams import StreamEvent
from freight.subscriptions import DeliveryView
from freight.views import iso, prediction_dict, steps_dict

__all__ = [
    "absolute",
    "chunk_dict",
    "delivery_dict",
    "iso",
    "json_response",
    "line_dict",
    "prediction_dict",
    "rendered",
    "respond",
    "sse_events",
    "steps_dict",
]


def json_response(
    body: Any, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps(body),
        status_code=status_code,
        media_type="application/json",
        headers=headers,
    )


def absolute(request: Request) -> Callable[[str], str]:
    """Makes a presigned URL absolute with this request's (or the public) base URL."""
    return lambda url: deps.absolute(request, url)


async def rendered(
    request: Request, row: Prediction, upload_url: str | None = None
) -> dict[str, Any]:
    """The prediction object (:func:`freight.views.render`, as notifications render it);
    a pipeline run also gets its steps map (one more query, plus a presigned URL per
    step whose output is not inline)."""
    return await deps.service(request).view(row, absolute(request), upload_url=upload_url)


async def respond(request: Request, row: Prediction, status_code: int | None = None) -> Response:
    """Render a prediction with its presigned URLs made absolute."""
    upload_url = None
    if row.status == Status.AWAITING_INPUT and row.upload_expires_at is not None:
        path = f"/v1/predictions/{row.id}/input"
        upload_url = deps.signer(request).sign_until("PUT", path, row.upload_expires_at)
    body = await rendered(request, row, deps.absolute(request, upload_url) if upload_url else None)
    if status_code is None:
        status_code = 200 if row.status.terminal else 202
    return json_response(body, status_code)


def delivery_dict(view: DeliveryView) -> dict[str, Any]:
    """One event for one subscription, with its tries, as the API shows it."""
    return {
        "id": view.id,
        "sink": view.sink,
        "event_id": view.event_id,
        "event": view.event_type,
        "status": str(view.status),
        "attempts": view.attempts,
        "last_code": view.last_code,
        "last_error": view.last_error,
        "next_at": iso(view.next_at),
        "finished_at": iso(view.finished_at),
        "created_at": iso(view.created_at),
        "tries": [
            {
                "attempt": t.attempt,
                "at": iso(t.at),
                "status_code": t.status_code,
                "error": t.error,
                "next_at": iso(t.next_at),
                "latency_ms": t.latency_ms,
                "response": t.response,
            }
            for t in view.tries
        ],
    }


def chunk_dict(chunk: Chunk) -> dict[str, Any]:
    """One streamed chunk as the API shows it (a ``chunk`` event's data): ``data`` the
    text, the JSON value, or (``kind`` ``bytes``) the bytes in base64."""
    return {
        "prediction_id": chunk.prediction_id,
        "seq": chunk.seq,
        "at": chunk.at,
        "attempt": chunk.attempt,
        "kind": chunk.kind,
        "data": chunk.data if chunk.kind == BYTES else value_of(chunk.kind, chunk.data),
    }


async def sse_events(
    request: Request, events: AsyncIterator[StreamEvent]
) -> AsyncIterator[ServerSentEvent]:
    """A prediction's stream events (:mod:`freight.streams`) as server-sent events: a
    rung's data the prediction object (the events of one read share its row: rendered
    once, a run's object reads every row of the run), a line's the line, a chunk's the
    chunk; the id its cursor."""
    last: tuple[Prediction | None, dict[str, Any]] = (None, {})
    async for event in events:
        if event.line is not None:
            body = line_dict(event.line)
        elif event.chunk is not None:
            body = chunk_dict(event.chunk)
        else:
            if event.prediction is not last[0]:
                last = (event.prediction, await rendered(request, event.prediction))
            body = last[1]
        yield ServerSentEvent(
            id=str(event.cursor), event=event.type, raw_data=orjson.dumps(body).decode()
        )


def line_dict(line: LogLine) -> dict[str, Any]:
    """One log line as the API shows it (``GET /logs``'s items, a ``log`` event's data)."""
    return {
        "seq": line.seq,
        "at": line.at,
        "attempt": line.attempt,
        "stream": line.stream,
        "level": line.level,
        "phase": line.phase,
        "text": line.text,
        "dropped": line.dropped,
    }
