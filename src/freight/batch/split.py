"""Cutting an input file into chunks of records, streaming.

Why streaming: a batch job's input may be many GiB (and gzip), and the driver that
cuts it shares a process with the API. So the file is read block by block,
decompressed block by block (with a bound on each step's output, so a small
gzip bomb cannot blow up), and at most one piece plus one read block is held.

Why geometric chunk sizes (:func:`chunk_records`): the first chunk is one call's
worth of records, so the first output comes back fast; each next chunk doubles,
up to :data:`CALLS_PER_CHUNK_MAX` calls, so that the per-chunk cost (a queued
prediction, two objects) is amortised over many records. :data:`CHUNK_MAX_BYTES`
caps a chunk however short its records are: a runner reads a chunk whole.

Why deterministic: resuming a job re-splits its files and skips the pieces
already done, so the same bytes must always give the same pieces, whatever the
sizes of the blocks they arrive in (only :attr:`Piece.consumed`, a progress
figure, depends on those).

Lines: ``\\n`` ends a line; a ``\\r`` before it is dropped; a last line without
one gets one; a UTF-8 BOM on the first line is dropped; blank (whitespace-only)
lines stay in a piece's data, so that line numbers stay right, but are not
records. A record over ``max_line_bytes`` is never buffered: it is replaced by
a marker line (:data:`TOO_LARGE_MARKER` and its size), which the record reader
turns into a ``record_too_large`` error, followed by a blank line for each
further line it spanned.

CSV: the header is the first non-blank line; it is in no piece (every piece
carries the parsed names). A quoted field may hold newlines (RFC 4180): quotes
are tracked (:class:`QuoteScanner`) so that such a record is never cut in two; a
quote inside an unquoted field is a literal character, as Python's csv reads it.
"""

from __future__ import annotations

import csv
import re
import zlib
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Final

from freight.batch.spec import Format
from freight.errors import InvalidRequestError

#: a chunk holds at most this many calls' worth of records (see chunk_records)
CALLS_PER_CHUNK_MAX: Final = 64
#: a chunk's data is at most this many bytes (or one record, if that is longer)
CHUNK_MAX_BYTES: Final = 8 * 1024 * 1024
#: the default limit of one record (a line, or a CSV record's lines): one call's bytes
RECORD_MAX_BYTES: Final = 6 * 1024 * 1024
#: the start of the line that stands for a record over the limit: NUL is never valid
#: JSON and never in a CSV of text, so the line cannot be a real record
TOO_LARGE_MARKER: Final = b"\x00freight:record_too_large:"
#: the code of a file that cannot be split (bad gzip, bad CSV header)
INVALID_INPUT: Final = "invalid_input"

#: decompressed bytes produced per step at most (the read buffer, in effect)
_BLOCK_BYTES: Final = 1 << 20
_BOM: Final = b"\xef\xbb\xbf"
_QUOTE: Final = ord('"')
_COMMA: Final = ord(",")
_START: Final = -1  # "the byte before" at the start of a record: a field starts
#: a CSV line that is a whole record, with exactly QuoteScanner's reading of quotes (a
#: quoted field: "..." with "" inside, then anything up to the comma; else a field not
#: starting with a quote): one C-speed match instead of a scan from quote to quote
_FIELD: Final = rb'(?:"(?:[^"]|"")*"(?!")[^,]*|[^,"][^,]*|)'
_WHOLE_CSV_LINE: Final = re.compile(_FIELD + rb"(?:," + _FIELD + rb")*")


@dataclass(frozen=True, slots=True)
class Piece:
    """One chunk's lines, as cut from the file."""

    index: int  # 0-based chunk index within the file
    first_line: int  # line number of its first line (1-based; a CSV header is line 1)
    data: bytes  # its lines, decompressed, each ending in b"\n" (no CSV header)
    records: int  # non-blank lines (records) in data
    header: list[str] | None  # CSV: the file's column names; None for JSON Lines
    consumed: int  # bytes of the stored (maybe gzip) file read when it was cut


def chunk_records(index: int, records_per_call: int) -> int:
    """How many records chunk ``index`` holds: one call's worth, doubling per chunk up
    to CALLS_PER_CHUNK_MAX calls (a fast first record, then amortised chunks)."""
    calls = 1 << min(max(index, 0), CALLS_PER_CHUNK_MAX.bit_length() - 1)
    return max(records_per_call, 1) * min(calls, CALLS_PER_CHUNK_MAX)


