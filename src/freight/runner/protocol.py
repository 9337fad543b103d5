"""The frames between agent and runner, as types, and their wire encoding.

Why named types: the agent and the runner are two programs that must agree on
every field; a typo in a dict key used to be a silent ``None``. Here each frame
is a frozen dataclass, encoding is explicit, and decoding validates every field
and raises :class:`ProtocolError` on anything malformed, so a broken runner is a
crashed replica, never a half-read result.

Wire: a 4-byte big-endian length, then one orjson object with a ``type`` tag
(result items carry a ``kind`` tag). Bytes travel base64 in the JSON. Only
small data crosses this pipe: object-store keys, inline JSON inputs and outputs
under the inline limits, handed-back small outputs, errors, and each input's
:class:`~freight.model.PredictionContext` (what the model reads through
``freight.context()``). Payloads move by reference (object keys).

    agent  -> runner   Batch, Stop
    runner -> agent    Ready | LoadFailed (first frame), then one Result per Batch
                       Logs: what the model printed, any number of them before
                       Ready (its load) or before a batch's Result (that batch's)
                       Streamed: the chunks a streaming model yielded, each as it
                       came, before its batch's Result
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import orjson

from freight.logs import PHASES, STREAMS, Printed
from freight.model import PredictionContext
from freight.streaming import KINDS, Part

_HEADER = struct.Struct(">I")
MAX_FRAME_BYTES = 64 * 1024 * 1024

Wire = dict[str, Any]


class ProtocolError(Exception):
    """The peer sent something that is not a valid frame (or closed the pipe)."""


# -- frames ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ready:
    """The model is loaded; the runner takes batches."""

    load_ms: float
    pid: int


@dataclass(frozen=True, slots=True)
class LoadFailed:
    """Importing or loading the model failed; the runner exits after this frame."""

    code: str
    message: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One prediction's input, by reference: inline JSON text or an object key; and
    its context (None: the runner makes one of the id alone)."""

    id: str
    input_json: str | None = None
    input_key: str | None = None
    content_type: str | None = None
    size: int | None = None
    context: PredictionContext | None = None


@dataclass(frozen=True, slots=True)
class Batch:
    items: tuple[BatchItem, ...]


@dataclass(frozen=True, slots=True)
class Stop:
    """Exit after the current batch."""


@dataclass(frozen=True, slots=True)
class Inline:
    """A small JSON output as text: it goes on the row, and the agent stores it."""

    id: str
    json: str


@dataclass(frozen=True, slots=True)
class HandedBack:
    """Small non-JSON bytes the agent stores, with the rest of the batch, in one go."""

    id: str
    data: bytes
    content_type: str


@dataclass(frozen=True, slots=True)
class Stored:
    """An output the runner already wrote under ``key``. ``inline_json`` is a copy for
    the row when the output is JSON under the inline limit (too big to hand back)."""

    id: str
    key: str
    content_type: str
    size: int
    inline_json: str | None = None


@dataclass(frozen=True, slots=True)
class Failed:
    """The prediction failed in the runner (``code`` is an ErrorCode value)."""

    id: str
    code: str
    message: str
    detail: dict[str, Any] = field(default_factory=dict)


ResultItem = Inline | HandedBack | Stored | Failed


@dataclass(frozen=True, slots=True)
class Logs:
    """Lines the model printed or logged (``freight.logs``), sent as they come; ``dropped``:
    the bytes of lines the runner dropped past its bound."""

    lines: tuple[Printed, ...]
    dropped: int = 0


@dataclass(frozen=True, slots=True)
class Streamed:
    """Chunks a streaming model yielded for prediction ``id`` (:mod:`freight.streaming`),
    sent as they come: one frame per chunk, the first never held back for the next."""

    id: str
    parts: tuple[Part, ...]


@dataclass(frozen=True, slots=True)
class Result:
    """The outcome of one Batch: at most one item per batch item."""

    items: tuple[ResultItem, ...]
    run_ms: float
    # epoch seconds: started, inputs read, model called, outputs written (the agent's
    # spans of the batch's phases, when tracing); empty from a runner that sent none
    marks: tuple[float, ...] = ()


Frame = Ready | LoadFailed | Batch | Stop | Result | Logs | Streamed


# -- encoding -------------------------------------------------------------------------


def _item_wire(item: ResultItem) -> Wire:
    if isinstance(item, Inline):
        return {"kind": "inline", "id": item.id, "json": item.json}
    if isinstance(item, HandedBack):
        return {
            "kind": "handed_back",
            "id": item.id,
            "b64": base64.b64encode(item.data).decode("ascii"),
            "content_type": item.content_type,
        }
    if isinstance(item, Stored):
        return {
            "kind": "stored",
            "id": item.id,
            "key": item.key,
            "content_type": item.content_type,
            "size": item.size,
            "json": item.inline_json,
        }
    return {
        "kind": "failed",
        "id": item.id,
        "code": item.code,
        "message": item.message,
        "detail": item.detail,
    }


