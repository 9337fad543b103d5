"""``/v1/models``: the served models, and real-time prediction against one.

Real-time prediction answers the output once it is there, or streams: with ``Accept:
text/event-stream`` the prediction's events with a streaming model's chunks as they
are yielded (and any model's end); with ``Accept: application/octet-stream`` or
``text/plain`` first, a streaming model's chunks as the bytes of the body, as they are
yielded (:mod:`freight.api.streamed`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response, StreamingResponse

from freight.api import deps, streamed
from freight.api.bodies import body_stream, content_type_of, read_json
from freight.api.errors import responses
from freight.api.params import WEBHOOK_PARAMETERS, webhook_of
from freight.api.render import json_response, respond
from freight.api.schemas import ModelList, ModelOut, PredictionOut
from freight.errors import (
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    PredictionFailedError,
    QueueFullError,
    StorageError,
    TooManyStreamsError,
    UnsupportedMediaTypeError,
)
from freight.fleet import ModelState
from freight.media import OCTET_STREAM, is_json_type
from freight.service import CreateOptions, NewInput, PredictionService
from freight.streaming import as_bytes
from freight.system import ModelInfo
from freight.views import iso

router = APIRouter(prefix="/v1/models", tags=["models"])


def _model_dict(info: ModelInfo) -> dict[str, Any]:
    spec, backlog, state = info.spec, info.backlog, info.state
    ready = state.ready_replicas if state else 0
    return {
        "name": spec.name,
        "input_kind": spec.input_kind,
        "streams": spec.streams,
        "stream_output": spec.stream_output if spec.streams else None,
        "batching": {"max_size": spec.batching.max_size, "max_wait_ms": spec.batching.max_wait_ms},
        "replicas": {
            "min": spec.replicas.min,
            "max": spec.replicas.max,
            "target_backlog": spec.replicas.target_backlog,
            "idle_s": spec.replicas.idle_s,
            "gpus": spec.resources.gpus,
            "running": ready,  # loaded (the field older clients read)
            "ready": ready,
            "starting": state.starting if state else 0,
            "busy": state.busy if state else 0,
            "total": state.replicas if state else 0,
            "desired": state.desired if state else None,
        },
        "backlog": {
            "queued": backlog.queued,
            "running": backlog.running,
            "awaiting_input": backlog.awaiting_input,
        },
        "load_error": state.load_error if state else None,
        "scaling": _scaling_dict(state) if state else None,
    }


def _scaling_dict(state: ModelState) -> dict[str, Any]:
    change = state.last_change
    return {
        "served": state.served,
        "not_served": state.not_served,
        "reason": state.reason,
        "last_change": None
        if change is None
        else {
            "from": change.before,
            "to": change.after,
            "reason": change.reason,
            "at": iso(change.at),
        },
        "cold_starts": [
            {
                "seconds": round(c.seconds, 3),
                "load_s": None if c.load_s is None else round(c.load_s, 3),
                "at": iso(c.at),
            }
            for c in state.cold_starts
        ],
    }


def _streamed_as(request: Request, svc: PredictionService, name: str) -> str | None:
    """How the answer streams, by ``Accept``: ``text/event-stream`` (any model: its
    events), a streaming model's bytes (``application/octet-stream`` or ``text/plain``
    asked first), or None: the output once it is there."""
    accept = request.headers.get("accept", "")
    asked = [kind.split(";")[0].strip().lower() for kind in accept.split(",")]
    if streamed.EVENT_STREAM in asked:
        return streamed.EVENT_STREAM
    if asked[0] in (OCTET_STREAM, "text/plain") and svc.streams(name):
        return asked[0]
    return None


@router.get("", response_model=ModelList, responses=responses())
async def list_models(request: Request, who: deps.Reader) -> Response:
    """Every served model (a key limited to some: those): batching, replicas, backlog,
    and a load error if any."""
    infos = await deps.system(request).models()
    return json_response({"data": [_model_dict(i) for i in infos if who.may_use(i.spec.name)]})


@router.get("/{name}", response_model=ModelOut, responses=responses(NotFoundError))
async def get_model(request: Request, who: deps.Reader, name: str) -> Response:
    """One served model: its replicas and the autoscaler's last word on them."""
    if not who.may_use(name):  # as for a model that does not exist
        raise NotFoundError(f"no model named {name!r}", code="unknown_target", target=name)
    info = await deps.system(request).model(name)
    return json_response(_model_dict(info))


@router.post(
    "/{name}/predict",
    responses={
        **responses(
            InvalidRequestError,
            NotFoundError,
            PayloadTooLargeError,
            UnsupportedMediaTypeError,
            PredictionFailedError,
            QueueFullError,
            StorageError,
            TooManyStreamsError,
        ),
        200: {
            "description": "the model's output: JSON, or its bytes; streamed by `Accept`: "
            "`text/event-stream`, the prediction's events with a streaming model's "
            "`chunk` events (as `GET /v1/predictions/{id}/events?chunks=true`); "
            "`application/octet-stream` or `text/plain`, a streaming model's chunks as "
            "the body's bytes (cut short if the model fails after its first chunk)",
            "content": {
                "application/json": {},
                OCTET_STREAM: {},
                "text/event-stream": {},
                "text/plain": {},
            },
        },
        202: {"description": "not done by the deadline", "model": PredictionOut},
    },
    openapi_extra={
        "parameters": WEBHOOK_PARAMETERS,
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {}},
                OCTET_STREAM: {"schema": {"type": "string", "format": "binary"}},
            },
        },
    },
)
async def predict(
    request: Request,
    who: deps.Predictor,
    name: str,
    timeout: Annotated[float | None, Query(gt=0, description="deadline in seconds")] = None,
) -> Response:
    """Real-time: the model's output inline; past the deadline, 202 with the prediction;
    a failed prediction answers 424 with its own error. Streamed by ``Accept`` (the
    deadline does not apply): see the module's docstring."""
    svc = deps.service(request)
    svc.allow(who, name)
    content_type = content_type_of(request)
    svc.check_media_type(name, content_type)
    if is_json_type(content_type):
        body = await read_json(request, svc.limits.max_json_bytes)
        new_input = NewInput(json=body, has_json=True)
    else:
        new_input = NewInput(
            data=body_stream(request, svc.limits.max_payload_bytes),
            content_type=content_type or OCTET_STREAM,
        )
    form = _streamed_as(request, svc, name)
    if form is not None:
        slots = streamed.reserve(request, svc)
        options = CreateOptions(webhook=webhook_of(request))
        row = await svc.create(name, new_input, options, who=who)
        if form == streamed.EVENT_STREAM:
            return streamed.sse_response(request, svc, slots, row)
        _, chunks = await streamed.byte_chunks(svc, slots, row)
        body = (as_bytes(chunk.kind, chunk.data) async for chunk in chunks)
        headers = {**streamed.STREAM_HEADERS, "X-Freight-Prediction-Id": row.id}
        media_type = "text/plain; charset=utf-8" if form == "text/plain" else OCTET_STREAM
        return streamed.CutShortResponse(body, media_type=media_type, headers=headers)
    row = await svc.run(name, new_input, timeout, webhook=webhook_of(request), who=who)
    if not row.status.terminal:
        return await respond(request, row, 202)
    headers = {"X-Freight-Prediction-Id": row.id}
    if row.output_json is not None:
        return Response(row.output_json.encode(), media_type="application/json", headers=headers)
    output = svc.open_output(row)
    if output.size is not None:
        headers["Content-Length"] = str(output.size)
    return StreamingResponse(output.chunks, media_type=output.content_type, headers=headers)
