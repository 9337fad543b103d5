"""The only place that maps errors to HTTP: ``{"error": {code, message, detail}}``.

One table, :data:`STATUS`, from exception class to status. The handlers answer
from it and :func:`responses` documents routes from it, so the OpenAPI document
cannot drift from the behaviour. A route lists the exceptions it can raise;
the ones any route can meet (validation, the store down) are added to all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import Match

from freight import errors
from freight.api.schemas import ErrorBody

log = logging.getLogger("freight.api")


class RequestInvalid(errors.FreightError):
    """The request does not match the route's schema (FastAPI's validation): 422."""

    code = "validation_error"


STATUS: dict[type[errors.FreightError], int] = {
    errors.InvalidRequestError: 400,
    errors.UnauthorizedError: 401,
    errors.ForbiddenError: 403,
    errors.UrlError: 403,
    errors.NotFoundError: 404,
    errors.ConflictError: 409,
    errors.PayloadTooLargeError: 413,
    errors.UnsupportedMediaTypeError: 415,
    RequestInvalid: 422,
    errors.PredictionFailedError: 424,
    errors.QueueFullError: 429,
    errors.QuotaExceededError: 429,
    errors.StorageError: 502,
    errors.StoreUnavailableError: 503,
    errors.NotReadyError: 503,
    # a bound of this process, not of the service: 503 (not 429, the queue's shared
    # bound) lets a proxy in front of several API processes try another one
    errors.TooManyStreamsError: 503,
}

#: what each status means to a caller, with the codes it carries (the OpenAPI text)
MEANING: dict[type[errors.FreightError], str] = {
    errors.InvalidRequestError: "invalid request (`invalid_json`, `invalid_cursor`, "
    "`invalid_tensor`, `not_a_tensor_model`, `unsupported_encoding`, "
    "`ambiguous_input`, `unsupported_input_uri`, `bad_content_length`, `invalid_key`, "
    "`too_many_predictions` (a bulk create), "
    "`webhook_refused`, `unknown_event`, `invalid_location`; batch jobs: `unknown_format`; "
    "keys: `invalid_tenant`, `invalid_expiry`; the console: `invalid_time`, `invalid_status`, "
    "`invalid_form`; a callback's answer: `answer_invalid` (against the step's schema), "
    "`invalid_failure`)",
    errors.UnauthorizedError: "no key or token (`missing_credentials`), or one that is not "
    "valid: unknown, revoked, expired or malformed (`invalid_credentials`); a SigV4 "
    "signature (the SageMaker routes, which answer 403 as AWS does): "
    "`malformed_authorization`, `unknown_access_key`, `invalid_signature`, "
    "`signature_expired`",
    errors.ForbiddenError: "the key lacks the scope (`missing_scope`), is limited to other "
    "models (`target_not_allowed`), or names objects outside its tenant (`uri_not_allowed`); "
    "a console form without its CSRF token or from another origin (`csrf_failed`); a "
    "callback token that is not valid (`invalid_callback_token`)",
    errors.UrlError: "missing, tampered or expired signed URL "
    "(`missing_signature`, `bad_signature`, `url_expired`)",
    errors.NotFoundError: "unknown model (or version: `unknown_version`), prediction or object "
    "(`unknown_target`, `unknown_pipeline`, `prediction_not_found`, `object_not_found`, "
    "`input_not_found`, `key_not_found`, `callback_not_found`; the console: `no_input`, "
    "`batch_not_served`)",
    errors.ConflictError: "idempotency key reused with another body "
    "(`idempotency_conflict`), or the prediction is in another state (`invalid_state`; "
    "`not_finished`, `no_output` for its output; `input_gone` for a retry; a callback "
    "answered already or past its deadline, `callback_closed`, or of an earlier wait, "
    "`callback_superseded`)",
    errors.PayloadTooLargeError: "payload over the limit (`payload_too_large`); JSON too "
    "large for the templates of a pipeline that read into its input (`json_input_too_large`)",
    errors.UnsupportedMediaTypeError: "content type not taken (`unsupported_media_type`)",
    RequestInvalid: "the request does not match the schema (`validation_error`)",
    errors.PredictionFailedError: "the prediction failed; `error.code` is its own "
    "(`model_error`, `timeout`, `attempts_exhausted`, `canceled`, `expired`, …)",
    errors.QueueFullError: "the model's queue is full; retry after `Retry-After` "
    "seconds (`queue_full`)",
    errors.QuotaExceededError: "a quota of the tenant is reached; retry after `Retry-After` "
    "seconds (`quota_max_queued`, `quota_rate`, "
    "`too_many_auth_failures`)",
    errors.StorageError: "the object store failed (`storage_error`)",
    errors.StoreUnavailableError: "the database is unavailable; retry "
    "(`store_unavailable`)",
    errors.NotReadyError: "a model has no ready replica (`not_ready`)",
    errors.TooManyStreamsError: "this server holds as many event streams as it allows; "
    "retry after `Retry-After` seconds (`too_many_streams`)",
}

#: every route can meet these
COMMON: tuple[type[errors.FreightError], ...] = (RequestInvalid, errors.StoreUnavailableError)

_RETRY_AFTER = {
    "description": "seconds to wait before retrying",
    "schema": {"type": "integer", "minimum": 0},
}
_WWW_AUTHENTICATE = {
    "description": "how to authenticate: `Bearer`",
    "schema": {"type": "string"},
}
PREDICTION_ID_HEADER = {
    "description": "the prediction's id (fetch it for the whole record)",
    "schema": {"type": "string"},
}
#: the headers each error answer carries (:func:`_headers`), for the document
HEADERS: dict[type[errors.FreightError], dict[str, dict[str, Any]]] = {
    errors.QueueFullError: {"Retry-After": _RETRY_AFTER},
    errors.QuotaExceededError: {"Retry-After": _RETRY_AFTER},
    errors.UnauthorizedError: {"WWW-Authenticate": _WWW_AUTHENTICATE},
    errors.StoreUnavailableError: {"Retry-After": _RETRY_AFTER},
    errors.NotReadyError: {"Retry-After": _RETRY_AFTER},
    errors.TooManyStreamsError: {"Retry-After": _RETRY_AFTER},
    errors.PredictionFailedError: {"X-Freight-Prediction-Id": PREDICTION_ID_HEADER},
}


def status_of(exc: errors.FreightError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def responses(*raises: type[errors.FreightError]) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of a route that can raise ``raises`` (plus COMMON)."""
    by_status: dict[int, list[str]] = {}
    headers: dict[int, dict[str, dict[str, Any]]] = {}
    for cls in dict.fromkeys((*raises, *COMMON)):
        by_status.setdefault(STATUS[cls], []).append(MEANING[cls])
        headers.setdefault(STATUS[cls], {}).update(HEADERS.get(cls, {}))
    documented: dict[int | str, dict[str, Any]] = {}
    for status, texts in sorted(by_status.items()):
        documented[status] = {"model": ErrorBody, "description": "; ".join(texts)}
        if headers[status]:
            documented[status]["headers"] = headers[status]
    return documented


