"""Chunk predictions: a batch job's records, run on a replica of the model.

A chunk arrives as an ordinary batch item whose content type is
:data:`~freight.batch.spec.CHUNK_MEDIA_TYPE`: its inline JSON is the
:class:`~freight.batch.spec.ChunkSpec`, its input key the object holding the
chunk's lines (for ``split="none"``, format ``whole``: the input file itself).
The records run through the model here, in the runner, because that is where
the model is: one queued prediction per chunk instead of one per record, and
the records' calls go straight to ``predict_batch``.

The runner writes the chunk's output object (always, empty when every record
failed: the assembler concatenates objects without asking) and its error object
(only when a record failed), under keys of this attempt's own
(:func:`freight.keys.chunk_output_key`: an attempt that lost its lease and
still runs never overwrites the winner's objects), then reports a ``Stored``
naming its output key, whose inline JSON is the
:class:`~freight.batch.spec.ChunkSummary`. A record's failure is in the
error object; only a chunk that cannot be run at all is the prediction's
``Failed``: ``input_error`` (a bad spec, a missing object), ``output_error``
(an output that cannot be stored), or ``storage_error`` when the object store
failed reading or writing (transient: the driver queues the chunk again).

Records become the model's input kind (:func:`converter`): JSON models get the
parsed (filtered) value; bytes models the record's raw bytes (a filtered value
as JSON text); Payload models an in-memory :class:`~freight.model.Payload` and
Path models a file per record, both holding the record as a JSON document (a
CSV row as its object of header -> value: a lone CSV line means nothing without
its header). Files live in a directory removed after the chunk. A JSON Lines
record's Payload carries the value parsed here, so that its first ``json()``
does not parse the line a second time (:meth:`~freight.model.Payload.from_json`).

``split="none"`` (format ``whole``): the file is read exactly as a normal
prediction's input (:class:`~freight.runner.payloads.PayloadIO`), so a Path or
Payload model streams it from disk. Its output object is the model's output:
one line of JSON, or bytes / a ``File`` as they are. The input filter applies
to a JSON model's input only, ``join`` not at all (a file cannot be embedded in
a line); a failure is the error object's one entry, ``line`` 1, ``input`` null.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import jmespath
import orjson

from freight.batch.records import (
    FILTER_ERROR,
    INVALID_RECORD,
    MODEL_ERROR,
    OUTPUT_ERROR,
    Call,
    ChunkOutput,
    Record,
    ToInput,
    record_value,
    run_chunk,
)
from freight.batch.spec import CHUNK_MEDIA_TYPE, ChunkSpec, ChunkSummary
from freight.batch.split import CHUNK_MAX_BYTES, RECORD_MAX_BYTES
from freight.errors import StorageError
from freight.keys import chunk_errors_key, chunk_output_key
from freight.media import JSON, OCTET_STREAM
from freight.model import File, InputKind, Payload
from freight.prediction import ErrorCode
from freight.runner.payloads import PayloadIO
from freight.runner.protocol import BatchItem, Failed, ResultItem, Stored
from freight.runner.tracebacks import error_detail, error_message

#: a chunk object over this is refused (a chunk is at most CHUNK_MAX_BYTES, or one
#: record): a guard against a driver bug, not a limit anyone should meet
CHUNK_READ_MAX_BYTES: Final = CHUNK_MAX_BYTES + RECORD_MAX_BYTES
JSONL: Final = "application/jsonl"
CSV: Final = "text/csv"


def is_chunk(item: BatchItem) -> bool:
    """Whether a batch item is a chunk prediction (run here, not as one input)."""
    return item.content_type == CHUNK_MEDIA_TYPE


# -- records as the model's input kind ------------------------------------------------


def _raw_or_json(record: Record) -> bytes:
    """A bytes model's input: the record's raw bytes, or its filtered value as JSON."""
    return orjson.dumps(record.value) if record.filtered else record.raw


def _document(record: Record, format: str) -> bytes:
    """The record as a JSON document (the line itself when it is one, unfiltered)."""
    if format == "jsonl" and not record.filtered:
        return record.raw
    return orjson.dumps(record.value)


def converter(kind: str, format: str, temp_dir: Path, *, keeps_input: bool = False) -> ToInput:
    """How this chunk's records become the model's input (see the module docstring).

    A Payload model's JSON Lines record comes with its parsed value (its first
    ``json()`` does not parse again), unless the chunk keeps the parsed record for its
    output (``keeps_input``: join=input), which the model must not be able to change."""
    if kind == InputKind.BYTES:
        return _raw_or_json
    if kind == InputKind.PAYLOAD:
        if format == "jsonl" and not keeps_input:
            return lambda r: Payload.from_json(
                _document(r, format), r.value, JSON, temp_dir=temp_dir
            )
        return lambda r: Payload.from_bytes(_document(r, format), JSON, temp_dir=temp_dir)
    if kind == InputKind.PATH:

        def to_path(record: Record) -> Path:
            fd, name = tempfile.mkstemp(prefix="freight-record-", suffix=".json", dir=temp_dir)
            with os.fdopen(fd, "wb") as f:
                f.write(_document(record, format))
            return Path(name)

        return to_path
    return record_value


# -- the runner's part -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Written:
    """A chunk's objects as stored: what the result frame reports."""

    content_type: str
    summary: ChunkSummary