def _context_wire(context: PredictionContext | None) -> Wire | None:
    """The context without its id (the item's own); no deadline travels as null."""
    if context is None:
        return None
    return {
        "attempt": context.attempt,
        "max_attempts": context.max_attempts,
        "deadline": context.deadline if context.deadline != math.inf else None,
        "run_id": context.run_id,
        "step": context.step,
        "item_index": context.item_index,
        "job_id": context.job_id,
    }


def _wire(frame: Frame) -> Wire:
    if isinstance(frame, Batch):
        return {
            "type": "batch",
            "items": [
                {
                    "id": i.id,
                    "input_json": i.input_json,
                    "input_key": i.input_key,
                    "content_type": i.content_type,
                    "size": i.size,
                    "context": _context_wire(i.context),
                }
                for i in frame.items
            ],
        }
    if isinstance(frame, Result):
        return {
            "type": "result",
            "run_ms": frame.run_ms,
            "items": [_item_wire(i) for i in frame.items],
            "marks": frame.marks,
        }
    if isinstance(frame, Logs):
        lines = [[p.at, p.stream, p.level, p.text, p.phase] for p in frame.lines]
        return {"type": "logs", "lines": lines, "dropped": frame.dropped}
    if isinstance(frame, Streamed):
        parts = [[p.at, p.kind, p.data] for p in frame.parts]
        return {"type": "streamed", "id": frame.id, "parts": parts}
    if isinstance(frame, Ready):
        return {"type": "ready", "load_ms": frame.load_ms, "pid": frame.pid}
    if isinstance(frame, LoadFailed):
        return {
            "type": "load_failed",
            "code": frame.code,
            "message": frame.message,
            "detail": frame.detail,
        }
    return {"type": "stop"}


def encode(frame: Frame) -> bytes:
    """The frame as length-prefixed JSON, ready to write to the pipe."""
    try:
        body = orjson.dumps(_wire(frame))
    except TypeError as exc:  # e.g. a detail that is not JSON-able: a bug of the sender
        raise ProtocolError(f"cannot encode {type(frame).__name__}: {exc}") from exc
    return _HEADER.pack(len(body)) + body


# -- decoding -------------------------------------------------------------------------


def _get(obj: Wire, name: str, kinds: type | tuple[type, ...], optional: bool = False) -> Any:
    value = obj.get(name)
    if type(value) is kinds or (value is None and optional):  # the hot path: exact type
        return value
    if not isinstance(value, kinds) or isinstance(value, bool):
        raise ProtocolError(f"field {name!r} is missing or not {_names(kinds)}")
    return value


def _names(kinds: type | tuple[type, ...]) -> str:
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    return " or ".join(k.__name__ for k in kinds)


def _number(obj: Wire, name: str) -> float:
    return float(_get(obj, name, (int, float)))


def _detail(obj: Wire) -> dict[str, Any]:
    detail: dict[str, Any] | None = _get(obj, "detail", dict, optional=True)
    return detail or {}


def _b64(obj: Wire) -> bytes:
    try:
        return base64.b64decode(_get(obj, "b64", str), validate=True)
    except binascii.Error as exc:
        raise ProtocolError(f"field 'b64' is not base64: {exc}") from exc


_ITEMS: dict[str, Callable[[Wire], ResultItem]] = {
    "inline": lambda o: Inline(_get(o, "id", str), _get(o, "json", str)),
    "handed_back": lambda o: HandedBack(_get(o, "id", str), _b64(o), _get(o, "content_type", str)),
    "stored": lambda o: Stored(
        _get(o, "id", str),
        _get(o, "key", str),
        _get(o, "content_type", str),
        _get(o, "size", int),
        _get(o, "json", str, optional=True),
    ),
    "failed": lambda o: Failed(
        _get(o, "id", str), _get(o, "code", str), _get(o, "message", str), _detail(o)
    ),
}


def _objects(obj: Wire) -> list[Wire]:
    items: list[Any] = _get(obj, "items", list)
    if not all(isinstance(i, dict) for i in items):
        raise ProtocolError("field 'items' holds something that is not an object")
    return items


def _result_item(obj: Wire) -> ResultItem:
    kind = obj.get("kind")
    decode = _ITEMS.get(kind) if isinstance(kind, str) else None
    if decode is None:
        raise ProtocolError(f"unknown result item kind {obj.get('kind')!r}")
    return decode(obj)