def _headers(exc: errors.FreightError) -> dict[str, str] | None:
    if isinstance(exc, errors.QueueFullError | errors.TooManyStreamsError):
        return {"Retry-After": str(exc.retry_after_s)}
    if isinstance(exc, errors.StoreUnavailableError | errors.NotReadyError):
        return {"Retry-After": "1"}
    if isinstance(exc, errors.PredictionFailedError):
        return {"X-Freight-Prediction-Id": exc.prediction_id}
    if isinstance(exc, errors.UnauthorizedError):
        return {"WWW-Authenticate": 'Bearer realm="freight"'}
    return None


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


async def _freight_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.FreightError)
    status = status_of(exc)
    if status >= 500 and not isinstance(exc, errors.NotReadyError):  # probes ask often
        log.warning("%s %s -> %d %s: %s", request.method, request.url.path, status, exc.code, exc)
    return error_response(status, exc.code, exc.message, exc.detail, _headers(exc))


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
        for e in exc.errors()
    ]
    invalid = RequestInvalid("the request is not valid", errors=problems)
    return error_response(STATUS[RequestInvalid], invalid.code, invalid.message, invalid.detail)


def _allowed_methods(request: Request) -> str:
    """Every method the path takes, over all routes: Starlette's 405 names only the
    first route whose path matched (``POST`` for ``/v1/predictions``, not ``GET``)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "\x00"})
        if match is Match.PARTIAL:
            methods |= getattr(route, "methods", None) or set()
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own answers (no such route, method not allowed), in our shape and
    with their headers (``Allow`` on a 405, listing every method of the path)."""
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    headers = dict(exc.headers) if exc.headers else {}
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request)
    return error_response(exc.status_code, code, str(exc.detail), headers=headers or None)


async def _client_gone(request: Request, exc: Exception) -> Response:
    """The client closed the connection while its body was being read: nothing was
    created (bodies are read before anything is written), and nobody reads an answer."""
    log.debug("%s %s: the client disconnected", request.method, request.url.path)
    return Response(status_code=499)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return error_response(500, "internal_error", "an unexpected error occurred")


# -- other protocols' error shapes ------------------------------------------------------
#
# Routes that speak another protocol (the SageMaker runtime API, the Open Inference
# Protocol) answer errors the way that protocol's clients parse them. Their routers
# take a route class from :func:`dialect`: every error the route raises, its
# dependencies' (authentication) and request validation included, goes through the
# protocol's renderer instead of the handlers above.

Render = Callable[[errors.FreightError], Response]


