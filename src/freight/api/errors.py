"""The only place that maps errors to HTTP: ``{"error": {code, message, detail}}``."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from freight import errors

log = logging.getLogger("freight.api")

STATUS: dict[type[errors.FreightError], int] = {
    errors.NotFoundError: 404,
    errors.InvalidRequestError: 400,
    errors.PayloadTooLargeError: 413,
    errors.ConflictError: 409,
    errors.QueueFullError: 429,
    errors.UrlError: 403,
    errors.StoreUnavailableError: 503,
    errors.StorageError: 502,
    errors.ConfigError: 500,
    errors.ModelDefinitionError: 500,
}

#: codes whose HTTP status differs from their class's
CODE_STATUS = {"unsupported_media_type": 415, "url_expired": 403, "failed": 424}


def error_response(
    status: int,
    code: str,
    message: str,
    detail: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body = {"error": {"code": code, "message": message, "detail": detail or {}}}
    return Response(
        orjson.dumps(body, default=str),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def status_of(exc: errors.FreightError) -> int:
    if exc.code in CODE_STATUS:
        return CODE_STATUS[exc.code]
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


async def _freight_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.FreightError)
    status = status_of(exc)
    headers = None
    if isinstance(exc, errors.QueueFullError):
        headers = {"Retry-After": str(exc.retry_after_s)}
    if isinstance(exc, errors.StoreUnavailableError):
        headers = {"Retry-After": "1"}
    if status >= 500:
        log.warning("%s %s -> %d %s: %s", request.method, request.url.path, status, exc.code, exc)
    return error_response(status, exc.code, exc.message, exc.detail, headers)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
        for e in exc.errors()
    ]
    return error_response(422, "validation_error", "the request is not valid", {"errors": problems})


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail))


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return error_response(500, "internal_error", "an unexpected error occurred")


def install(app: FastAPI) -> None:
    app.add_exception_handler(errors.FreightError, _freight_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
