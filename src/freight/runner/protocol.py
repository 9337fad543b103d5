"""Framing between agent and runner: a 4-byte big-endian length, then a JSON object.

Only small data crosses this pipe: object-store keys, inline JSON inputs and
outputs under the inline limit, and results. Payloads move by reference.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any, BinaryIO

import orjson

_HEADER = struct.Struct(">I")
MAX_FRAME_BYTES = 64 * 1024 * 1024


class ProtocolError(Exception):
    """The peer sent something that is not a frame (or closed the pipe)."""


def encode(message: dict[str, Any]) -> bytes:
    body = orjson.dumps(message)
    return _HEADER.pack(len(body)) + body


def read_sync(stream: BinaryIO) -> dict[str, Any] | None:
    """Read one frame from a blocking stream; None at end of stream."""
    header = stream.read(_HEADER.size)
    if not header:
        return None
    if len(header) < _HEADER.size:
        raise ProtocolError("truncated frame header")
    (size,) = _HEADER.unpack(header)
    if size > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {size} bytes is over the limit")
    body = stream.read(size)
    if len(body) < size:
        raise ProtocolError("truncated frame body")
    return _decode(body)


def _decode(body: bytes) -> dict[str, Any]:
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"frame is not JSON: {exc}") from exc
    if not isinstance(message, dict):
        raise ProtocolError("frame is not a JSON object")
    return message


async def read_async(reader: asyncio.StreamReader) -> dict[str, Any]:
    """Read one frame; raise ProtocolError when the runner has gone away."""
    try:
        header = await reader.readexactly(_HEADER.size)
        (size,) = _HEADER.unpack(header)
        if size > MAX_FRAME_BYTES:
            raise ProtocolError(f"frame of {size} bytes is over the limit")
        body = await reader.readexactly(size)
    except (asyncio.IncompleteReadError, ConnectionError) as exc:
        raise ProtocolError("runner closed its pipe") from exc
    return _decode(body)
