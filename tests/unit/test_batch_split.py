"""Cutting input files into pieces: lines, gzip, CSV headers, limits, determinism."""

from __future__ import annotations

import gzip
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freight.batch.spec import Format
from freight.batch.split import (
    CALLS_PER_CHUNK_MAX,
    CHUNK_MAX_BYTES,
    TOO_LARGE_MARKER,
    Piece,
    QuoteScanner,
    chunk_records,
    is_blank,
    pieces,
    too_large_size,
    units,
    whole_csv_line,
)
from freight.errors import InvalidRequestError


async def blocks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def split(
    data: bytes,
    format: Format = "jsonl",
    *,
    block: int = 7,
    gz: bool = False,
    records_for: Callable[[int], int] = lambda index: 2,
    max_bytes: int = 1000,
    max_line_bytes: int = 100,
) -> list[Piece]:
    stream = blocks(data, block)
    return [
        p
        async for p in pieces(
            stream,
            format=format,
            gzip=gz,
            records_for=records_for,
            max_bytes=max_bytes,
            max_line_bytes=max_line_bytes,
        )
    ]


def shape(found: list[Piece]) -> list[tuple[int, int, bytes, int]]:
    """What must not depend on read sizes: everything but ``consumed``."""
    return [(p.index, p.first_line, p.data, p.records) for p in found]


def numbered(count: int, start: int = 0) -> bytes:
    return b"".join(b'{"n":%d}\n' % n for n in range(start, start + count))


# -- chunk sizes -------------------------------------------------------------------


def test_chunk_records_double_up_to_the_cap() -> None:
    """Chunk sizes start at one call and double per chunk up to CALLS_PER_CHUNK_MAX calls."""
    sizes = [chunk_records(i, 10) for i in range(9)]
    assert sizes == [10, 20, 40, 80, 160, 320, 640, 640, 640]
    assert chunk_records(10_000, 3) == 3 * CALLS_PER_CHUNK_MAX
    assert chunk_records(0, 0) == 1
    assert CHUNK_MAX_BYTES == 8 * 1024 * 1024


async def test_pieces_follow_records_for() -> None:
    """Piece i holds records_for(i) records: the geometric sizes of chunk_records."""
    found = await split(numbered(100), records_for=lambda i: chunk_records(i, 3))
    assert [p.records for p in found] == [3, 6, 12, 24, 48, 7]
    assert [p.index for p in found] == list(range(6))
    assert [p.first_line for p in found] == [1, 4, 10, 22, 46, 94]
    assert b"".join(p.data for p in found) == numbered(100)


async def test_pieces_are_cut_before_max_bytes() -> None:
    """A piece stops before its data would pass max_bytes, whatever records_for says."""
    data = numbered(200)
    found = await split(data, records_for=lambda i: 1000, max_bytes=100)
    assert all(len(p.data) <= 100 for p in found)
    assert b"".join(p.data for p in found) == data
    assert sum(p.records for p in found) == 200


async def test_a_line_longer_than_max_bytes_is_a_piece_of_its_own() -> None:
    """At least one record per piece: a line over max_bytes (under the line limit) alone."""
    long = b'{"pad":"' + b"x" * 80 + b'"}\n'
    found = await split(b'{"a":1}\n' + long + b'{"b":2}\n', max_bytes=50, records_for=lambda i: 9)
    assert [(p.first_line, p.data) for p in found] == [
        (1, b'{"a":1}\n'),
        (2, long),
        (3, b'{"b":2}\n'),
    ]


async def test_records_for_zero_still_takes_one_record() -> None:
    """A records_for of 0 or less cannot stall the split: each piece takes one record."""
    found = await split(numbered(3), records_for=lambda i: 0)
    assert [p.records for p in found] == [1, 1, 1]


# -- lines -------------------------------------------------------------------------


async def test_crlf_bom_and_missing_final_newline_are_normalised() -> None:
    """\\r\\n becomes \\n, a BOM on the first line goes, a last line gets its newline."""
    found = await split(b'\xef\xbb\xbf{"a":1}\r\n{"a":2}\r\n{"a":3}', records_for=lambda i: 9)
    assert shape(found) == [(0, 1, b'{"a":1}\n{"a":2}\n{"a":3}\n', 3)]


