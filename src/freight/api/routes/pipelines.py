"""``/v1/pipelines``: the declared pipelines, and real-time runs of one.

A run is created and followed exactly like a real-time model prediction
(``POST /v1/models/{name}/predict``): the output inline, 202 with the run past
the deadline, 424 with the run's error when it failed. The name is checked to
be a pipeline first, so this route never runs a model that shares the URL
shape; pipelines take JSON only (their steps' inputs are templates over it).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response, StreamingResponse

from freight.api import deps
from freight.api.bodies import read_json
from freight.api.errors import responses
from freight.api.params import WEBHOOK_PARAMETERS, webhook_of
from freight.api.render import absolute, json_response, respond
from freight.api.schemas import PipelineList, PipelineOut, PredictionOut
from freight.errors import (
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    PredictionFailedError,
    QueueFullError,
    StorageError,
    UnsupportedMediaTypeError,
)
from freight.pipelines import PipelineSpec, StepSpec, mermaid
from freight.service import NewInput
from freight.views import has_references

router = APIRouter(prefix="/v1/pipelines", tags=["pipelines"])


def _step_dict(step: StepSpec) -> dict[str, Any]:
    return {
        "name": step.name,
        "target": step.target,
        "kind": step.kind,
        "needs": sorted(step.needs),
        "input": step.input,
        "when": step.when,
        "for_each": step.for_each,
        "max_concurrency": step.max_concurrency,
        "optional": step.optional,
        "timeout_s": step.timeout_s,
        "max_attempts": step.max_attempts,
        "retry": None
        if step.retry is None
        else {
            "on": sorted(step.retry.on),
            "max_attempts": step.retry.max_attempts,
            "interval_s": step.retry.interval_s,
            "backoff": step.retry.backoff,
            "max_interval_s": step.retry.max_interval_s,
            "jitter": step.retry.jitter,
        },
        "catch": [
            {"on": sorted(c.on) if c.on is not None else None, "then": c.then}
            | ({} if c.then is not None else {"default": c.default})
            for c in step.catch
        ],
        "handles": step.handles,
        "tolerate": None
        if step.tolerate is None
        else {"count": step.tolerate.count}
        if step.tolerate.count is not None
        else {"percent": step.tolerate.percent},
        "http": None
        if step.http is None
        else {
            "method": step.http.method,
            "url": step.http.url,
            "headers": {h.name: h.declared() for h in step.http.headers},
        },
        "callback": None
        if step.callback is None
        else {"heartbeat_s": step.callback.heartbeat_s, "schema": step.callback.schema},
    }


def pipeline_dict(spec: PipelineSpec) -> dict[str, Any]:
    """A pipeline as declared (templates verbatim), its steps in dependency order
    (the order a run creates them in) and its DAG as Mermaid text."""
    return {
        "name": spec.name,
        "timeout_s": spec.timeout_s,
        "output": spec.output,
        "steps": [_step_dict(spec.steps[name]) for name in spec.order],
        "graph": mermaid(spec),
    }


@router.get("", response_model=PipelineList, responses=responses())
async def list_pipelines(request: Request, who: deps.Reader) -> Response:
    """Every declared pipeline (a key limited to some: those), by name."""
    specs = deps.system(request).pipelines()
    return json_response({"data": [pipeline_dict(s) for s in specs if who.may_use(s.name)]})


@router.get("/{name}", response_model=PipelineOut, responses=responses(NotFoundError))
async def get_pipeline(request: Request, who: deps.Reader, name: str) -> Response:
    """One pipeline: its steps with their inferred dependencies, and its graph."""
    spec = deps.system(request).pipeline(name)
    if not who.may_use(name):  # as for a pipeline that does not exist
        raise NotFoundError(f"no pipeline named {name!r}", code="unknown_pipeline")
    return json_response(pipeline_dict(spec))


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
        ),
        200: {
            "description": "the run's output: JSON (or its bytes when stored as an object)",
            "content": {"application/json": {}},
        },
        202: {"description": "not done by the deadline", "model": PredictionOut},
    },
    openapi_extra={
        "parameters": WEBHOOK_PARAMETERS,
        "requestBody": {"required": True, "content": {"application/json": {"schema": {}}}},
    },
)
async def predict(
    request: Request,
    who: deps.Predictor,
    name: str,
    timeout: Annotated[float | None, Query(gt=0, description="deadline in seconds")] = None,
) -> Response:
    """Real-time run: the pipeline's output inline; past the deadline, 202 with the run
    (its ``steps`` map shows progress); a failed run answers 424 with its error."""
    deps.system(request).pipeline(name)  # 404 unknown_pipeline, before the body
    svc = deps.service(request)
    svc.allow(who, name)
    body = await read_json(request, svc.limits.max_json_bytes)  # 415 for any other type
    row = await svc.run(
        name, NewInput(json=body, has_json=True), timeout, webhook=webhook_of(request), who=who
    )
    if not row.status.terminal:
        return await respond(request, row, 202)
    headers = {"X-Freight-Prediction-Id": row.id}
    if row.output_json is not None and not has_references(row):
        return Response(row.output_json.encode(), media_type="application/json", headers=headers)
    # an output kept as an object, or JSON holding references (given their URLs)
    output = svc.open_output(row, absolute(request))
    if output.size is not None:
        headers["Content-Length"] = str(output.size)
    return StreamingResponse(output.chunks, media_type=output.content_type, headers=headers)
