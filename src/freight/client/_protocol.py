"""The client's sans-I/O core: requests as data, responses parsed, flows as generators.

``Client`` and ``AsyncClient`` differ only in how they perform I/O, so every
operation is written once here as a generator (a *flow*) that yields steps —
:class:`Call` (send this request, send me the response) or :class:`Sleep` —
and returns the operation's result. Each client drives a flow with its own
transport (``_sync.py`` blocking, ``_async.py`` awaiting): multi-step
operations (create then upload; long-poll until terminal) are thus shared
logic, not two hand-kept copies. The same pattern as h11 or the httpx
transports: the protocol knows nothing of sockets, so it is tested by feeding
it responses.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import httpx
import orjson
from pydantic import ValidationError

from freight.client._models import (
    BatchJob,
    CallbackAnswered,
    FreightClientError,
    ModelInfo,
    PipelineInfo,
    Prediction,
    UsageLine,
)

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "FREIGHT_URL"
KEY_ENV = "FREIGHT_API_KEY"
CONNECT_TIMEOUT_S = 10.0
# how long past the server's hold time the client waits for an answer
SLACK_S = 10.0

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Call:
    """One HTTP request to perform. ``url`` is a path relative to the server, or absolute.

    ``upload`` names a file to stream as the body (its size must be in the
    headers); ``download_to`` asks the transport to stream a successful body
    into that file instead of memory. ``timeout`` overrides the client's.
    ``progress(done, total)`` follows that upload or download (total 0: unknown),
    in place of the client's own ``upload_progress``/``download_progress``.
    """

    method: str
    url: str
    params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    json: Any = None
    has_json: bool = False
    content: bytes | None = None
    upload: Path | None = None
    download_to: Path | None = None
    timeout: httpx.Timeout | None = None
    progress: Callable[[int, int], None] | None = None


@dataclass(frozen=True, slots=True)
class Sleep:
    """Pause before the next step (polling a server that does not hold requests)."""

    seconds: float


Step = Call | Sleep
Flow = Generator[Step, Any, T]


def resolve_url(url: str | None) -> str:
    """The ``url`` argument, else ``$FREIGHT_URL``, else the local default."""
    return (url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")


def resolve_key(key: str | None) -> str | None:
    """The ``api_key`` argument, else ``$FREIGHT_API_KEY``, else none."""
    return key or os.environ.get(KEY_ENV) or None


def same_origin(url: str | httpx.URL, base: str) -> bool:
    """Whether ``url`` is the server's own (relative, or its scheme, host and port)."""
    target, home = httpx.URL(str(url)), httpx.URL(base)
    if not target.is_absolute_url:
        return True
    return (target.scheme, target.host, target.port) == (home.scheme, home.host, home.port)


def key_headers(key: str | None, url: str | httpx.URL, base: str) -> dict[str, str]:
    """The key's header for a request to the server, never to another origin: a
    presigned object-store URL carries its own credentials (and S3 refuses two)."""
    return {"Authorization": f"Bearer {key}"} if key and same_origin(url, base) else {}


class ServerKey(httpx.Auth):
    """httpx auth: the API key on requests to the server only (:func:`key_headers`)."""

    def __init__(self, key: str, base: str) -> None:
        self._key, self._base = key, base

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers.update(key_headers(self._key, request.url, self._base))
        yield request

    def __repr__(self) -> str:  # never the key itself
        return "ServerKey(…)"


def request(call: Call) -> Generator[Step, Any, httpx.Response]:
    """Perform ``call``; ``yield from`` this to get a typed response back."""
    response = yield call
    return cast(httpx.Response, response)


def pause(seconds: float) -> Generator[Step, Any, None]:
    if seconds > 0:
        yield Sleep(seconds)


def held_for(seconds: float | None) -> httpx.Timeout:
    """A timeout for a request the server may hold ``seconds`` (None: indefinitely)."""
    read = None if seconds is None else seconds + SLACK_S
    return httpx.Timeout(CONNECT_TIMEOUT_S, read=read)


def number(value: float) -> str:
    """Render a duration for a query string: ``2`` rather than ``2.0``."""
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}".rstrip("0")


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_json(content_type: str | None) -> bool:
    kind = media_type(content_type)
    return kind == "application/json" or kind.endswith("+json")


# -- responses -------------------------------------------------------------------------


def error_from(response: httpx.Response) -> FreightClientError:
    """Build the error an error response describes; tolerate non-JSON bodies (proxies)."""
    code, message = f"http_{response.status_code}", response.reason_phrase
    detail: dict[str, Any] = {}
    try:
        body = response.json()
    except ValueError:
        body = None
        text = response.text.strip()
        if text:
            message = text[:500]
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        code = str(error.get("code") or code)
        message = str(error.get("message") or message)
        detail = error.get("detail") if isinstance(error.get("detail"), dict) else {}
    return FreightClientError(
        response.status_code,
        code,
        message,
        detail,
        retry_after_s=_retry_after(response),
    )


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None  # an HTTP date: rare, and the caller can read the header itself


def check(response: httpx.Response) -> httpx.Response:
    """Raise the API's error for a 4xx/5xx response; return the response otherwise."""
    if response.is_error:
        raise error_from(response)
    return response


def json_body(response: httpx.Response) -> Any:
    check(response)
    try:
        return orjson.loads(response.content)  # the API answers UTF-8: 4x json's speed
    except ValueError as exc:
        raise _invalid(response, "the response is not JSON") from exc