async def test_blank_lines_are_kept_but_not_counted() -> None:
    """Blank lines stay in the data (line numbers hold) and are not records; a piece
    of blank lines only (the file's end) is not emitted."""
    data = b'\n{"a":1}\n \n\n{"a":2}\n{"a":3}\n\t\n\n'
    found = await split(data)
    assert shape(found) == [
        (0, 1, b'\n{"a":1}\n \n\n{"a":2}\n', 2),
        (1, 6, b'{"a":3}\n\t\n\n', 1),
    ]
    found = await split(data, records_for=lambda i: 1)
    assert [p.first_line for p in found] == [1, 3, 6]
    assert found[-1].data == b'{"a":3}\n'


@pytest.mark.parametrize(
    ("data", "format"),
    [(b"", "jsonl"), (b"\n\n  \n", "jsonl"), (b"", "csv"), (b"a,b\n", "csv"), (b"a,b", "csv")],
)
async def test_nothing_to_run_yields_no_pieces(data: bytes, format: Format) -> None:
    """An empty file, a file of blank lines and a header-only CSV give no pieces."""
    assert await split(data, format) == []


async def test_a_too_long_line_becomes_a_marker_with_its_line_number() -> None:
    """A line over max_line_bytes is not kept: a marker line with its size stands in,
    counted as a record, at the line's own number."""
    long = b'{"x":"' + b"y" * 500 + b'"}'
    found = await split(b'{"a":1}\n' + long + b'\n{"a":2}\n', records_for=lambda i: 9, block=3)
    (piece,) = found
    lines = piece.data.split(b"\n")
    assert piece.records == 3
    assert lines[0] == b'{"a":1}' and lines[2] == b'{"a":2}'
    assert lines[1].startswith(TOO_LARGE_MARKER)
    assert too_large_size(lines[1]) == len(long)
    assert too_large_size(b'{"a":1}') is None


async def test_a_too_long_last_line_without_newline_is_a_marker() -> None:
    """The limit holds for an unterminated last line too."""
    (piece,) = await split(b'{"a":1}\n' + b"z" * 300, records_for=lambda i: 9)
    assert piece.data == b'{"a":1}\n' + TOO_LARGE_MARKER + b"300\n"


CSV_SAMPLE = b'a,b\r\n1,"x\r\ny"\r\n\r\n2,"q""\n"\n3,z"\n' + b"4," + b"w" * 150 + b"\n5,e"


@pytest.mark.parametrize(
    ("data", "format"),
    [
        (
            b'\xef\xbb\xbf{"a":1}\r\n\n' + numbered(50) + b"q" * 150 + b"\n" + numbered(20, 50),
            "jsonl",
        ),
        (CSV_SAMPLE, "csv"),
    ],
)
async def test_splitting_does_not_depend_on_block_sizes(data: bytes, format: Format) -> None:
    """The same bytes give the same pieces whatever the read sizes (resume re-splits)."""
    shapes = [
        shape(await split(data, format, block=size, records_for=lambda i: chunk_records(i, 1)))
        for size in (1, 2, 7, 64, 1 << 20)
    ]
    assert all(s == shapes[0] for s in shapes)
    assert len(shapes[0]) > 2


async def test_consumed_grows_to_the_stored_size() -> None:
    """consumed is the stored bytes read so far: non-decreasing, the whole file at the end."""
    data = numbered(100)
    found = await split(data, block=50, records_for=lambda i: 10)
    consumed = [p.consumed for p in found]
    assert consumed == sorted(consumed) and consumed[-1] == len(data)
    assert consumed[0] < len(data)


# -- gzip --------------------------------------------------------------------------


@pytest.mark.parametrize("block", [1, 5, 4096])
async def test_gzip_is_decompressed_as_it_streams(block: int) -> None:
    """A gzip file splits as its plain bytes do; consumed counts the compressed bytes."""
    data = numbered(300)
    packed = gzip.compress(data)
    plain = await split(data, records_for=lambda i: 40)
    found = await split(packed, gz=True, block=block, records_for=lambda i: 40)
    assert shape(found) == shape(plain)
    assert found[-1].consumed == len(packed)


