"""``/v1/predictions/{id}/events`` (server-sent events) and ``/deliveries``.

The stream is FastAPI's own SSE support (``EventSourceResponse`` on a generator
route): it sets ``Cache-Control: no-cache`` and ``X-Accel-Buffering: no`` and
sends a keep-alive comment every 15 s, so idle proxies keep the connection.
What the events are and why their ids survive a reconnect is
:mod:`freight.streams`; this module only renders them (a ``log`` event's data is the
line as ``GET /logs`` shows it). An unknown prediction
must be a 404, not a 200 stream that breaks: a dependency looks it up before
the response starts. Another one holds one of the process's
``max_event_streams`` slots for the life of the response, and answers 503
``too_many_streams`` (with ``Retry-After``) past the bound, before the stream.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent
from starlette.responses import Response

from freight import streams
from freight.api import deps
from freight.api.errors import responses
from freight.api.params import stream_slots
from freight.api.render import delivery_dict, json_response, sse_events
from freight.api.schemas import DeliveryList
from freight.errors import FreightError, NotFoundError, TooManyStreamsError
from freight.service import PredictionService

router = APIRouter(prefix="/v1/predictions", tags=["predictions"])
log = logging.getLogger("freight.api")
ERROR_SCHEMA = "#/components/schemas/ErrorBody"
#: an event id as the server takes it back (``Last-Event-ID``): the rungs sent, then
#: ``-`` and the last log line's seq once a line was sent, then ``-`` and the last
#: chunk's once a chunk was (``3``, ``3-17``, ``3-17-5``), as it sends them; 18 digits
#: stay below 2**63, far past any stream's count
EVENT_ID_PATTERN = r"^[0-9]{1,18}(-[0-9]{1,18}){0,2}$"

_EVENTS_DOC = """\
One event per stage the prediction reached, oldest first, then live until it
ends: `event` is the status reached (`awaiting_input`, `queued`, `running`, then
`succeeded`, `failed`, `canceled` or `expired`: the stream's last event), or
`step.<status>` for a step of a pipeline run; `data` is the prediction object (a
step's own, for a step event) as `GET /v1/predictions/{id}` renders it when the
event is sent; `id` counts from 1 within the prediction. Between them, each line
the model prints or logs is a `log` event when asked for (`?logs=true`; never on a
pipeline run's stream), its `data` a line as `GET /v1/predictions/{id}/logs` shows
it; from the first line on, `id` also carries the last line's `seq` after a dash
(`3-17`). A streaming model's chunks are `chunk` events when asked for
(`?chunks=true`), each as the model yields it, all before the final event: `data`
`{prediction_id, seq, at, attempt, kind, data}` (`kind` `text`, `json` or `bytes`,
whose `data` is base64); from the first chunk on, `id` carries the last chunk's `seq`
as a third count (`3-0-5`, `3-17-5`). A comment line is sent every 15 s while
nothing happens. A connection also ends after the server's longest wait
(`max_wait_s`): reconnect with `Last-Event-ID` (or `?after=`) to resume without
repeats or losses."""


def _held_s(svc: PredictionService) -> float:
    """How long one connection follows (then the client resumes): as long as the server
    holds any request, ``max_wait_s``."""
    return svc.limits.max_wait_s


def _json_errors(documented: dict[int | str, dict[str, Any]]) -> dict[int | str, dict[str, Any]]:
    """Error answers are JSON even on a route whose success is an event stream (FastAPI
    would document a ``model`` under the route's own media type)."""
    return {
        status: {
            **{k: v for k, v in entry.items() if k != "model"},
            "content": {"application/json": {"schema": {"$ref": ERROR_SCHEMA}}},
        }
        for status, entry in documented.items()
    }


async def _slot(request: Request) -> AsyncIterator[None]:
    """Hold a slot for the whole response (``scope="request"``: released once the stream
    ended or the client left); 503 past the bound, before the stream starts."""
    slots = stream_slots(request, deps.service(request).limits.max_event_streams)
    slots.check()
    slots.open += 1
    try:
        yield
    finally:
        slots.open -= 1


async def _known(request: Request, who: deps.Reader, prediction_id: str) -> None:
    """404 before the stream starts (an SSE response cannot change its status later)."""
    await deps.service(request).get(prediction_id, who)


@router.get(
    "/{prediction_id}/events",
    response_class=EventSourceResponse,
    description=_EVENTS_DOC,
    responses={
        **_json_errors(responses(NotFoundError, TooManyStreamsError)),
        200: {
            "description": "the event stream; each event's `data` is a prediction object "
            "(a log line for a `log` event)",
            "content": {
                "text/event-stream": {
                    "itemSchema": {
                        "type": "object",
                        "required": ["event", "data", "id"],
                        "properties": {
                            "event": {"type": "string"},
                            "id": {"type": "string", "pattern": EVENT_ID_PATTERN},
                            "data": {
                                "type": "string",
                                "contentMediaType": "application/json",
                                "contentSchema": {
                                    "oneOf": [
                                        {"$ref": "#/components/schemas/PredictionOut"},
                                        {"$ref": "#/components/schemas/LogLineOut"},
                                        {"$ref": "#/components/schemas/ChunkOut"},
                                    ]
                                },
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
    _found: Annotated[None, Depends(_known)],
    _held: Annotated[None, Depends(_slot, scope="request")],
    after: Annotated[
        str | None,
        Query(
            pattern=EVENT_ID_PATTERN,
            description="resume after this event id (or Last-Event-ID)",
        ),
    ] = None,
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            pattern=EVENT_ID_PATTERN,
            description="the last event id received: resume after it (over `after`)",
        ),
    ] = None,
    logs: Annotated[
        bool, Query(description="also the lines the model prints, as `log` events")
    ] = False,
    chunks: Annotated[
        bool, Query(description="also a streaming model's chunks, as `chunk` events")
    ] = False,
) -> AsyncIterator[ServerSentEvent]:
    """Follow a prediction as server-sent events, from its start or a given event on."""
    resume = last_event_id if last_event_id is not None else after
    svc = deps.service(request)
    events = streams.events(
        svc,
        prediction_id,
        None if resume is None else streams.Cursor.parse(resume),
        logs=logs,
        chunks=chunks,
        poll_s=svc.limits.event_poll_s,
        max_s=_held_s(svc),
    )
    try:
        async for sent in sse_events(request, events):
            yield sent
    except FreightError as exc:  # the store went away mid-stream: the client resumes
        log.warning("event stream of %s ended early: %s", prediction_id, exc)


@router.get(
    "/{prediction_id}/deliveries",
    response_model=DeliveryList,
    responses=responses(NotFoundError),
)
async def prediction_deliveries(request: Request, who: deps.Reader, prediction_id: str) -> Response:
    """Each notification of the prediction (one per event and subscription): its status,
    attempts and the last answer, with every try; empty when nobody subscribed."""
    views = await deps.service(request).deliveries(prediction_id, who)
    return json_response({"data": [delivery_dict(view) for view in views]})