def is_blank(line: bytes) -> bool:
    """A whitespace-only line: kept for line numbers, not a record."""
    return not line.strip()


def too_large_size(line: bytes) -> int | None:
    """The size of the record a marker line stands for; None for any other line."""
    if not line.startswith(TOO_LARGE_MARKER):
        return None
    size = line[len(TOO_LARGE_MARKER) :]
    return int(size) if size.isdigit() else None


def _marker(size: int) -> bytes:
    return TOO_LARGE_MARKER + str(size).encode()


class QuoteScanner:
    """Whether a CSV record is still inside a quoted field, fed its bytes in any slices.

    Only a quote that starts a field (after a comma, or at the record's start) opens
    one; inside, ``""`` is an escaped quote and a lone ``"`` closes it. Cheap: it
    jumps from quote to quote (``bytes.find``), so a line without quotes costs one
    search."""

    __slots__ = ("_last", "_pending", "quoted")

    def __init__(self) -> None:
        self.quoted = False  # inside a quoted field
        self._pending = False  # inside one, the last byte seen was a quote
        self._last = _START  # the last byte seen (outside a quoted field)

    def reset(self) -> None:
        self.quoted, self._pending, self._last = False, False, _START

    def feed(self, data: bytes) -> None:
        i, n = 0, len(data)
        if n == 0:
            return
        if self._pending:
            self._pending = False
            if data[0] == _QUOTE:
                i = 1  # an escaped quote: still quoted
            else:
                self.quoted = False
        while i < n:
            j = data.find(b'"', i)
            if j < 0:
                break
            if self.quoted:
                if j + 1 == n:
                    self._pending = True
                    break
                if data[j + 1] != _QUOTE:
                    self.quoted = False
                i = j + 2 if data[j + 1] == _QUOTE else j + 1
                continue
            before = data[j - 1] if j > 0 else self._last
            self.quoted = before in (_COMMA, _START)  # else a literal quote
            i = j + 1
        self._last = data[-1]

    def end_line(self) -> bool:
        """A newline was read: True when it is inside a quoted field."""
        if self._pending:  # a quote right before the newline closed the field
            self._pending, self.quoted = False, False
        self._last = ord("\n")
        return self.quoted


def whole_csv_line(line: bytes) -> bool:
    """Whether a CSV line, read from a record's start, ends that record (no quoted
    field is left open). Fast: most lines have no quote, the rest one regex match."""
    return b'"' not in line or _WHOLE_CSV_LINE.fullmatch(line) is not None


def _lines(data: bytes) -> Iterator[bytes]:
    """``data.split(b"\\n")`` without a last empty line, one line at a time."""
    start, end = 0, len(data)
    while start < end:
        stop = data.find(b"\n", start)
        if stop < 0:
            yield data[start:]
            return
        yield data[start:stop]
        start = stop + 1


def units(data: bytes, format: Format) -> Iterator[tuple[int, bytes]]:
    """The records of a piece's data: ``(line offset, bytes without the last newline)``;
    a CSV record may span lines (quoted newlines), as the splitter cut it. Lazy: a line
    is copied out of ``data`` when its turn comes (the caller keeps a few at a time)."""
    if format != "csv":
        yield from enumerate(_lines(data))
        return
    scanner = QuoteScanner()
    start, parts = 0, list[bytes]()
    for number, line in enumerate(_lines(data)):
        if not parts and whole_csv_line(line):
            yield number, line
            start = number + 1
            continue
        parts.append(line)
        scanner.feed(line)
        if not scanner.end_line():
            yield start, b"\n".join(parts)
            scanner.reset()
            start, parts = number + 1, []
    if parts:
        yield start, b"\n".join(parts)


def parse_header(line: bytes) -> list[str]:
    """The CSV header's column names; InvalidRequestError when it is not a header."""
    try:
        (names,) = csv.reader([line.decode("utf-8")], strict=True)
    except (UnicodeDecodeError, csv.Error, ValueError) as exc:
        raise InvalidRequestError(
            f"the CSV header is not valid: {exc}", code=INVALID_INPUT
        ) from None
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InvalidRequestError(
            f"the CSV header repeats column names {duplicates[:3]}",
            code=INVALID_INPUT,
            columns=duplicates,
        )
    return names


