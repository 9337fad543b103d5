"""freight.runner.protocol: typed frames, length-prefixed JSON between agent and runner."""

from __future__ import annotations

import asyncio
import io
import math
import os
import struct
import threading

import orjson
import pytest

from freight.model import PredictionContext
from freight.runner.protocol import (
    MAX_FRAME_BYTES,
    Batch,
    BatchItem,
    Failed,
    Frame,
    HandedBack,
    Inline,
    LoadFailed,
    ProtocolError,
    Ready,
    Result,
    Stop,
    Stored,
    Streamed,
    decode,
    encode,
    read_async,
    read_sync,
)
from freight.streaming import Part

FRAMES: list[Frame] = [
    Ready(load_ms=12.5, pid=4321),
    LoadFailed("load_error", "RuntimeError: no weights", {"type": "RuntimeError"}),
    Batch(
        (
            BatchItem("a", input_json='{"x":1}', content_type="application/json", size=7),
            BatchItem("b", input_key="inputs/b", content_type="image/png", size=10),
            BatchItem(
                "c",
                input_json="{}",
                context=PredictionContext(
                    "c", 2, 3, 1_700_000_030.5, run_id="r", step="s", item_index=0
                ),
            ),
            BatchItem("d", input_key="k", context=PredictionContext("d", job_id="j")),
        )
    ),
    Stop(),
    Result(
        (
            Inline("a", '{"y":"é"}'),
            HandedBack("b", b"\x00\xffbytes", "application/octet-stream"),
            Stored("c", "outputs/c", "application/json", 70_000, inline_json="[1]"),
            Stored("d", "outputs/d", "image/png", 5),
            Failed("e", "model_error", "ValueError: no", {"type": "ValueError"}),
        ),
        run_ms=3.25,
    ),
    Result((), run_ms=0),
    Streamed("a", (Part(1_700_000_000.5, "text", "tok"), Part(1.0, "json", '{"i":1}'))),
]


def body(obj: object) -> bytes:
    return orjson.dumps(obj)


def test_frame_is_big_endian_length_then_json() -> None:
    """encode writes a 4-byte big-endian length followed by a JSON object tagged by type."""
    frame = encode(Stop())
    assert frame[:4] == struct.pack(">I", len(frame) - 4)
    assert orjson.loads(frame[4:]) == {"type": "stop"}


def test_bytes_travel_as_base64() -> None:
    """Handed-back bytes are base64 text in the JSON body."""
    frame = encode(Result((HandedBack("b", b"\x00\x01", "application/octet-stream"),), 1.0))
    (item,) = orjson.loads(frame[4:])["items"]
    assert (item["kind"], item["b64"]) == ("handed_back", "AAE=")


@pytest.mark.parametrize("frame", FRAMES, ids=lambda f: type(f).__name__)
def test_every_frame_round_trips(frame: Frame) -> None:
    """decode(encode(frame)) gives back an equal frame of the same type."""
    assert decode(encode(frame)[4:]) == frame


def test_round_trip_through_a_buffer() -> None:
    """Frames written back to back are read back in order; end of stream gives None."""
    stream = io.BytesIO(b"".join(encode(f) for f in FRAMES))
    assert [read_sync(stream) for _ in FRAMES] == FRAMES
    assert read_sync(stream) is None


def test_round_trip_through_a_pipe() -> None:
    """A large frame crosses an OS pipe intact (the writer runs in a thread)."""
    big = Result((Inline("a", "x" * (1 << 20)),), 1.0)
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "rb") as reader, os.fdopen(write_fd, "wb") as writer:

        def write() -> None:
            writer.write(encode(big) + encode(Stop()))
            writer.close()

        thread = threading.Thread(target=write)
        thread.start()
        assert read_sync(reader) == big
        assert read_sync(reader) == Stop()
        assert read_sync(reader) is None
        thread.join()


