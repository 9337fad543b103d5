"""Reading request bodies with limits and precise errors (FastAPI sets no body limit)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request

from freight.errors import InvalidRequestError, PayloadTooLargeError, UnsupportedMediaTypeError
from freight.media import is_json_type


def content_type_of(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def declared_length(request: Request) -> int | None:
    raw = request.headers.get("content-length")
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise InvalidRequestError(
            "Content-Length is not a number", code="bad_content_length"
        ) from None


def _too_large(size: int, limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"the body is {size} bytes or more, over the limit of {limit}",
        size=size,
        limit=limit,
    )


async def read_limited(request: Request, limit: int) -> bytes:
    """The whole body, refusing (413) past ``limit`` without reading it all."""
    length = declared_length(request)
    if length is not None and length > limit:
        raise _too_large(length, limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(size, limit)
        chunks.append(chunk)
    return b"".join(chunks)


def require_json(request: Request) -> None:
    if not is_json_type(content_type_of(request)):
        raise UnsupportedMediaTypeError(
            f"expected Content-Type application/json, got {content_type_of(request) or 'none'!r}"
        )


async def read_json(request: Request, limit: int) -> Any:
    """Parse a JSON body: 415 for another content type, 400 ``invalid_json``, 413 oversize."""
    require_json(request)
    body = await read_limited(request, limit)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(
            f"the body is not valid JSON: {exc}", code="invalid_json"
        ) from None


def body_stream(request: Request, limit: int) -> AsyncIterator[bytes]:
    """The body as chunks for streaming into storage (which enforces ``limit`` as it
    goes); a declared Content-Length over the limit is refused before reading."""
    length = declared_length(request)
    if length is not None and length > limit:
        raise _too_large(length, limit)
    return _chunks(request)


async def _chunks(request: Request) -> AsyncIterator[bytes]:
    async for chunk in request.stream():
        if chunk:
            yield chunk
