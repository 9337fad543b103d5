"""``/v1/predictions``: create (async), get / long-poll, list, cancel, redrive, upload,
output."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.responses import Response, StreamingResponse

from freight.api import deps
from freight.api.bodies import body_stream, content_type_of, read_json
from freight.api.errors import RequestInvalid, responses, status_of
from freight.api.params import (
    CREATE_PARAMETERS,
    WAIT_PARAMETERS,
    CursorQuery,
    decode_cursor,
    idempotency_key,
    next_cursor,
    prefer_wait,
    wait_query,
    webhook_in,
)
from freight.api.render import absolute, json_response, rendered, respond
from freight.api.schemas import (
    BulkItem,
    BulkOut,
    CreatePrediction,
    PredictionOut,
    PredictionPage,
)
from freight.errors import (
    ConflictError,
    FreightError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    QueueFullError,
    StorageError,
    UnsupportedMediaTypeError,
    UrlError,
)
from freight.media import OCTET_STREAM
from freight.prediction import Kind, Prediction, Status
from freight.service import CreateOptions, NewInput, request_hash

router = APIRouter(prefix="/v1/predictions", tags=["predictions"])


def _validate(raw: Any) -> CreatePrediction:
    try:
        return CreatePrediction.model_validate(raw)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None


_CREATE_ERRORS = responses(
    InvalidRequestError,
    NotFoundError,
    ConflictError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
    QueueFullError,
    StorageError,
)


@router.post(
    "",
    status_code=202,
    response_model=PredictionOut,
    responses={**_CREATE_ERRORS, 200: {"model": PredictionOut, "description": "terminal"}},
    openapi_extra={
        "parameters": CREATE_PARAMETERS,  # read by hand: the hottest route
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": CreatePrediction.model_json_schema()}},
        },
    },
)
async def create_prediction(request: Request, who: deps.Predictor) -> Response:
    """Queue a prediction; answers 202 at once (or waits with ``Prefer: wait=N``)."""
    key = idempotency_key(request)
    svc = deps.service(request)
    raw = await read_json(request, svc.limits.max_json_bytes)
    body = _validate(raw)
    has_json = "input" in body.model_fields_set
    if has_json and body.input_uri is not None:
        raise InvalidRequestError("give input or input_uri, not both", code="ambiguous_input")
    row = await svc.create(
        body.target,
        NewInput(
            json=body.input,
            has_json=has_json,
            uri=body.input_uri,
            content_type=body.input_content_type,
        ),
        CreateOptions(
            metadata=body.metadata,
            priority=body.priority,
            ttl_s=body.ttl_s,
            idempotency_key=key,
            request_hash=request_hash(raw) if key else None,
            webhook=webhook_in(body.webhook),
        ),
        who=who,
    )
    wait_s = prefer_wait(request.headers.get("prefer"))
    if wait_s:
        row = await svc.wait(row.id, wait_s, who)
    return await respond(request, row)


#: the most predictions one bulk request creates (its body is bounded by max_json_bytes too)
MAX_BULK = 1000


def _item(raw: Any) -> tuple[str, NewInput, CreateOptions]:
    """One item of a bulk request, as the single create reads its body and headers."""
    try:
        item = BulkItem.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "item"
        raise RequestInvalid(f"{where}: {first['msg']}", field=where) from None
    has_json = "input" in item.model_fields_set
    if has_json and item.input_uri is not None:
        raise InvalidRequestError("give input or input_uri, not both", code="ambiguous_input")
    key = item.idempotency_key
    fields = {k: v for k, v in raw.items() if k != "idempotency_key"} if key else {}
    return (
        item.target,
        NewInput(
            json=item.input, has_json=has_json, uri=item.input_uri,
            content_type=item.input_content_type,
        ),
        CreateOptions(
            metadata=item.metadata, priority=item.priority, ttl_s=item.ttl_s,
            idempotency_key=key, request_hash=request_hash(fields) if key else None,
            webhook=webhook_in(item.webhook),
        ),
    )  # fmt: skip


def _result(index: int, outcome: Prediction | FreightError) -> dict[str, Any]:
    if isinstance(outcome, FreightError):
        error = {"code": outcome.code, "message": outcome.message, "detail": outcome.detail}
        return {"index": index, "status": status_of(outcome), "error": error}
    return {
        "index": index,
        "status": 202,
        "id": outcome.id,
        "target": outcome.target,
        "prediction_status": str(outcome.status),
        "url": f"/v1/predictions/{outcome.id}",
    }


#: the bulk body as the route reads it: any items, each checked on its own (an item that
#: is not a valid prediction is that item's 422 in the answer, not the request's)
BULK_BODY = {
    "type": "object",
    "required": ["predictions"],
    "additionalProperties": False,
    "properties": {
        "predictions": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_BULK,
            "items": {},
            "description": "each a prediction as BulkItem describes it",
        }
    },
}


@router.post(
    "/bulk",
    response_model=BulkOut,
    responses=responses(InvalidRequestError, PayloadTooLargeError, UnsupportedMediaTypeError),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": BULK_BODY}},
        }
    },
)
async def create_predictions(request: Request, who: deps.Predictor) -> Response:
    """Create many predictions in one request (inline JSON or ``input_uri`` inputs):
    ``data`` holds one result per item, in order: ``status`` 202 with its ``id``, or
    the status and ``error`` the single create would have answered. An item refused
    leaves no trace and the others go on; each item's ``idempotency_key`` is kept as
    the ``Idempotency-Key`` header of a single create is."""
    svc = deps.service(request)
    raw = await read_json(request, svc.limits.max_json_bytes)
    items = raw.get("predictions") if isinstance(raw, dict) else None
    if not isinstance(items, list) or not items or set(raw) != {"predictions"}:
        raise RequestInvalid('the body must be {"predictions": [ … ]}, a non-empty list')
    if len(items) > MAX_BULK:
        raise InvalidRequestError(
            f"{len(items)} predictions in one request; at most {MAX_BULK}",
            code="too_many_predictions",
            limit=MAX_BULK,
        )
    parsed: list[tuple[str, NewInput, CreateOptions] | FreightError] = []
    for item in items:
        try:
            if not isinstance(item, dict):
                raise RequestInvalid("a prediction is an object")
            parsed.append(_item(item))
        except FreightError as exc:
            parsed.append(exc)
    valid = [p for p in parsed if not isinstance(p, FreightError)]
    created = iter(await svc.create_many(valid, who=who))
    outcomes = [p if isinstance(p, FreightError) else next(created) for p in parsed]
    results = [_result(i, outcome) for i, outcome in enumerate(outcomes)]
    return json_response({"data": results})


@router.get(
    "/{prediction_id}",
    response_model=PredictionOut,
    responses=responses(NotFoundError),
    openapi_extra={"parameters": WAIT_PARAMETERS},  # read by hand: every wait() polls here
)
async def get_prediction(request: Request, who: deps.Reader, prediction_id: str) -> Response:
    wait = wait_query(request)
    svc = deps.service(request)
    row = await (svc.wait(prediction_id, wait, who) if wait else svc.get(prediction_id, who))
    return await respond(request, row, 200)


@router.get("", response_model=PredictionPage, responses=responses(InvalidRequestError))
async def list_predictions(
    request: Request,
    who: deps.Reader,
    target: str | None = None,
    status: Status | None = None,
    kind: Annotated[
        Kind | None,
        Query(description="rows of this kind, steps included (default: top-level predictions"
        " and pipeline runs)"),
    ] = None,
    cursor: CursorQuery = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Response:
    """Newest first; follow ``next_cursor`` for older ones. Top-level predictions and runs
    unless a ``kind`` is asked (``model`` includes pipeline steps; ``chunk``, batch chunks)."""
    svc = deps.service(request)
    after = decode_cursor(cursor)
    rows = await svc.list(
        target=target, status=status, kind=kind, after_id=after, limit=limit + 1, who=who
    )
    page, more = rows[:limit], len(rows) > limit
    data = [await rendered(request, row) for row in page]
    return json_response({"data": data, "next_cursor": next_cursor([r.id for r in page], more)})


@router.post(
    "/{prediction_id}/cancel", response_model=PredictionOut, responses=responses(NotFoundError)
)
async def cancel_prediction(request: Request, who: deps.Predictor, prediction_id: str) -> Response:
    """Cancel a queued, waiting or running prediction (a running one is interrupted)."""
    row = await deps.service(request).cancel(prediction_id, who)
    return await respond(request, row, 200)


@router.post(
    "/{prediction_id}/redrive",
    response_model=PredictionOut,
    responses=responses(NotFoundError, ConflictError),
)
async def redrive_prediction(request: Request, who: deps.Predictor, prediction_id: str) -> Response:
    """Restart a failed, timed-out or canceled pipeline run where it stopped: the steps
    that succeeded keep their outputs and are not run again; failed, canceled and
    not-started steps run, by the definition the run started with. ``redrives`` counts
    it. 409 ``invalid_state`` for a running or succeeded run, a step, or no run."""
    row = await deps.service(request).redrive(prediction_id, who)
    return await respond(request, row, 200)


@router.put(
    "/{prediction_id}/input",
    response_model=PredictionOut,
    responses=responses(
        InvalidRequestError,
        UrlError,
        NotFoundError,
        ConflictError,
        PayloadTooLargeError,
        UnsupportedMediaTypeError,
        StorageError,
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
async def upload_input(
    request: Request,
    prediction_id: str,
    expires: str | None = None,
    sig: str | None = None,
) -> Response:
    """The presigned upload URL: stream the input in; the prediction is queued at once.
    A pipeline's JSON upload is parsed and kept for its templates (400 ``invalid_json``);
    one whose templates read into its input refuses other bodies (415) and JSON over
    ``max_json_bytes`` (413 ``json_input_too_large``)."""
    deps.signer(request).verify("PUT", request.url.path, expires, sig)
    svc = deps.service(request)
    content_type = content_type_of(request) or OCTET_STREAM
    row = await svc.upload(
        prediction_id,
        body_stream(request, svc.limits.max_payload_bytes),
        content_type,
    )
    return await respond(request, row, 200)


@router.get(
    "/{prediction_id}/output",
    responses={
        **responses(NotFoundError, ConflictError, StorageError),
        200: {"description": "the output's bytes", "content": {OCTET_STREAM: {}}},
    },
)
async def download_output(request: Request, who: deps.Reader, prediction_id: str) -> Response:
    """The output's bytes, streamed from the object store; a pipeline run's inline JSON
    output as JSON (object references in it with their presigned ``url``)."""
    svc = deps.service(request)
    output = svc.open_output(await svc.get(prediction_id, who), absolute(request))
    headers = {"Content-Length": str(output.size)} if output.size is not None else None
    return StreamingResponse(output.chunks, media_type=output.content_type, headers=headers)
