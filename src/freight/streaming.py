"""Streamed outputs: the chunks a generator model yields while it runs.

A model whose ``predict`` is a generator function (``def … yield`` or ``async def …
yield``) *streams*: each value it yields is a chunk, sent to the agent as it comes
(:class:`Part`, one frame each: the first chunk is not held back for the next),
stored numbered per prediction (:class:`Chunk`, ``seq`` from 1: ``store/streamed.py``)
and shown as ``chunk`` events of the prediction's event stream, so a client that
reconnects with ``Last-Event-ID`` resumes after the last chunk it saw. When the
generator ends, its chunks made one (:func:`join`) are the prediction's output, as the
model declares with ``stream_output``: ``concat`` (the default: the text, or the bytes,
of all chunks end to end) or ``list`` (a JSON list of the chunks).

A chunk is text (``str``), bytes, or any JSON value; it travels and is kept as its
``kind`` and a text ``data`` (bytes in base64, a JSON value as its JSON text). One
chunk is at most :data:`MAX_CHUNK_BYTES`: a model that streams megabytes at a time
should return a file instead.

Pure: the types, the encoding of a chunk, the join, the wake-up key.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

TEXT: Final = "text"
BYTES: Final = "bytes"
JSON: Final = "json"
KINDS: Final = frozenset({TEXT, BYTES, JSON})

#: ``stream_output``: the chunks end to end (str or bytes), or the list of them
CONCAT: Final = "concat"
LIST: Final = "list"
OUTPUTS: Final = frozenset({CONCAT, LIST})

MAX_CHUNK_BYTES: Final = 1 << 20
"""The most one chunk may hold, encoded (a bigger one fails the prediction
``output_error``): chunks go through the database, one row each."""
MAX_PAGE: Final = 1000
"""The most chunks one read returns."""


class ChunkError(ValueError):
    """A chunk freight cannot stream (not JSON-able, too big), or chunks that do not
    join as the model declared: the prediction's ``output_error``."""


@dataclass(frozen=True, slots=True)
class Part:
    """A chunk as the runner sends it: not yet numbered."""

    at: float
    kind: str
    data: str

    @property
    def value(self) -> Any:
        return value_of(self.kind, self.data)


@dataclass(frozen=True, slots=True)
class Chunk:
    """One stored chunk of a prediction: ``seq`` from 1, ``attempt`` the attempt that
    yielded it (a prediction run again after its worker died streams again from its
    start, with seq going on)."""

    seq: int
    at: float
    prediction_id: str
    attempt: int
    kind: str
    data: str

    @property
    def value(self) -> Any:
        return value_of(self.kind, self.data)


@dataclass(frozen=True, slots=True)
class Append:
    """Chunks to append to one prediction, yielded by its attempt ``attempt``."""

    prediction_id: str
    attempt: int
    parts: tuple[Part, ...]


def part_of(value: Any, at: float) -> Part:
    """A yielded value as a part; ChunkError for one that is not str, bytes or JSON-able,
    or bigger than :data:`MAX_CHUNK_BYTES`."""
    if isinstance(value, str):
        part = Part(at, TEXT, value)
    elif isinstance(value, bytes | bytearray | memoryview):
        part = Part(at, BYTES, base64.b64encode(bytes(value)).decode("ascii"))
    else:
        try:
            part = Part(at, JSON, orjson.dumps(value).decode())
        except TypeError as exc:
            raise ChunkError(
                f"a streamed chunk must be str, bytes or JSON-able, not {type(value).__name__}"
            ) from exc
    if len(part.data) > MAX_CHUNK_BYTES:
        raise ChunkError(
            f"a streamed chunk of {len(part.data)} bytes is over the limit of "
            f"{MAX_CHUNK_BYTES}: yield smaller chunks, or return a file"
        )
    return part


def value_of(kind: str, data: str) -> Any:
    """A chunk's value from its kind and data (ValueError for a malformed one)."""
    if kind == TEXT:
        return data
    if kind == BYTES:
        try:
            return base64.b64decode(data, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"a bytes chunk that is not base64: {exc}") from exc
    if kind == JSON:
        return orjson.loads(data)
    raise ValueError(f"unknown chunk kind {kind!r}")


def join(parts: Sequence[Part], output: str) -> Any:
    """The prediction's output from its chunks: ``concat`` joins text with text and bytes
    with bytes (no chunk: ``""``), ``list`` is the JSON list of the chunks (bytes in
    base64). ChunkError when they do not join (``concat`` of JSON values, or of text
    and bytes mixed)."""
    if output == LIST:
        return [p.data if p.kind == BYTES else value_of(p.kind, p.data) for p in parts]
    kinds = {p.kind for p in parts}
    if not kinds or kinds == {TEXT}:
        return "".join(p.data for p in parts)
    if kinds == {BYTES}:
        return b"".join(value_of(p.kind, p.data) for p in parts)
    raise ChunkError(
        "stream_output 'concat' joins chunks that are all str or all bytes; these were "
        f"{', '.join(sorted(kinds))}: yield one kind, or declare stream_output = 'list'"
    )


def as_bytes(kind: str, data: str) -> bytes:
    """A chunk as the bytes of a byte stream (chunked HTTP, SageMaker's ``PayloadPart``):
    text in UTF-8, bytes as they are, a JSON value as its JSON text and a newline."""
    if kind == TEXT:
        return data.encode()
    if kind == BYTES:
        return bytes(value_of(kind, data))
    return data.encode() + b"\n"


def signal_key(prediction_id: str) -> str:
    """The key a prediction's new chunks are published under (``CompletionHub``; on
    PostgreSQL the ``freight_done`` notification of an insert carries it): apart from
    its completions, so that waiters of its end are not woken by its chunks."""
    return f"chunks:{prediction_id}"


__all__ = [
    "BYTES",
    "CONCAT",
    "JSON",
    "KINDS",
    "LIST",
    "MAX_CHUNK_BYTES",
    "MAX_PAGE",
    "OUTPUTS",
    "TEXT",
    "Append",
    "Chunk",
    "ChunkError",
    "Part",
    "as_bytes",
    "join",
    "part_of",
    "signal_key",
    "value_of",
]
