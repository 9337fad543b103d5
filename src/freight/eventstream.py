"""AWS's event-stream framing (``application/vnd.amazon.eventstream``): how SageMaker's
``invoke_endpoint_with_response_stream`` sends a model's chunks, so botocore's own
parser reads freight's stream unchanged.

A message is a prelude (its total length, its headers' length, a CRC32 of those eight
bytes), the headers (each a name, a type byte, a value: freight sends only strings,
type 7), the payload, and a CRC32 of everything before it; integers are big-endian.
A ``PayloadPart`` event carries a chunk's bytes as its payload; a failure is an
exception message (``:message-type: exception``) whose ``:exception-type`` names it
(SageMaker's ``ModelStreamError``) and whose payload is its JSON (``Message``,
``ErrorCode``), which botocore raises as an ``EventStreamError`` of that code.

Pure: bytes in, bytes out.
"""

from __future__ import annotations

import struct
import zlib
from typing import Final

import orjson

CONTENT_TYPE: Final = "application/vnd.amazon.eventstream"
_STRING: Final = 7
_PRELUDE = struct.Struct(">II")
_CRC = struct.Struct(">I")


def _header(name: str, value: str) -> bytes:
    key, data = name.encode(), value.encode()
    return bytes([len(key)]) + key + bytes([_STRING]) + struct.pack(">H", len(data)) + data


def message(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message of ``headers`` (strings) and ``payload``."""
    head = b"".join(_header(name, value) for name, value in headers.items())
    prelude = _PRELUDE.pack(
        _PRELUDE.size + _CRC.size + len(head) + len(payload) + _CRC.size, len(head)
    )
    prelude += _CRC.pack(zlib.crc32(prelude))
    body = prelude + head + payload
    return body + _CRC.pack(zlib.crc32(body))


def event(kind: str, payload: bytes, content_type: str = "application/octet-stream") -> bytes:
    """An event of type ``kind`` (``PayloadPart``) carrying ``payload``."""
    headers = {":event-type": kind, ":content-type": content_type, ":message-type": "event"}
    return message(headers, payload)


def exception(kind: str, fields: dict[str, str]) -> bytes:
    """An exception message of type ``kind`` (``ModelStreamError``), ``fields`` its JSON."""
    headers = {
        ":exception-type": kind,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return message(headers, orjson.dumps(fields))


__all__ = ["CONTENT_TYPE", "event", "exception", "message"]