#: glibc's mallopt parameter M_MMAP_THRESHOLD
_M_MMAP_THRESHOLD = -3
#: allocations of this size and more are mapped alone, and unmapped when freed
MMAP_THRESHOLD_BYTES = 1 << 20


def pin_mmap_threshold() -> bool:
    """glibc: every allocation of MMAP_THRESHOLD_BYTES or more mapped alone and unmapped
    when freed, for good (unless ``MALLOC_MMAP_THRESHOLD_`` says otherwise); whether
    it was set. Called by a runner's first chunk of a batch job, not at start: pinned,
    a model that streams its input in 1 MiB reads maps and faults in each block afresh
    (B5's pass-through model: 0.06 -> 0.17 s per 256 MiB), so a runner that serves no
    batch job keeps glibc's own behaviour.

    Why: glibc raises its mmap threshold to the size of each mapped block freed (up to
    32 MiB), and its trim threshold to twice that. After a batch job's first chunks,
    their buffers (1 MiB read blocks, an 8 MiB chunk) come from the heaps instead, the
    main one and one per thread that read a block, and each keeps up to 16 MiB free,
    fragmented. Measured on B9 (glibc's mallinfo2 after each chunk): in use flat at
    33 MiB while the heaps' free memory grew ~1 MiB per chunk (1 -> 44 MiB in 50
    chunks), the runner's peak RSS 183 -> 206 MiB over four jobs; pinned: 2 MiB free
    after 120 chunks, 137 / 150 / 150 MiB at 10k / 100k / 1M records."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    except (OSError, AttributeError):  # not glibc
        return False


class ChunkRunner:
    """Runs chunk predictions through the loaded model (one runner process each).

    ``call`` is the model (``runner.process._call_model`` bound to it); ``codes``
    maps exception types it returns to record error codes (``BatchMismatchError``
    -> ``batch_mismatch``), any other exception being a ``model_error``."""

    def __init__(
        self,
        call: Call,
        io: PayloadIO,
        project_dir: Path,
        codes: Mapping[type[BaseException], str],
    ) -> None:
        self._call = call
        self._io = io
        self._project = project_dir
        self._codes = dict(codes)
        self._pinned = False  # glibc's mmap threshold, from the first chunk on

    def describe(self, exc: BaseException) -> tuple[str, str]:
        """A model's exception as a record error (code, message), as the runner words
        a failed prediction."""
        code = next((c for t, c in self._codes.items() if isinstance(exc, t)), MODEL_ERROR)
        return str(code), error_message(exc)

    def _failed(self, item_id: str, exc: BaseException, code: str) -> Failed:
        return Failed(item_id, code, error_message(exc), error_detail(exc, self._project))

    async def run(self, item: BatchItem) -> ResultItem:
        """One chunk: its records run, its objects written, its summary reported."""
        if not self._pinned:
            self._pinned = True
            pin_mmap_threshold()
        try:
            spec = ChunkSpec.from_json(item.input_json or "")
            key = item.input_key
            if key is None:
                raise ValueError("the chunk prediction has no stored input")
            if spec.format == "whole":
                output = await self._whole(item.id, spec, key)
            else:
                output = self._records(spec, await self._read(key))
        except StorageError as exc:
            return self._failed(item.id, exc, StorageError.code)
        except Exception as exc:  # a bad spec, a missing object: the chunk, not a record
            return self._failed(item.id, exc, ErrorCode.INPUT_ERROR)
        output_key = chunk_output_key(spec.objects)
        try:
            written = await self._write(output_key, output)
        except StorageError as exc:
            return self._failed(item.id, exc, StorageError.code)
        except Exception as exc:
            return self._failed(item.id, exc, ErrorCode.OUTPUT_ERROR)
        summary = written.summary
        return Stored(
            item.id, output_key, written.content_type, summary.output_bytes, summary.to_json()
        )

    async def _read(self, key: str) -> bytes:
        """The chunk's bytes, streamed in and refused past CHUNK_READ_MAX_BYTES; joined
        once (a bytearray grown block by block, then copied, cost three chunk-sized
        allocations per chunk)."""
        blocks: list[bytes] = []
        size = 0
        async for block in self._io.storage.get_stream(key):
            blocks.append(block)
            size += len(block)
            if size > CHUNK_READ_MAX_BYTES:
                raise ValueError(f"chunk object {key!r} is over {CHUNK_READ_MAX_BYTES} bytes")
        return blocks[0] if len(blocks) == 1 else b"".join(blocks)

    def _records(self, spec: ChunkSpec, data: bytes) -> _Output:
        with tempfile.TemporaryDirectory(prefix="freight-chunk-") as temp:
            to_input = converter(
                self._io.input_kind, spec.format, Path(temp), keeps_input=spec.join == "input"
            )
            done = run_chunk(spec, data, self._call, to_input=to_input, describe=self.describe)
        return _Output(done.output, None, CSV if spec.format == "csv" else JSONL, done)

    async def _whole(self, item_id: str, spec: ChunkSpec, key: str) -> _Output:
        """split=none: the file is the one record, read as a normal prediction's input."""
        source = BatchItem(item_id, input_key=key, content_type=spec.content_type)
        try:
            value = await self._io.read_input(source)
        except (TypeError, ValueError) as exc:  # not what the model takes: the record's
            return _whole_failed(INVALID_RECORD, error_message(exc))
        if spec.input_filter is not None and self._io.input_kind == InputKind.JSON:
            value, failure = _apply(spec.input_filter, value)
            if failure is not None:
                return _whole_failed(FILTER_ERROR, failure)
        (result,) = self._call([value])
        if isinstance(result, BaseException):
            return _whole_failed(*self.describe(result))
        return _whole_output(spec, result)

    async def _write(self, output_key: str, output: _Output) -> _Written:
        storage = self._io.storage
        if output.file is not None:
            source = Path(output.file.path)
            try:
                size = await storage.put_file(output_key, source, content_type=output.content_type)
            finally:
                source.unlink(missing_ok=True)
        else:
            size = await storage.put(
                output_key, output.data or b"", content_type=output.content_type
            )
        if output.chunk.errors:
            await storage.put(chunk_errors_key(output_key), output.chunk.errors, content_type=JSONL)
        summary = output.chunk.summary
        if summary.output_bytes != size:
            summary = ChunkSummary(
                summary.records, summary.failed, size, summary.errors_bytes, summary.columns
            )
        return _Written(output.content_type, summary)


