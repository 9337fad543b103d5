"""freight.runner.protocol: length-prefixed JSON frames between agent and runner."""

from __future__ import annotations

import asyncio
import io
import os
import struct
import threading
from typing import Any

import pytest

from freight.runner.protocol import MAX_FRAME_BYTES, ProtocolError, encode, read_async, read_sync

MESSAGES: list[dict[str, Any]] = [
    {"type": "batch", "items": [{"id": "a", "input_json": '{"x":1}'}]},
    {},
    {"text": "é" * 1000, "n": 1.5, "none": None},
]


def test_frame_is_big_endian_length_then_json() -> None:
    """encode writes a 4-byte big-endian length followed by the JSON body."""
    frame = encode({"a": 1})
    assert frame[:4] == struct.pack(">I", 7) and frame[4:] == b'{"a":1}'


def test_round_trip_through_a_buffer() -> None:
    """Frames written back to back are read back in order; end of stream gives None."""
    stream = io.BytesIO(b"".join(encode(m) for m in MESSAGES))
    assert [read_sync(stream) for _ in MESSAGES] == MESSAGES
    assert read_sync(stream) is None


def test_round_trip_through_a_pipe() -> None:
    """A large frame crosses an OS pipe intact (the writer runs in a thread)."""
    big = {"blob": "x" * (1 << 20)}
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "rb") as reader, os.fdopen(write_fd, "wb") as writer:

        def write() -> None:
            writer.write(encode(big) + encode({"last": True}))
            writer.close()

        thread = threading.Thread(target=write)
        thread.start()
        assert read_sync(reader) == big
        assert read_sync(reader) == {"last": True}
        assert read_sync(reader) is None
        thread.join()


@pytest.mark.parametrize("cut", [1, 3])
def test_truncated_header_raises(cut: int) -> None:
    """A stream ending inside the 4-byte header is a ProtocolError."""
    with pytest.raises(ProtocolError, match="header"):
        read_sync(io.BytesIO(encode({"a": 1})[:cut]))


def test_truncated_body_raises() -> None:
    """A stream ending inside the body is a ProtocolError."""
    with pytest.raises(ProtocolError, match="body"):
        read_sync(io.BytesIO(encode({"a": 1})[:-1]))


def reader_of(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


async def test_async_round_trip() -> None:
    """read_async reads the frames encode wrote, in order."""
    reader = reader_of(b"".join(encode(m) for m in MESSAGES))
    assert [await read_async(reader) for _ in MESSAGES] == MESSAGES


@pytest.mark.parametrize("data", [b"", b"\x00\x00", encode({"a": 1})[:-2]])
async def test_async_truncated_or_closed_raises(data: bytes) -> None:
    """A closed or cut-off pipe is a ProtocolError, never a hang or an IncompleteReadError."""
    with pytest.raises(ProtocolError, match="closed"):
        await read_async(reader_of(data))


async def test_async_refuses_oversized_frames() -> None:
    """A header announcing more than MAX_FRAME_BYTES is refused before reading the body."""
    with pytest.raises(ProtocolError, match="over the limit"):
        await read_async(reader_of(struct.pack(">I", MAX_FRAME_BYTES + 1)))