def dialect(render: Render) -> type[APIRoute]:
    """A route class whose errors ``render`` answers (unexpected ones: a logged 500)."""

    class DialectRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def handle(request: Request) -> Response:
                try:
                    return await handler(request)
                except errors.FreightError as exc:
                    if status_of(exc) >= 500:
                        log.warning(
                            "%s %s -> %s: %s", request.method, request.url.path, exc.code, exc
                        )
                    return render(exc)
                except RequestValidationError as exc:
                    return render(_invalid(exc))
                except ClientDisconnect:
                    raise
                except Exception:
                    log.exception("unexpected error on %s %s", request.method, request.url.path)
                    return render(errors.FreightError("an unexpected error occurred"))

            return handle

    return DialectRoute


def _invalid(exc: RequestValidationError) -> RequestInvalid:
    problems = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
        for e in exc.errors()
    ]
    where = "; ".join(f"{'.'.join(map(str, p['loc']))}: {p['msg']}" for p in problems)
    return RequestInvalid(f"the request is not valid ({where})", errors=problems)


#: the SageMaker runtime API: the status and ``x-amzn-errortype`` of each error, so that
#: botocore raises the exception class SageMaker's would (``client.exceptions.ModelError``)
SAGEMAKER: dict[type[errors.FreightError], tuple[int, str]] = {
    errors.InvalidRequestError: (400, "ValidationError"),
    RequestInvalid: (400, "ValidationError"),
    # SageMaker answers an unknown endpoint with a ValidationError too
    errors.NotFoundError: (400, "ValidationError"),
    errors.ConflictError: (400, "ValidationError"),
    errors.UnsupportedMediaTypeError: (415, "ValidationError"),
    errors.PayloadTooLargeError: (413, "ValidationError"),
    errors.UnauthorizedError: (403, "UnrecognizedClientException"),
    errors.ForbiddenError: (403, "AccessDeniedException"),
    errors.UrlError: (403, "AccessDeniedException"),
    errors.PredictionFailedError: (424, "ModelError"),
    # botocore retries these by itself, after a back-off
    errors.QueueFullError: (429, "ThrottlingException"),
    errors.StorageError: (502, "InternalDependencyException"),
    errors.StoreUnavailableError: (503, "ServiceUnavailable"),
    errors.NotReadyError: (503, "ServiceUnavailable"),
    errors.TooManyStreamsError: (503, "ServiceUnavailable"),
}
#: AWS's own names for what is wrong with a signature (all 403, as AWS answers them)
SIGV4_TYPES: dict[str, str] = {
    "missing_credentials": "MissingAuthenticationTokenException",
    "malformed_authorization": "IncompleteSignatureException",
    "invalid_signature": "InvalidSignatureException",
    "signature_expired": "InvalidSignatureException",
    "unknown_access_key": "UnrecognizedClientException",
    "invalid_credentials": "UnrecognizedClientException",
}
#: a failed prediction's ``OriginalStatusCode`` (the status a model server would have
#: answered with): the caller's input is a client error, a deadline a gateway timeout
ORIGINAL_STATUS: dict[str, int] = {"input_error": 400, "timeout": 504, "expired": 504}


def _sagemaker_type(exc: errors.FreightError) -> tuple[int, str]:
    for cls in type(exc).__mro__:
        if cls in SAGEMAKER:
            status, type_ = SAGEMAKER[cls]
            if cls is errors.UnauthorizedError:
                type_ = SIGV4_TYPES.get(exc.code, type_)
            return status, type_
    return 500, "InternalFailure"


def sagemaker_error(exc: errors.FreightError) -> Response:
    """An error as SageMaker answers it: ``x-amzn-errortype`` and ``{"message": …}``
    (a failed prediction: ``ModelError`` with ``OriginalStatusCode`` and
    ``OriginalMessage``); freight's own code in ``X-Freight-Error-Code``."""
    status, type_ = _sagemaker_type(exc)
    body: dict[str, Any] = {"message": exc.message}
    headers = {"x-amzn-errortype": type_, "X-Freight-Error-Code": exc.code}
    if isinstance(exc, errors.PredictionFailedError):
        original = ORIGINAL_STATUS.get(exc.code, 500)
        body = {
            "message": f"Received {'client' if original < 500 else 'server'} error "
            f"({original}) from the model with message \"{exc.message}\" "
            f"(freight prediction {exc.prediction_id}, {exc.code}).",
            "OriginalStatusCode": original,
            "OriginalMessage": exc.message,
            "ErrorCode": exc.code,
        }
        headers["X-Freight-Prediction-Id"] = exc.prediction_id
    if isinstance(exc, errors.QueueFullError):
        headers["Retry-After"] = str(exc.retry_after_s)
    return Response(
        orjson.dumps(body, default=str), status, headers=headers, media_type="application/json"
    )


def inference_error(exc: errors.FreightError) -> Response:
    """An error as the Open Inference Protocol answers it: ``{"error": "<message>"}``
    (what ``tritonclient`` raises as ``InferenceServerException``), with freight's
    status and code."""
    body = {"error": exc.message, "code": exc.code}
    return Response(
        orjson.dumps(body, default=str),
        status_of(exc),
        headers=_headers(exc),
        media_type="application/json",
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(errors.FreightError, _freight_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(Exception, _unexpected)