class _Progress:
    """Bytes of the stored file read so far (shared by the reader and the splitter)."""

    __slots__ = ("consumed",)

    def __init__(self) -> None:
        self.consumed = 0


async def _plain(stream: AsyncIterable[bytes], progress: _Progress) -> AsyncIterator[bytes]:
    async for block in stream:
        progress.consumed += len(block)
        yield block


def _inflate(member: zlib._Decompress, data: bytes) -> Iterator[bytes]:
    """Decompress ``data`` into blocks of at most _BLOCK_BYTES (never all at once)."""
    while True:
        out = member.decompress(data, _BLOCK_BYTES)
        if out:
            yield out
        data = member.unconsumed_tail
        if not data and len(out) < _BLOCK_BYTES:
            return


def _bad_gzip(message: str) -> InvalidRequestError:
    return InvalidRequestError(f"the input is not valid gzip: {message}", code=INVALID_INPUT)


async def _gunzip(stream: AsyncIterable[bytes], progress: _Progress) -> AsyncIterator[bytes]:
    """Gzip decompressed incrementally; members follow each other (multi-member gzip)."""
    member, started = zlib.decompressobj(wbits=31), False
    async for block in stream:
        progress.consumed += len(block)
        data = block
        while data:
            started = True
            try:
                for out in _inflate(member, data):
                    yield out
            except zlib.error as exc:
                raise _bad_gzip(str(exc)) from None
            data = b""
            if member.eof:
                data, member, started = member.unused_data, zlib.decompressobj(wbits=31), False
    if started and not member.eof:
        raise _bad_gzip("the stream ends inside a member (truncated)")


class _Splitter:
    """The line and piece state of one file; fed decompressed blocks, yields pieces.

    A full piece is cut when the next line arrives (or at the end of the file), so
    that adding a line emits at most one piece and the hot path stays a plain call."""

    def __init__(
        self,
        format: Format,
        records_for: Callable[[int], int],
        max_bytes: int,
        max_line_bytes: int,
        progress: _Progress,
    ) -> None:
        self._csv = format == "csv"
        self._records_for = records_for
        self._max_bytes = max_bytes
        self._max_line = max_line_bytes
        self._progress = progress
        self.header: list[str] | None = None
        # the record being read
        self._unit = bytearray()
        self._unit_lines = 0  # its lines already ended (more than 0: a quoted newline)
        self._open = False  # bytes read since the last newline
        self._skipped: int | None = None  # over the limit: its size so far, not its bytes
        self._quotes = QuoteScanner()
        self._line = 1  # number of the record's first line
        # the piece being filled
        self._piece = bytearray()
        self._first = 0
        self._records = 0
        self._index = 0
        self._limit = max(records_for(0), 1)

    def feed(self, block: bytes) -> Iterator[Piece]:
        lines = block.split(b"\n")
        tail = lines.pop()
        for line in lines:
            if self._simple(line):  # the hot path: a whole short line, nothing pending
                if line.endswith(b"\r"):
                    line = line[:-1]
                first = self._line
                self._line = first + 1
                piece = self._record(first, line + b"\n", blank=not line.strip())
            else:
                self._segment(line)
                piece = self._newline()
            if piece is not None:
                yield piece
        self._segment(tail)

    def finish(self) -> Iterator[Piece]:
        piece = None
        if self._open:
            self._unit_lines += 1
            piece = self._complete()
        elif self._unit_lines:  # a CSV quoted field left open by the file's end
            if self._skipped is None:
                del self._unit[-1:]  # the last newline ended the file, not a field's line
            piece = self._complete()
        if piece is not None:
            yield piece
        last = self._cut()
        if last is not None:
            yield last

    def _simple(self, line: bytes) -> bool:
        """A line that is a whole record by itself and needs none of the rare cases."""
        return (
            not self._open
            and not self._unit_lines
            and self._line > 1
            and len(line) <= self._max_line
            and not (self._csv and (self.header is None or not whole_csv_line(line)))
        )

    def _segment(self, data: bytes) -> None:
        if not data:
            return
        self._open = True
        if self._csv:
            self._quotes.feed(data)
        if self._skipped is not None:
            self._skipped += len(data)
            return
        self._unit += data
        if len(self._unit) > self._max_line:
            self._skipped, self._unit = len(self._unit), bytearray()

    def _newline(self) -> Piece | None:
        self._open = False
        self._unit_lines += 1
        if not (self._csv and self._quotes.end_line()):
            return self._complete()
        # a newline inside a quoted field: the record goes on
        if self._skipped is not None:
            self._skipped += 1
            return None
        if self._unit.endswith(b"\r"):
            del self._unit[-1]
        self._unit += b"\n"
        if len(self._unit) > self._max_line:
            self._skipped, self._unit = len(self._unit), bytearray()
        return None

    def _complete(self) -> Piece | None:
        first, lines, skipped = self._line, self._unit_lines, self._skipped
        raw = bytes(self._unit)
        self._line += lines
        self._unit, self._unit_lines, self._skipped = bytearray(), 0, None
        self._quotes.reset()
        if skipped is not None:
            return self._record(first, _marker(skipped) + b"\n" * lines, blank=False)
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if first == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM) :]
        return self._record(first, raw + b"\n", blank=is_blank(raw))

    def _record(self, first: int, data: bytes, *, blank: bool) -> Piece | None:
        """Add a record (or a blank line) to the piece; the full piece before it is cut."""
        if self._csv and self.header is None:
            self._take_header(data, blank)
            return None
        piece = None
        if self._piece and (
            self._records >= self._limit or len(self._piece) + len(data) > self._max_bytes
        ):
            piece = self._cut()
        if not self._piece:
            self._first = first
        self._piece += data
        if not blank:
            self._records += 1
        return piece

    def _take_header(self, data: bytes, blank: bool) -> None:
        """The first non-blank line of a CSV file is its header (blank ones before it
        are skipped, in no piece)."""
        if data.startswith(TOO_LARGE_MARKER):
            raise InvalidRequestError("the CSV header is over the record limit", code=INVALID_INPUT)
        if not blank:
            self.header = parse_header(data[:-1])

    def _cut(self) -> Piece | None:
        """The piece so far (None when it holds blank lines only: nothing to run)."""
        records, data = self._records, bytes(self._piece)
        self._piece, self._records = bytearray(), 0
        if not records:
            return None
        header = list(self.header) if self.header is not None else None
        piece = Piece(self._index, self._first, data, records, header, self._progress.consumed)
        self._index += 1
        self._limit = max(self._records_for(self._index), 1)
        return piece