def _context(item_id: str, obj: Wire | None) -> PredictionContext | None:
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise ProtocolError("field 'context' is not an object")
    deadline = obj.get("deadline")
    return PredictionContext(
        item_id,
        _get(obj, "attempt", int),
        _get(obj, "max_attempts", int),
        math.inf if deadline is None else _number(obj, "deadline"),
        _get(obj, "run_id", str, optional=True),
        _get(obj, "step", str, optional=True),
        _get(obj, "item_index", int, optional=True),
        _get(obj, "job_id", str, optional=True),
    )


def _batch_item(obj: Wire) -> BatchItem:
    item_id: str = _get(obj, "id", str)
    return BatchItem(
        item_id,
        _get(obj, "input_json", str, optional=True),
        _get(obj, "input_key", str, optional=True),
        _get(obj, "content_type", str, optional=True),
        _get(obj, "size", int, optional=True),
        _context(item_id, obj.get("context")),
    )


def _printed(value: Any) -> Printed:
    if not isinstance(value, list) or len(value) != 5:
        raise ProtocolError("a log line is not a list of 5 fields")
    at, stream, level, text, phase = value
    if (
        not isinstance(at, (int, float))
        or stream not in STREAMS
        or phase not in PHASES
        or not isinstance(text, str)
        or not isinstance(level, (str, type(None)))
    ):
        raise ProtocolError(f"malformed log line {value!r:.200}")
    return Printed(float(at), stream, text, level, phase)


def _logs(obj: Wire) -> Logs:
    lines: list[Any] = _get(obj, "lines", list)
    return Logs(tuple(_printed(line) for line in lines), _get(obj, "dropped", int))


def _part(value: Any) -> Part:
    if not isinstance(value, list) or len(value) != 3:
        raise ProtocolError("a streamed part is not a list of 3 fields")
    at, kind, data = value
    if not isinstance(at, int | float) or kind not in KINDS or not isinstance(data, str):
        raise ProtocolError(f"malformed streamed part {value!r:.200}")
    return Part(float(at), kind, data)


def _streamed(obj: Wire) -> Streamed:
    parts: list[Any] = _get(obj, "parts", list)
    return Streamed(_get(obj, "id", str), tuple(_part(p) for p in parts))


def _marks(obj: Wire) -> tuple[float, ...]:
    marks: list[Any] = _get(obj, "marks", list, optional=True) or []
    if not all(isinstance(m, int | float) and not isinstance(m, bool) for m in marks):
        raise ProtocolError("field 'marks' holds something that is not a number")
    return tuple(float(m) for m in marks)


_FRAMES: dict[str, Callable[[Wire], Frame]] = {
    "ready": lambda o: Ready(_number(o, "load_ms"), _get(o, "pid", int)),
    "load_failed": lambda o: LoadFailed(_get(o, "code", str), _get(o, "message", str), _detail(o)),
    "batch": lambda o: Batch(tuple(_batch_item(i) for i in _objects(o))),
    "stop": lambda o: Stop(),
    "result": lambda o: Result(
        tuple(_result_item(i) for i in _objects(o)), _number(o, "run_ms"), _marks(o)
    ),
    "logs": _logs,
    "streamed": _streamed,
}


def decode(body: bytes) -> Frame:
    """One frame from its JSON body; ProtocolError when it is not a valid frame."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"frame is not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise ProtocolError("frame is not a JSON object")
    kind = obj.get("type")
    decoder = _FRAMES.get(kind) if isinstance(kind, str) else None
    if decoder is None:
        raise ProtocolError(f"unknown frame type {obj.get('type')!r}")
    return decoder(obj)


# -- framing --------------------------------------------------------------------------


def _size(header: bytes) -> int:
    (size,) = _HEADER.unpack(header)
    if size > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {size} bytes is over the limit")
    return int(size)


def read_sync(stream: BinaryIO) -> Frame | None:
    """Read one frame from a blocking stream; None at end of stream."""
    header = stream.read(_HEADER.size)
    if not header:
        return None
    if len(header) < _HEADER.size:
        raise ProtocolError("truncated frame header")
    size = _size(header)
    body = stream.read(size)
    if len(body) < size:
        raise ProtocolError("truncated frame body")
    return decode(body)


async def read_async(reader: asyncio.StreamReader) -> Frame:
    """Read one frame; raise ProtocolError when the runner has gone away."""
    try:
        size = _size(await reader.readexactly(_HEADER.size))
        body = await reader.readexactly(size)
    except (asyncio.IncompleteReadError, ConnectionError) as exc:
        raise ProtocolError("runner closed its pipe") from exc
    return decode(body)


__all__ = [
    "MAX_FRAME_BYTES",
    "Batch",
    "BatchItem",
    "Failed",
    "Frame",
    "HandedBack",
    "Inline",
    "LoadFailed",
    "Logs",
    "ProtocolError",
    "Ready",
    "Result",
    "ResultItem",
    "Stop",
    "Stored",
    "Streamed",
    "decode",
    "encode",
    "read_async",
    "read_sync",
]
