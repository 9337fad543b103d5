"""``/v1/models``: the served models, and real-time prediction against one."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from starlette.responses import Response, StreamingResponse

from freight.api import deps
from freight.api.bodies import body_stream, content_type_of, read_json
from freight.api.errors import error_response
from freight.api.routes.predictions import respond
from freight.api.schemas import ERRORS, ModelList
from freight.errors import InvalidRequestError
from freight.media import is_json_type
from freight.model import InputKind
from freight.prediction import Prediction, Status
from freight.service import CreateOptions, NewInput

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("", response_model=ModelList)
async def list_models(request: Request) -> Response:
    svc = deps.service(request)
    agent = deps.agent(request)
    stats = await svc.store.stats()
    data: list[dict[str, Any]] = []
    for name, spec in sorted(svc.specs.items()):
        worker = agent.workers.get(name) if agent else None
        backlog = stats.get(name)
        data.append(
            {
                "name": name,
                "input_kind": spec.input_kind,
                "batching": {
                    "max_size": spec.batching.max_size,
                    "max_wait_ms": spec.batching.max_wait_ms,
                },
                "replicas": {
                    "min": spec.replicas.min,
                    "max": spec.replicas.max,
                    "running": worker.ready_replicas if worker else 0,
                },
                "backlog": {
                    "queued": backlog.queued if backlog else 0,
                    "running": backlog.running if backlog else 0,
                    "awaiting_input": backlog.awaiting_input if backlog else 0,
                },
                "load_error": worker.load_error if worker else None,
            }
        )
    return Response(orjson.dumps({"data": data}), media_type="application/json")


def _realtime_output(row: Prediction, chunks: Any) -> Response:
    headers = {"X-Freight-Prediction-Id": row.id}
    if row.output_json is not None:
        return Response(row.output_json.encode(), media_type="application/json", headers=headers)
    if row.output_bytes is not None:
        headers["Content-Length"] = str(row.output_bytes)
    return StreamingResponse(
        chunks,
        media_type=row.output_content_type or "application/octet-stream",
        headers=headers,
    )


@router.post(
    "/{name}/predict",
    responses={
        **ERRORS,
        202: {"description": "not done by the deadline"},
        424: {"description": "the prediction failed"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    },
)
async def predict(
    request: Request,
    name: str,
    timeout: Annotated[float | None, Query(gt=0, description="deadline in seconds")] = None,
) -> Response:
    """Real-time: the model's output inline; past the deadline, 202 with the prediction."""
    svc = deps.service(request)
    spec = svc.spec(name)
    content_type = content_type_of(request)
    if is_json_type(content_type):
        new_input = NewInput(
            json=await read_json(request, svc.settings.max_json_bytes), has_json=True
        )
    elif spec.input_kind == InputKind.JSON:
        raise InvalidRequestError(
            f"model {name!r} takes application/json, not {content_type or 'no content type'!r}",
            code="unsupported_media_type",
        )
    else:
        new_input = NewInput(
            data=body_stream(request, svc.settings.max_payload_bytes),
            content_type=content_type or "application/octet-stream",
        )
    row = await svc.create(name, new_input, CreateOptions())
    row = await svc.wait(row.id, timeout or svc.settings.realtime_timeout_s)
    if row.status == Status.SUCCEEDED:
        chunks = await svc.open_output(row) if row.output_json is None else None
        return _realtime_output(row, chunks)
    if row.status.terminal:
        detail = orjson.loads(row.error_detail) if row.error_detail else {}
        return error_response(
            424,
            row.error_code or "failed",
            row.error_message or "the prediction failed",
            {**detail, "prediction_id": row.id},
            headers={"X-Freight-Prediction-Id": row.id},
        )
    return await respond(request, row, 202)
