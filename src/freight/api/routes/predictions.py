"""``/v1/predictions``: create (async), get / long-poll, list, cancel, upload, output."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.responses import Response, StreamingResponse

from freight.api import deps
from freight.api.bodies import body_stream, content_type_of, read_json
from freight.api.errors import responses
from freight.api.render import json_response, prediction_dict
from freight.api.schemas import (
    WEBHOOK_URL_MAX,
    WEBHOOK_URL_PATTERN,
    CreatePrediction,
    PredictionOut,
    PredictionPage,
    check_webhook_events,
)
from freight.errors import (
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    QueueFullError,
    StorageError,
    UnsupportedMediaTypeError,
    UrlError,
)
from freight.media import OCTET_STREAM
from freight.prediction import Prediction, Status
from freight.service import CreateOptions, NewInput, Webhook, request_hash

router = APIRouter(prefix="/v1/predictions", tags=["predictions"])

_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait=(\d+(?:\.\d+)?)")
_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


async def _output_url(request: Request, row: Prediction) -> str | None:
    url = await deps.service(request).output_url(row)
    return deps.absolute(request, url) if url else None


async def rendered(
    request: Request, row: Prediction, upload_url: str | None = None
) -> dict[str, Any]:
    """The prediction object; a pipeline run also gets its steps map (one more query,
    plus a presigned URL per step whose output is not inline)."""
    output_url = await _output_url(request, row)
    if row.kind != "pipeline":
        return prediction_dict(row, output_url=output_url, upload_url=upload_url)
    steps = await deps.service(request).steps(row.id)
    step_urls: dict[str, str] = {}
    for step in steps:
        if step.item_index is None and (url := await _output_url(request, step)):
            step_urls[step.id] = url
    return prediction_dict(
        row,
        output_url=output_url,
        upload_url=upload_url,
        steps=steps,
        step_output_urls=step_urls,
    )


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


def prefer_wait(prefer: str | None) -> float | None:
    match = _PREFER_WAIT.search(prefer or "")
    return float(match.group(1)) if match else None


#: the real-time routes' webhook parameters, for the OpenAPI document (they are read
#: from the query string by :func:`webhook_of`: a FastAPI dependency would cost a
#: dependency resolution on every real-time call, measured at ~7 % of B3)
WEBHOOK_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "webhook",
        "in": "query",
        "required": False,
        "description": "http(s) URL to POST this prediction's events to (signed, "
        "Standard Webhooks)",
        "schema": {"type": "string", "maxLength": WEBHOOK_URL_MAX, "pattern": WEBHOOK_URL_PATTERN},
    },
    {
        "name": "webhook_events",
        "in": "query",
        "required": False,
        "description": "comma-separated events for `webhook`: started, completed "
        "(default completed)",
        "schema": {"type": "string"},
    },
]
_WEBHOOK_URL = re.compile(WEBHOOK_URL_PATTERN)


def webhook_of(request: Request) -> Webhook | None:
    """The real-time routes' webhook: their body is the input itself, so it comes as
    query parameters (``webhook=<url>&webhook_events=started,completed``)."""
    query = request.query_params
    if "webhook" not in query and "webhook_events" not in query:
        return None
    return webhook_query(query.get("webhook"), query.get("webhook_events"))


def webhook_query(webhook: str | None = None, webhook_events: str | None = None) -> Webhook | None:
    """Check the two parameters (422 ``validation_error`` naming the bad one)."""
    if webhook is None:
        if webhook_events is not None:
            raise _query_invalid("webhook_events", "webhook_events needs webhook", webhook_events)
        return None
    if len(webhook) > WEBHOOK_URL_MAX or not _WEBHOOK_URL.search(webhook):
        raise _query_invalid(
            "webhook", f"an http(s) URL of at most {WEBHOOK_URL_MAX} characters", webhook
        )
    if webhook_events is None:
        return Webhook(webhook)
    names = [name.strip() for name in webhook_events.split(",") if name.strip()]
    try:
        check_webhook_events(names or [webhook_events])
    except ValueError as exc:
        raise _query_invalid("webhook_events", str(exc), webhook_events) from None
    return Webhook(webhook, tuple(dict.fromkeys(names)))


def _query_invalid(name: str, message: str, value: str) -> RequestValidationError:
    """A 422 ``validation_error`` in the shape FastAPI gives a query parameter's."""
    return RequestValidationError(
        [{"loc": ("query", name), "msg": message, "type": "value_error", "input": value}]
    )


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
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": CreatePrediction.model_json_schema()}},
        }
    },
)
async def create_prediction(
    request: Request,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
    prefer: Annotated[str | None, Header()] = None,
) -> Response:
    """Queue a prediction; answers 202 at once (or waits with ``Prefer: wait=N``)."""
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
            idempotency_key=idempotency_key,
            request_hash=request_hash(raw) if idempotency_key else None,
            webhook=None
            if body.webhook is None
            else Webhook(body.webhook.url, tuple(dict.fromkeys(body.webhook.events))),
        ),
    )
    wait_s = prefer_wait(prefer)
    if wait_s:
        row = await svc.wait(row.id, wait_s)
    return await respond(request, row)


@router.get("/{prediction_id}", response_model=PredictionOut, responses=responses(NotFoundError))
async def get_prediction(
    request: Request,
    prediction_id: str,
    wait: Annotated[float | None, Query(ge=0, description="long-poll up to N s")] = None,
) -> Response:
    svc = deps.service(request)
    row = await (svc.wait(prediction_id, wait) if wait else svc.get(prediction_id))
    return await respond(request, row, 200)


def _decode_cursor(cursor: str) -> str:
    try:
        after = orjson.loads(base64.urlsafe_b64decode(cursor.encode()))["after"]
    except (binascii.Error, ValueError, TypeError, KeyError, orjson.JSONDecodeError):
        after = None
    if not isinstance(after, str) or not _ID.match(after):
        raise InvalidRequestError("the pagination cursor is not valid", code="invalid_cursor")
    return after


def _encode_cursor(after: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"after": after})).decode()


@router.get("", response_model=PredictionPage, responses=responses(InvalidRequestError))
async def list_predictions(
    request: Request,
    target: str | None = None,
    status: Status | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Response:
    """Newest first; follow ``next_cursor`` for older ones."""
    svc = deps.service(request)
    after = _decode_cursor(cursor) if cursor else None
    rows = await svc.list(target=target, status=status, after_id=after, limit=limit + 1)
    page, more = rows[:limit], len(rows) > limit
    data = [await rendered(request, row) for row in page]
    return json_response(
        {"data": data, "next_cursor": _encode_cursor(page[-1].id) if more else None}
    )


@router.post(
    "/{prediction_id}/cancel", response_model=PredictionOut, responses=responses(NotFoundError)
)
async def cancel_prediction(request: Request, prediction_id: str) -> Response:
    """Cancel a queued, waiting or running prediction (a running one is interrupted)."""
    row = await deps.service(request).cancel(prediction_id)
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
    """The presigned upload URL: stream the input in; the prediction is queued at once."""
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
async def download_output(request: Request, prediction_id: str) -> Response:
    """The output's bytes, streamed from the object store."""
    svc = deps.service(request)
    output = svc.open_output(await svc.get(prediction_id))
    headers = {"Content-Length": str(output.size)} if output.size is not None else None
    return StreamingResponse(output.chunks, media_type=output.content_type, headers=headers)