@dataclass(frozen=True, slots=True)
class _Output:
    """A chunk's result before it is written: bytes, or a File output (whole)."""

    data: bytes | None
    file: File | None
    content_type: str
    chunk: ChunkOutput


def _apply(expression: str, value: Any) -> tuple[Any, str | None]:
    """A JMESPath filter's result, or why it failed on this value (an expression that
    does not compile raises: the chunk's failure, as in records.py)."""
    compiled = jmespath.compile(expression)
    try:
        return compiled.search(value), None
    except Exception as exc:
        return None, error_message(exc)


def _whole_failed(code: str, message: str) -> _Output:
    entry = {"line": 1, "error": {"code": code, "message": message}, "input": None}
    errors = orjson.dumps(entry) + b"\n"
    summary = ChunkSummary(records=1, failed=1, output_bytes=0, errors_bytes=len(errors))
    return _Output(b"", None, JSONL, ChunkOutput(b"", errors, summary))


def _whole_output(spec: ChunkSpec, result: Any) -> _Output:
    """The model's output for a whole file: a File or bytes as they are, anything else
    as one line of JSON (after the output filter)."""
    if isinstance(result, File):
        chunk = ChunkOutput(b"", b"", ChunkSummary(records=1, failed=0, output_bytes=0))
        return _Output(None, result, result.content_type, chunk)
    if isinstance(result, bytes | bytearray | memoryview):
        data = bytes(result)
        summary = ChunkSummary(records=1, failed=0, output_bytes=len(data))
        return _Output(data, None, OCTET_STREAM, ChunkOutput(data, b"", summary))
    if spec.output_filter is not None:
        result, failure = _apply(spec.output_filter, result)
        if failure is not None:
            return _whole_failed(FILTER_ERROR, failure)
    try:
        data = orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"
    except TypeError as exc:
        return _whole_failed(OUTPUT_ERROR, f"the output is not JSON-able: {exc}")
    summary = ChunkSummary(records=1, failed=0, output_bytes=len(data))
    return _Output(data, None, JSON, ChunkOutput(data, b"", summary))


__all__ = ["CHUNK_READ_MAX_BYTES", "ChunkRunner", "converter", "is_chunk"]