async def test_multi_member_gzip_reads_every_member() -> None:
    """Concatenated gzip members (cat a.gz b.gz) are one file, a line may span two."""
    data = numbered(30)
    packed = gzip.compress(data[:101]) + gzip.compress(data[101:250]) + gzip.compress(data[250:])
    found = await split(packed, gz=True, block=13, records_for=lambda i: 100)
    assert b"".join(p.data for p in found) == data
    assert sum(p.records for p in found) == 30


@pytest.mark.parametrize(
    "packed",
    [gzip.compress(numbered(30))[:-9], b"not gzip at all", gzip.compress(b"{}\n") + b"junk"],
    ids=["truncated", "not-gzip", "trailing-junk"],
)
async def test_bad_gzip_is_an_invalid_input(packed: bytes) -> None:
    """A truncated or corrupt gzip stream is the file's invalid_input, not silent loss."""
    with pytest.raises(InvalidRequestError) as info:
        await split(packed, gz=True)
    assert info.value.code == "invalid_input"


async def test_a_gzip_bomb_is_decompressed_in_bounded_steps() -> None:
    """16 MiB of lines packed into ~60 KiB never sit in memory at once: decompression
    runs in bounded steps and at most a piece and a block are held."""
    line = b'{"pad":"' + b"0" * 90 + b'"}\n'
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    body = line * 8192  # 800 KiB
    packed = b"".join(packer.compress(body) for _ in range(20)) + packer.flush()
    assert len(packed) < len(body) // 10
    tracemalloc.start()
    try:
        count = 0
        async for piece in pieces(
            blocks(packed, 1 << 20),
            format="jsonl",
            gzip=True,
            records_for=lambda i: 1 << 30,
            max_bytes=256 << 10,
            max_line_bytes=1 << 10,
        ):
            count += piece.records
            assert len(piece.data) <= 256 << 10
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 8192 * 20
    assert peak < 6 << 20


async def test_memory_stays_bounded_on_a_large_stream() -> None:
    """Many MiB from a generator: each piece at most max_bytes plus one line."""
    line_bytes = 100

    async def generated() -> AsyncIterator[bytes]:
        for n in range(40):  # 40 MiB, made as it is read
            yield b"".join(b'{"n":%08d,"p":"%s"}\n' % (n, b"x" * 79) for _ in range(10486))

    total = 0
    async for piece in pieces(
        generated(),
        format="jsonl",
        gzip=False,
        records_for=lambda i: chunk_records(i, 1000),
        max_bytes=CHUNK_MAX_BYTES // 4,
        max_line_bytes=1 << 16,
    ):
        assert len(piece.data) <= CHUNK_MAX_BYTES // 4 + line_bytes
        total += piece.records
    assert total == 40 * 10486


# -- CSV ---------------------------------------------------------------------------


async def test_csv_header_is_parsed_and_on_every_piece() -> None:
    """The header (line 1) is in no piece; every piece carries its names."""
    data = b'id,"name, full"\r\n1,a\r\n2,b\r\n3,c\r\n'
    found = await split(data, "csv")
    assert [(p.first_line, p.data, p.header) for p in found] == [
        (2, b"1,a\n2,b\n", ["id", "name, full"]),
        (4, b"3,c\n", ["id", "name, full"]),
    ]


async def test_csv_header_after_a_bom_and_blank_lines() -> None:
    """A BOM goes; blank lines before the header are skipped, line numbers still count."""
    found = await split(b"\xef\xbb\xbf\n\na,b\n1,2\n", "csv")
    assert [(p.first_line, p.data, p.header) for p in found] == [(4, b"1,2\n", ["a", "b"])]


@pytest.mark.parametrize("header", [b"a,a,b\n", b'a,"b\n', b"x" * 200 + b"\n"])
async def test_a_bad_csv_header_is_an_invalid_input(header: bytes) -> None:
    """Repeated names, broken quoting or a header over the limit fail the file."""
    with pytest.raises(InvalidRequestError) as info:
        await split(header + b"1,2,3\n", "csv")
    assert info.value.code == "invalid_input"