@pytest.mark.parametrize(
    ("wire", "match"),
    [
        (b"not json", "not JSON"),
        (body([1, 2]), "not a JSON object"),
        (body({"no": "type"}), "unknown frame type"),
        (body({"type": ["x"]}), "unknown frame type"),
        (body({"type": "hello"}), "unknown frame type"),
        (body({"type": "ready", "pid": 1}), "load_ms"),
        (body({"type": "ready", "load_ms": 1, "pid": "1"}), "pid"),
        (body({"type": "ready", "load_ms": True, "pid": 1}), "load_ms"),
        (body({"type": "batch", "items": {}}), "items"),
        (body({"type": "batch", "items": [1]}), "items"),
        (body({"type": "batch", "items": [{"input_json": "1"}]}), "'id'"),
        (body({"type": "batch", "items": [{"id": "a", "size": "7"}]}), "size"),
        (body({"type": "batch", "items": [{"id": "a", "context": 1}]}), "context"),
        (
            body({"type": "batch", "items": [{"id": "a", "context": {"attempt": 1}}]}),
            "max_attempts",
        ),
        (
            body(
                {
                    "type": "batch",
                    "items": [{"id": "a", "context": {"attempt": 1, "max_attempts": 1, "step": 2}}],
                }
            ),
            "step",
        ),
        (body({"type": "result", "run_ms": 1}), "items"),
        (body({"type": "result", "run_ms": 1, "items": [{"id": "a"}]}), "kind"),
        (body({"type": "result", "run_ms": 1, "items": [{"kind": "inline", "id": "a"}]}), "json"),
        (
            body({"type": "result", "run_ms": 1, "items": [{"kind": "x", "id": "a"}]}),
            "unknown result item kind",
        ),
        (
            body(
                {
                    "type": "result",
                    "run_ms": 1,
                    "items": [{"kind": "handed_back", "id": "a", "b64": "!!", "content_type": "x"}],
                }
            ),
            "base64",
        ),
        (
            body(
                {
                    "type": "result",
                    "run_ms": 1,
                    "items": [
                        {"kind": "failed", "id": "a", "code": "c", "message": "m", "detail": 1}
                    ],
                }
            ),
            "detail",
        ),
        (body({"type": "load_failed", "message": "m"}), "code"),
        (body({"type": "streamed", "id": "a", "parts": [[1, "words", "x"]]}), "streamed part"),
        (body({"type": "streamed", "id": "a", "parts": [[1, "text"]]}), "3 fields"),
    ],
)
def test_malformed_frames_raise_protocol_error(wire: bytes, match: str) -> None:
    """Decoding validates every field: anything malformed is a ProtocolError naming it."""
    with pytest.raises(ProtocolError, match=match):
        decode(wire)


def test_optional_fields_may_be_absent() -> None:
    """A batch item needs only its id; a failure without detail gets an empty one."""
    assert decode(body({"type": "batch", "items": [{"id": "a"}]})) == Batch((BatchItem("a"),))
    result = body(
        {
            "type": "result",
            "run_ms": 1,
            "items": [{"kind": "failed", "id": "a", "code": "c", "message": "m"}],
        }
    )
    assert decode(result) == Result((Failed("a", "c", "m", {}),), 1.0)


def test_a_context_without_deadline_travels_as_null() -> None:
    """A context with no deadline (inf, which JSON cannot hold) crosses as null and comes
    back as inf; the context's id is the item's."""
    frame = encode(Batch((BatchItem("a", context=PredictionContext("a")),)))
    (item,) = orjson.loads(frame[4:])["items"]
    assert item["context"]["deadline"] is None and "prediction_id" not in item["context"]
    decoded = decode(frame[4:])
    assert isinstance(decoded, Batch)
    assert decoded.items[0].context == PredictionContext("a", deadline=math.inf)


def test_unencodable_detail_is_a_protocol_error() -> None:
    """A frame that cannot be serialised raises ProtocolError, not a bare TypeError."""
    with pytest.raises(ProtocolError, match="cannot encode"):
        encode(Result((Failed("a", "c", "m", {"x": {1, 2}}),), 1.0))


@pytest.mark.parametrize("cut", [1, 3])
def test_truncated_header_raises(cut: int) -> None:
    """A stream ending inside the 4-byte header is a ProtocolError."""
    with pytest.raises(ProtocolError, match="header"):
        read_sync(io.BytesIO(encode(Stop())[:cut]))


def test_truncated_body_raises() -> None:
    """A stream ending inside the body is a ProtocolError."""
    with pytest.raises(ProtocolError, match="body"):
        read_sync(io.BytesIO(encode(Stop())[:-1]))


def test_sync_refuses_oversized_frames() -> None:
    """A header announcing more than MAX_FRAME_BYTES is refused before reading the body."""
    with pytest.raises(ProtocolError, match="over the limit"):
        read_sync(io.BytesIO(struct.pack(">I", MAX_FRAME_BYTES + 1)))


def reader_of(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


async def test_async_round_trip() -> None:
    """read_async reads the frames encode wrote, in order."""
    reader = reader_of(b"".join(encode(f) for f in FRAMES))
    assert [await read_async(reader) for _ in FRAMES] == FRAMES


@pytest.mark.parametrize("data", [b"", b"\x00\x00", encode(Stop())[:-2]])
async def test_async_truncated_or_closed_raises(data: bytes) -> None:
    """A closed or cut-off pipe is a ProtocolError, never a hang or an IncompleteReadError."""
    with pytest.raises(ProtocolError, match="closed"):
        await read_async(reader_of(data))


async def test_async_refuses_oversized_frames() -> None:
    """A header announcing more than MAX_FRAME_BYTES is refused before reading the body."""
    with pytest.raises(ProtocolError, match="over the limit"):
        await read_async(reader_of(struct.pack(">I", MAX_FRAME_BYTES + 1)))


async def test_async_malformed_frame_raises() -> None:
    """A well-framed body that is not a valid frame is a ProtocolError on the async side too."""
    data = body({"type": "result", "items": []})
    with pytest.raises(ProtocolError, match="run_ms"):
        await read_async(reader_of(struct.pack(">I", len(data)) + data))
