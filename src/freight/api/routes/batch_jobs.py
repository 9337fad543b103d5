"""``/v1/batch-jobs``: run a model or a pipeline over a whole data set."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.responses import Response

from freight.api import deps
from freight.api.bodies import body_stream, content_type_of, read_json
from freight.api.errors import responses
from freight.api.params import CursorQuery, decode_cursor, next_cursor
from freight.api.render import json_response
from freight.api.schemas import BatchUpload, CreateBatchJob
from freight.batch.service import BatchService, JobRequest, doc_of
from freight.batch.view import job_dict
from freight.errors import (
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    StorageError,
    UnsupportedMediaTypeError,
    UrlError,
)
from freight.media import OCTET_STREAM
from freight.prediction import Prediction, Status
from freight.subscriptions import Webhook

router = APIRouter(prefix="/v1/batch-jobs", tags=["batch jobs"])
PREFIX = "/v1/batch-jobs"


def _service(request: Request) -> BatchService:
    svc: BatchService = request.app.state.batch
    return svc


def _upload_path(job_id: str, name: str) -> str:
    return f"{PREFIX}/{job_id}/input/{name}"


async def _view(request: Request, row: Prediction) -> dict[str, Any]:
    svc, doc = _service(request), doc_of(row)
    urls = {key: deps.absolute(request, url) for key, url in (await svc.download_urls(row)).items()}
    uploads = None
    if row.status == Status.AWAITING_INPUT and doc.uploads and row.upload_expires_at:
        signer = deps.signer(request)
        uploads = {
            name: deps.absolute(
                request,
                signer.sign_until("PUT", _upload_path(row.id, name), row.upload_expires_at),
            )
            for name in doc.uploads
        }
    return job_dict(row, doc, urls=urls, upload_urls=uploads, now=time.time())


def _validate(raw: Any) -> CreateBatchJob:
    try:
        return CreateBatchJob.model_validate(raw)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None


@router.post(
    "",
    status_code=202,
    responses=responses(
        InvalidRequestError, NotFoundError, UnsupportedMediaTypeError, StorageError
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": CreateBatchJob.model_json_schema()}},
        }
    },
)
async def create_batch_job(request: Request, who: deps.Batcher) -> Response:
    """Check the job whole (target, options, input and output locations), then queue
    it; with ``input: {"upload": [...]}`` it waits for its uploads (``upload_urls``)."""
    raw = await read_json(request, deps.service(request).limits.max_json_bytes)
    body = _validate(raw)
    uploads = body.input.upload if isinstance(body.input, BatchUpload) else None
    webhook = (
        None
        if body.webhook is None
        else Webhook(body.webhook.url, tuple(dict.fromkeys(body.webhook.events)))
    )
    row = await _service(request).create(
        JobRequest(
            target=body.target,
            input_uri=body.input if isinstance(body.input, str) else None,
            uploads=uploads,
            output_uri=body.output,
            options=body.options(),
            metadata=body.metadata,
            webhook=webhook,
        ),
        who,
    )
    return json_response(await _view(request, row), status_code=202)


@router.get("/{job_id}", responses=responses(NotFoundError))
async def get_batch_job(request: Request, who: deps.Batcher, job_id: str) -> Response:
    """The job: status, counts, records/s, ETA, and the outputs finished so far."""
    row = await _service(request).get(job_id, who)
    return json_response(await _view(request, row))


@router.get("", responses=responses(InvalidRequestError))
async def list_batch_jobs(
    request: Request,
    who: deps.Batcher,
    target: str | None = None,
    status: Status | None = None,
    cursor: CursorQuery = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Response:
    """Newest first; follow ``next_cursor`` for older ones."""
    after = decode_cursor(cursor)
    rows = await _service(request).list(
        status=status, target=target, after_id=after, limit=limit + 1, who=who
    )
    page, more = rows[:limit], len(rows) > limit
    items = [await _view(request, row) for row in page]
    return json_response(
        {"items": items, "next_cursor": next_cursor([r.id for r in page], more)}
    )


@router.post("/{job_id}/cancel", responses=responses(NotFoundError))
async def cancel_batch_job(request: Request, who: deps.Batcher, job_id: str) -> Response:
    """Stop the remaining chunks; the records done so far stay in the outputs."""
    row = await _service(request).cancel(job_id, who)
    return json_response(await _view(request, row))


@router.put(
    "/{job_id}/input/{name:path}",
    responses=responses(UrlError, NotFoundError, ConflictError, PayloadTooLargeError, StorageError),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
async def upload_batch_input(
    request: Request,
    job_id: str,
    name: str,
    expires: str | None = None,
    sig: str | None = None,
) -> Response:
    """A presigned upload of one input file; the last one queues the job."""
    deps.signer(request).verify("PUT", request.url.path, expires, sig)
    svc = _service(request)
    content_type = content_type_of(request) or OCTET_STREAM
    limit = deps.service(request).limits.max_payload_bytes
    row = await svc.upload(job_id, name, body_stream(request, limit), content_type)
    return json_response(await _view(request, row))
