"""``/v1/predictions/{id}/events`` (server-sent events) and ``/deliveries``.

The stream is FastAPI's own SSE support (``EventSourceResponse`` on a generator
route): it sets ``Cache-Control: no-cache`` and ``X-Accel-Buffering: no`` and
sends a keep-alive comment every 15 s, so idle proxies keep the connection.
What the events are and why their ids survive a reconnect is
:mod:`freight.streams`; this module only renders them. An unknown prediction
must be a 404, not a 200 stream that breaks: a dependency looks it up before
the response starts.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent
from starlette.responses import Response

from freight import streams
from freight.api import deps
from freight.api.errors import responses
from freight.api.render import iso, json_response, rendered
from freight.api.schemas import DeliveryList
from freight.errors import FreightError, NotFoundError
from freight.service import DeliveryView, PredictionService

router = APIRouter(prefix="/v1/predictions", tags=["predictions"])
log = logging.getLogger("freight.api")
ERROR_SCHEMA = "#/components/schemas/ErrorBody"
#: a connection's longest life where the service does not say (the settings' default)

_EVENTS_DOC = """\
One event per stage the prediction reached, oldest first, then live until it
ends: `event` is the status reached (`awaiting_input`, `queued`, `running`, then
`succeeded`, `failed`, `canceled` or `expired`: the stream's last event), or
`step.<status>` for a step of a pipeline run; `data` is the prediction object (a
step's own, for a step event) as `GET /v1/predictions/{id}` renders it when the
event is sent; `id` counts from 1 within the prediction. A comment line is sent
every 15 s while nothing happens. A connection also ends after the server's
longest wait (`max_wait_s`): reconnect with `Last-Event-ID` (or `?after=`) to
resume without repeats."""


def _held_s(svc: PredictionService) -> float:
    """How long one connection follows (then the client resumes): as long as the server
    holds any request, ``max_wait_s``."""
    return svc.limits.max_wait_s


def _json_errors(documented: dict[int | str, dict[str, Any]]) -> dict[int | str, dict[str, Any]]:
    """Error answers are JSON even on a route whose success is an event stream (FastAPI
    would document a ``model`` under the route's own media type)."""
    return {
        status: {
            "description": entry["description"],
            "content": {"application/json": {"schema": {"$ref": ERROR_SCHEMA}}},
        }
        for status, entry in documented.items()
    }


async def _known(request: Request, prediction_id: str) -> None:
    """404 before the stream starts (an SSE response cannot change its status later)."""
    await deps.service(request).get(prediction_id)


def _sse(event: streams.StreamEvent, body: dict[str, Any]) -> ServerSentEvent:
    return ServerSentEvent(id=str(event.id), event=event.type, raw_data=orjson.dumps(body).decode())


@router.get(
    "/{prediction_id}/events",
    response_class=EventSourceResponse,
    description=_EVENTS_DOC,
    responses={
        **_json_errors(responses(NotFoundError)),
        200: {
            "description": "the event stream; each event's `data` is a prediction object",
            "content": {
                "text/event-stream": {
                    "itemSchema": {
                        "type": "object",
                        "required": ["event", "data", "id"],
                        "properties": {
                            "event": {"type": "string"},
                            "id": {"type": "string", "pattern": "^[0-9]+$"},
                            "data": {
                                "type": "string",
                                "contentMediaType": "application/json",
                                "contentSchema": {"$ref": "#/components/schemas/PredictionOut"},
                            },
                        },
                    }
                }
            },
        },
    },
)
async def prediction_events(
    request: Request,
    prediction_id: str,
    _: Annotated[None, Depends(_known)],
    after: Annotated[
        int | None, Query(ge=0, description="resume after this event id (or Last-Event-ID)")
    ] = None,
    last_event_id: Annotated[int | None, Header(alias="Last-Event-ID", ge=0)] = None,
) -> AsyncIterator[ServerSentEvent]:
    """Follow a prediction as server-sent events, from its start or a given event on."""
    resume = last_event_id if last_event_id is not None else after
    svc = deps.service(request)
    try:
        async for event in streams.events(svc, prediction_id, resume, max_s=_held_s(svc)):
            yield _sse(event, await rendered(request, event.prediction))
    except FreightError as exc:  # the store went away mid-stream: the client resumes
        log.warning("event stream of %s ended early: %s", prediction_id, exc)


def _delivery(view: DeliveryView) -> dict[str, Any]:
    return {
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
            }
            for t in view.tries
        ],
    }


@router.get(
    "/{prediction_id}/deliveries",
    response_model=DeliveryList,
    responses=responses(NotFoundError),
)
async def prediction_deliveries(request: Request, prediction_id: str) -> Response:
    """Each notification of the prediction (one per event and subscription): its status,
    attempts and the last answer, with every try; empty when nobody subscribed."""
    views = await deps.service(request).deliveries(prediction_id)
    return json_response({"data": [_delivery(view) for view in views]})