def answered_from(response: httpx.Response) -> CallbackAnswered:
    """A callback step as an answer left it."""
    body = json_body(response)
    try:
        return CallbackAnswered.model_validate(body)
    except ValidationError as exc:
        raise _invalid(response, f"not a callback answer: {exc.error_count()} errors") from exc


def prediction_from(response: httpx.Response) -> Prediction:
    body = json_body(response)
    try:
        return Prediction.model_validate(body)
    except ValidationError as exc:
        raise _invalid(response, f"not a prediction object: {exc.error_count()} errors") from exc


def models_from(response: httpx.Response) -> list[ModelInfo]:
    body = json_body(response)
    try:
        return [ModelInfo.model_validate(item) for item in body["data"]]
    except (ValidationError, KeyError, TypeError) as exc:
        raise _invalid(response, "not a model listing") from exc


def pipelines_from(response: httpx.Response) -> list[PipelineInfo]:
    body = json_body(response)
    try:
        return [PipelineInfo.model_validate(item) for item in body["data"]]
    except (ValidationError, KeyError, TypeError) as exc:
        raise _invalid(response, "not a pipeline listing") from exc


def model_from(response: httpx.Response) -> ModelInfo:
    body = json_body(response)
    try:
        return ModelInfo.model_validate(body)
    except ValidationError as exc:
        raise _invalid(response, f"not a model: {exc.error_count()} errors") from exc


def pipeline_from(response: httpx.Response) -> PipelineInfo:
    body = json_body(response)
    try:
        return PipelineInfo.model_validate(body)
    except ValidationError as exc:
        raise _invalid(response, f"not a pipeline: {exc.error_count()} errors") from exc


def usage_from(response: httpx.Response) -> list[UsageLine]:
    body = json_body(response)
    try:
        return [UsageLine.model_validate(item) for item in body["data"]]
    except (ValidationError, KeyError, TypeError) as exc:
        raise _invalid(response, "not a usage report") from exc


def page_from(response: httpx.Response) -> tuple[list[Prediction], str | None]:
    body = json_body(response)
    try:
        items = [Prediction.model_validate(item) for item in body["data"]]
        cursor = body.get("next_cursor")
    except (ValidationError, KeyError, TypeError, AttributeError) as exc:
        raise _invalid(response, "not a page of predictions") from exc
    return items, (str(cursor) if cursor else None)


def batch_job_from(response: httpx.Response) -> BatchJob:
    body = json_body(response)
    try:
        return BatchJob.model_validate(body)
    except ValidationError as exc:
        raise _invalid(response, f"not a batch job: {exc.error_count()} errors") from exc


def batch_page_from(response: httpx.Response) -> tuple[list[BatchJob], str | None]:
    body = json_body(response)
    try:
        items = [BatchJob.model_validate(item) for item in body["items"]]
        cursor = body.get("next_cursor")
    except (ValidationError, KeyError, TypeError, AttributeError) as exc:
        raise _invalid(response, "not a page of batch jobs") from exc
    return items, (str(cursor) if cursor else None)


def output_from(response: httpx.Response) -> Any:
    """A model's output: parsed JSON for a JSON content type, else the raw bytes."""
    check(response)
    if is_json(response.headers.get("Content-Type")):
        return json_body(response)
    return response.content


def _invalid(response: httpx.Response, why: str) -> FreightClientError:
    return FreightClientError(
        response.status_code,
        "invalid_response",
        f"unexpected answer from {response.request.method} {response.request.url.path}: {why}",
    )


def outcome_error(prediction: Prediction) -> FreightClientError:
    """The error a caller asking for the output of a failed/canceled/expired prediction gets.

    Status 424 matches what the real-time route answers for a failed prediction.
    """
    if prediction.error is not None:
        err = prediction.error
        return FreightClientError(424, err.code, err.message, err.detail)
    return FreightClientError(
        424, prediction.status, f"prediction {prediction.id} is {prediction.status}"
    )


# -- what both transports share ----------------------------------------------------------

CHUNK_BYTES = 1 << 20  # large payloads move in 1 MiB pieces: 16x fewer reads, writes, hops


def send_kwargs(call: Call) -> dict[str, Any]:
    """Arguments for ``httpx.Client.build_request``, less the body content."""
    kwargs: dict[str, Any] = {"method": call.method, "url": call.url, "headers": call.headers}
    if call.params:  # httpx drops a URL's own query (a signature) when given params={}
        kwargs["params"] = call.params
    if call.has_json:
        kwargs["json"] = call.json
    if call.timeout is not None:
        kwargs["timeout"] = call.timeout
    return kwargs


def partial_path(path: Path) -> Path:
    """Where a download is written before it is renamed into place (same directory)."""
    return path.with_name(f".{path.name}.part")


def transport_error(exc: httpx.TransportError, base_url: str) -> FreightClientError:
    """No response at all: the server is down, unreachable, or too slow."""
    code = "timeout" if isinstance(exc, httpx.TimeoutException) else "connection_error"
    where = exc.request.url if _has_request(exc) else base_url
    return FreightClientError(0, code, f"{type(exc).__name__} talking to {where}: {exc}")


def _has_request(exc: httpx.TransportError) -> bool:
    try:
        exc.request  # noqa: B018 - httpx raises RuntimeError when no request is attached
    except RuntimeError:
        return False
    return True