async def test_csv_quoted_newlines_stay_in_one_record() -> None:
    """A quoted field may hold newlines: its record is not cut, the next line number
    accounts for every line it spans, and units() reads it back as one record."""
    data = b'id,text\n1,"one\r\ntwo\n\nthree"\n2,plain\n3,"say ""hi""\nthere"\n4,x"y\n'
    found = await split(data, "csv", records_for=lambda i: 1, block=3)
    assert [(p.first_line, p.records) for p in found] == [(2, 1), (6, 1), (7, 1), (9, 1)]
    assert found[0].data == b'1,"one\ntwo\n\nthree"\n'
    assert list(units(found[0].data, "csv")) == [(0, b'1,"one\ntwo\n\nthree"')]
    assert list(units(found[2].data, "csv")) == [(0, b'3,"say ""hi""\nthere"')]


async def test_a_too_long_csv_record_keeps_the_line_numbers() -> None:
    """A quoted record over the limit is a marker followed by a blank line per extra
    line, so the records after it keep their numbers."""
    field = b'"' + b"\n".join([b"w" * 40] * 5) + b'"'
    data = b"a,b\n1," + field + b"\n2,ok\n"
    (piece,) = await split(data, "csv", records_for=lambda i: 9)
    assert piece.records == 2
    offsets = [(o, raw) for o, raw in units(piece.data, "csv") if not is_blank(raw)]
    assert offsets[0][0] == 0 and offsets[0][1].startswith(TOO_LARGE_MARKER)
    assert offsets[1] == (5, b"2,ok")  # line 2 + 5 = line 7, as in the file


async def test_an_open_quote_at_the_end_of_the_file_is_one_last_record() -> None:
    """A quoted field never closed runs to the end of the file as one record (which the
    record reader then finds invalid), with no line made up."""
    (piece,) = await split(b'a,b\n1,"open\nrest\n', "csv", records_for=lambda i: 9)
    assert piece.data == b'1,"open\nrest\n' and piece.records == 1


async def test_csv_unit_counts_match_the_splitter() -> None:
    """The records units() finds in a piece are those the splitter counted."""
    rows = [b'%d,"v\n%d",x"y' % (n, n) if n % 3 == 0 else b"%d,plain,z" % n for n in range(40)]
    data = b"a,b,c\n" + b"\n".join(rows) + b"\n"
    for piece in await split(data, "csv", records_for=lambda i: 1 + i):
        found = [raw for _, raw in units(piece.data, "csv") if not is_blank(raw)]
        assert len(found) == piece.records


def scanner_says_whole(line: bytes) -> bool:
    scanner = QuoteScanner()
    scanner.feed(line)
    return not scanner.end_line()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"a", b",", b'"', b'""', b"\r"]), max_size=12))
def test_the_fast_csv_check_agrees_with_the_quote_scanner(parts: list[bytes]) -> None:
    """whole_csv_line (a regex) reads quotes exactly as QuoteScanner does."""
    line = b"".join(parts)
    assert whole_csv_line(line) == scanner_says_whole(line)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from([b"a", b",", b'"', b"\n"]), max_size=16),
    st.integers(min_value=1, max_value=5),
)
def test_the_quote_scanner_does_not_depend_on_slices(parts: list[bytes], cut: int) -> None:
    """Fed in slices of any size, the scanner ends in the same state as fed whole."""
    line = b"".join(parts).replace(b"\n", b"")
    sliced = QuoteScanner()
    for start in range(0, len(line), cut):
        sliced.feed(line[start : start + cut])
    assert (not sliced.end_line()) == scanner_says_whole(line)


def test_units_of_json_lines_are_lines() -> None:
    """For JSON Lines every line is a unit, blank ones included (callers skip those)."""
    assert list(units(b'{"a":1}\n\n[2]\n', "jsonl")) == [(0, b'{"a":1}'), (1, b""), (2, b"[2]")]


@given(st.lists(st.sampled_from([b"", b" ", b"{}", b"\r", b"a\nb", b"\n\n"]), max_size=8))
def test_units_of_json_lines_are_the_split_lines(parts: list[bytes]) -> None:
    """units() reads lines one at a time exactly as ``split(b"\\n")`` cuts them, a last
    empty line (after the final newline) aside."""
    data = b"".join(parts)
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    assert list(units(data, "jsonl")) == list(enumerate(lines))


async def test_only_line_formats_split() -> None:
    """pieces() refuses format 'whole' (split=none is never cut)."""
    with pytest.raises(ValueError, match="only line formats"):
        await split(b"{}", "whole")
