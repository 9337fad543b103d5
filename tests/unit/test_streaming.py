"""freight.streaming: what a yielded value becomes, how chunks join, how they read back."""

from __future__ import annotations

import pytest

from freight.streaming import (
    BYTES,
    CONCAT,
    JSON,
    LIST,
    MAX_CHUNK_BYTES,
    TEXT,
    ChunkError,
    Part,
    as_bytes,
    join,
    part_of,
    value_of,
)


def parts(*values: object) -> list[Part]:
    return [part_of(v, 0.0) for v in values]


def test_each_kind_travels_as_text_and_reads_back_as_yielded() -> None:
    """str as it is, bytes in base64, anything else as its JSON text."""
    got = parts("héllo", b"\x00\xff", {"a": [1, 2.5]}, 3, None)
    assert [(p.kind, p.data) for p in got] == [
        (TEXT, "héllo"),
        (BYTES, "AP8="),
        (JSON, '{"a":[1,2.5]}'),
        (JSON, "3"),
        (JSON, "null"),
    ]
    assert [p.value for p in got] == ["héllo", b"\x00\xff", {"a": [1, 2.5]}, 3, None]
    assert part_of(bytearray(b"ab"), 0.0).value == b"ab"


def test_a_chunk_that_is_no_json_or_too_big_is_refused() -> None:
    with pytest.raises(ChunkError, match="JSON-able"):
        part_of(object(), 0.0)
    with pytest.raises(ChunkError, match="over the limit"):
        part_of("x" * (MAX_CHUNK_BYTES + 1), 0.0)


def test_concat_joins_text_with_text_and_bytes_with_bytes() -> None:
    assert join(parts("a", "b", "c"), CONCAT) == "abc"
    assert join(parts(b"a", b"bc"), CONCAT) == b"abc"
    assert join([], CONCAT) == ""
    for mixed in (parts("a", b"b"), parts({"a": 1})):
        with pytest.raises(ChunkError, match="concat"):
            join(mixed, CONCAT)


def test_list_keeps_each_chunk_bytes_in_base64() -> None:
    assert join(parts("a", {"b": 1}, b"\x01"), LIST) == ["a", {"b": 1}, "AQ=="]
    assert join([], LIST) == []


def test_a_byte_stream_carries_text_in_utf8_and_json_on_its_own_line() -> None:
    assert [as_bytes(p.kind, p.data) for p in parts("é", b"\x01", [1])] == [
        "é".encode(),
        b"\x01",
        b"[1]\n",
    ]


def test_a_malformed_chunk_is_a_value_error() -> None:
    for kind, data in ((BYTES, "!!"), ("words", "x"), (JSON, "{")):
        with pytest.raises(ValueError):
            value_of(kind, data)