async def pieces(
    stream: AsyncIterable[bytes],
    *,
    format: Format,
    gzip: bool,
    records_for: Callable[[int], int],
    max_bytes: int = CHUNK_MAX_BYTES,
    max_line_bytes: int = RECORD_MAX_BYTES,
) -> AsyncIterator[Piece]:
    """The pieces of one stored file, in order (see the module docstring).

    A piece is cut at ``records_for(index)`` records or before ``max_bytes`` of data,
    whichever comes first, and holds at least one record. An empty file, and a CSV
    file with a header only, yield none. Raises InvalidRequestError (code
    ``invalid_input``) on bad gzip or a bad CSV header. CPU-bound between awaits
    (about one read block's worth of work): a caller on an event loop that must stay
    responsive can drive it from a thread."""
    if format not in ("jsonl", "csv"):
        raise ValueError(f"only line formats split, not {format!r}")
    if max_bytes < 1 or max_line_bytes < 1:
        raise ValueError("max_bytes and max_line_bytes must be >= 1")
    progress = _Progress()
    splitter = _Splitter(format, records_for, max_bytes, max_line_bytes, progress)
    blocks = _gunzip(stream, progress) if gzip else _plain(stream, progress)
    async for block in blocks:
        for piece in splitter.feed(block):
            yield piece
    for piece in splitter.finish():
        yield piece


__all__ = [
    "CALLS_PER_CHUNK_MAX",
    "CHUNK_MAX_BYTES",
    "INVALID_INPUT",
    "RECORD_MAX_BYTES",
    "TOO_LARGE_MARKER",
    "Piece",
    "QuoteScanner",
    "chunk_records",
    "is_blank",
    "parse_header",
    "pieces",
    "too_large_size",
    "units",
    "whole_csv_line",
]
