"""Running one chunk's records: parse, filter, call the model, write the results.

Pure: the chunk's bytes, a ``call`` (the model, or a pipeline) and a converter to
the model's input kind come in; the output bytes, the error bytes and the
:class:`~freight.batch.spec.ChunkSummary` go out. The runner
(``freight.runner.chunks``) brings the storage and the model; the driver may
bring a pipeline as the ``call`` (:func:`arun_chunk` awaits it).

Why every failure is a record's, never the chunk's: one bad line in a million
must not cost the other records of its chunk, and its line number must say which
it was. A failed record is left out of the output and written, with its line
and raw text, to the error object (JSON Lines ``{"line", "error": {"code",
"message"}, "input"}``), in input order. Only a chunk that cannot be read at
all (a spec without a CSV header, a filter that does not compile) raises.

Record codes: ``invalid_record`` (not JSON; a CSV row with the wrong number of
fields or not UTF-8), ``record_too_large`` (the splitter's marker line),
``filter_error`` (a JMESPath filter failed on it), ``input_error`` (it could not
be made into the model's input kind), ``model_error`` / ``batch_mismatch`` (from
``describe``), ``output_error`` (the output is not JSON-able).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

import jmespath
import orjson

from freight.batch.formats import csv_rows, json_line, output_cells, parse_csv_row, parse_json
from freight.batch.spec import ChunkSpec, ChunkSummary
from freight.batch.split import is_blank, too_large_size, units
from freight.prediction import ErrorCode

INVALID_RECORD: Final = "invalid_record"
RECORD_TOO_LARGE: Final = "record_too_large"
FILTER_ERROR: Final = "filter_error"
INPUT_ERROR: Final = str(ErrorCode.INPUT_ERROR)
MODEL_ERROR: Final = str(ErrorCode.MODEL_ERROR)
BATCH_MISMATCH: Final = str(ErrorCode.BATCH_MISMATCH)
OUTPUT_ERROR: Final = str(ErrorCode.OUTPUT_ERROR)


@dataclass(frozen=True, slots=True)
class Record:
    """One parsed record, what a converter makes the model's input from."""

    line: int  # its (first) line number in the file
    raw: bytes  # its bytes as in the file, without the newline
    parsed: Any  # the JSON value, or the CSV row as a dict, before the input filter
    value: Any  # after the input filter (``parsed`` when there is none)
    filtered: bool  # whether an input filter made ``value``
    cells: list[str] | None = None  # CSV: the row's fields as read (join=input)


@dataclass(frozen=True, slots=True)
class ChunkOutput:
    """What running a chunk gives: the two objects to write and the summary."""

    output: bytes
    errors: bytes  # empty when no record failed
    summary: ChunkSummary


#: the model: one output or exception per input, in order (runner.process._call_model)
Call = Callable[[list[Any]], list[Any]]
AsyncCall = Callable[[list[Any]], Awaitable[list[Any]]]
#: a parsed record -> the model's input (JSON value, bytes, Payload, Path)
ToInput = Callable[[Record], Any]
#: an exception from the model -> (code, message) of its record's error
Describe = Callable[[BaseException], tuple[str, str]]


def record_value(record: Record) -> Any:
    """The default converter: the (filtered) parsed value, for a JSON model."""
    return record.value


def describe_error(exc: BaseException) -> tuple[str, str]:
    """Any exception from the model is a ``model_error``, as the runner words it."""
    return MODEL_ERROR, f"{type(exc).__name__}: {exc}"


class _Slot:
    """One record's way through the chunk: its record, then its output or error."""

    __slots__ = ("error", "line", "output", "raw", "record")

    def __init__(self, line: int, raw: bytes) -> None:
        self.line = line
        self.raw = raw
        self.record: Record | None = None
        self.output: Any = None
        self.error: tuple[str, str] | None = None


def _compile(expression: str | None) -> Any:
    """A JMESPath filter, compiled once per chunk; a bad one fails the chunk."""
    if expression is None:
        return None
    try:
        return jmespath.compile(expression)
    except jmespath.exceptions.JMESPathError as exc:
        raise ValueError(f"invalid JMESPath filter {expression!r}: {exc}") from exc


def _filter_message(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


class _Run:
    """The records of one chunk, a window at a time: the lines up to one call's worth of
    good records are parsed, called (by the caller, between two steps of
    :meth:`calls`), written and dropped before the next window is read. So a chunk
    holds one call's parsed records, never all of its own (measured on B9's 8 MiB
    chunks: ~35 MiB of short-lived objects per chunk that way, which fragmented the
    runner's heap)."""

    def __init__(self, spec: ChunkSpec, to_input: ToInput, describe: Describe) -> None:
        if spec.format == "csv" and spec.header is None:
            raise ValueError("a CSV chunk needs the file's header")
        if spec.format not in ("jsonl", "csv"):
            raise ValueError(f"only line formats run record by record, not {spec.format!r}")
        self._spec = spec
        self._header = spec.header or []
        self._to_input = to_input
        self._describe = describe
        self._input_filter = _compile(spec.input_filter)
        self._output_filter = _compile(spec.output_filter)
        self._join = spec.join == "input"
        # what is written so far: output lines (JSON Lines) or rows (CSV), error lines
        self._lines: list[bytes] = []
        self._rows: list[tuple[list[str], dict[str, str]]] = []
        self._errors: list[bytes] = []
        self._records = 0
        self._failed = 0

    # -- parsing -------------------------------------------------------------

    def _parse(self, line: int, raw: bytes) -> _Slot:
        slot = _Slot(line, raw)
        size = too_large_size(raw)
        if size is not None:
            slot.raw = b""
            slot.error = (RECORD_TOO_LARGE, f"the record is {size} bytes, over the record limit")
            return slot
        try:
            if self._spec.format == "csv":
                parsed, cells = parse_csv_row(raw, self._header)
            else:
                parsed, cells = parse_json(raw), None
        except ValueError as exc:
            slot.error = (INVALID_RECORD, str(exc))
            return slot
        value, filtered = parsed, False
        if self._input_filter is not None:
            try:
                value, filtered = self._input_filter.search(parsed), True
            except Exception as exc:  # a JMESPath type error, or worse: this record only
                slot.error = (FILTER_ERROR, _filter_message(exc))
                return slot
        slot.record = Record(line, raw, parsed, value, filtered, cells)
        return slot

    # -- calls ---------------------------------------------------------------

    def calls(self, data: bytes) -> Iterator[tuple[list[_Slot], list[Any]]]:
        """Good records in order, grouped by records_per_call and max_call_bytes (raw
        bytes; a call holds at least one record), each with the model's inputs. The
        caller settles each call before taking the next: its window is written then."""
        spec = self._spec
        most, max_bytes = max(spec.records_per_call, 1), spec.max_call_bytes
        window: list[_Slot] = []
        group = size = 0  # the window's good records, their raw bytes
        for offset, raw in units(data, spec.format):
            if is_blank(raw):
                continue
            slot = self._parse(spec.first_line + offset, raw)
            if slot.error is None:
                if group and (group >= most or size + len(raw) > max_bytes):
                    yield from self._window(window)
                    window, group, size = [], 0, 0
                group += 1
                size += len(raw)
            window.append(slot)
        if window:
            yield from self._window(window)

    def _window(self, window: list[_Slot]) -> Iterator[tuple[list[_Slot], list[Any]]]:
        ready: list[_Slot] = []
        inputs: list[Any] = []
        for slot in window:
            if slot.error is not None:
                continue
            assert slot.record is not None
            try:
                inputs.append(self._to_input(slot.record))
            except Exception as exc:
                slot.error = (INPUT_ERROR, f"{type(exc).__name__}: {exc}")
                continue
            ready.append(slot)
        if ready:
            yield ready, inputs
        self._write(window)

    def settle(self, slots: list[_Slot], results: Any) -> None:
        """Take one call's results: an output, or an exception, per record."""
        if not isinstance(results, list) or len(results) != len(slots):
            count = len(results) if isinstance(results, list) else "no list"
            message = f"the call returned {count} results for {len(slots)} records"
            for slot in slots:
                slot.error = (BATCH_MISMATCH, message)
            return
        for slot, result in zip(slots, results, strict=True):
            if isinstance(result, BaseException):
                slot.error = self._describe(result)
                continue
            if self._output_filter is None:
                slot.output = result
                continue
            try:
                slot.output = self._output_filter.search(result)
            except Exception as exc:
                slot.error = (FILTER_ERROR, _filter_message(exc))

    # -- writing -------------------------------------------------------------

    def _write(self, window: list[_Slot]) -> None:
        """A settled window's outputs and errors, in input order; an output that cannot
        be written becomes its record's ``output_error``."""
        csv = self._spec.format == "csv"
        for slot in window:
            if slot.error is None:
                assert slot.record is not None
                slot.error = (
                    self._csv_row(slot.record, slot.output)
                    if csv
                    else self._json_line(slot.record, slot.output)
                )
        self._records += len(window)
        for slot in window:
            if slot.error is not None:
                self._failed += 1
                self._errors.append(_error_line(slot))

    def _json_line(self, record: Record, output: Any) -> tuple[str, str] | None:
        value = {"input": record.parsed, "output": output} if self._join else output
        try:
            self._lines.append(json_line(value))
        except TypeError as exc:
            return OUTPUT_ERROR, f"the output is not JSON-able: {exc}"
        return None

    def _csv_row(self, record: Record, output: Any) -> tuple[str, str] | None:
        assert record.cells is not None
        try:
            cells = output_cells(output)
        except TypeError as exc:
            return OUTPUT_ERROR, f"the output cannot be a CSV row: {exc}"
        self._rows.append((record.cells if self._join else [], cells))
        return None

    def finish(self) -> ChunkOutput:
        """Both objects, and the summary of every window written."""
        if self._spec.format == "csv":
            output, columns = csv_rows(list(self._header) if self._join else [], self._rows)
        else:
            output, columns = b"".join(self._lines), None
        errors = b"".join(self._errors)
        summary = ChunkSummary(self._records, self._failed, len(output), len(errors), columns)
        return ChunkOutput(output, errors, summary)


def _error_line(slot: _Slot) -> bytes:
    assert slot.error is not None
    code, message = slot.error
    entry = {
        "line": slot.line,
        "error": {"code": code, "message": message},
        "input": slot.raw.decode("utf-8", "replace"),
    }
    return orjson.dumps(entry) + b"\n"


def _safe_call(call: Call, inputs: list[Any]) -> Any:
    try:
        return call(inputs)
    except Exception as exc:  # a call that raises fails its records, not the chunk
        return [exc] * len(inputs)


def run_chunk(
    spec: ChunkSpec,
    data: bytes,
    call: Call,
    *,
    to_input: ToInput = record_value,
    describe: Describe = describe_error,
) -> ChunkOutput:
    """Run a chunk's records through ``call``, one call after the other (see module)."""
    run = _Run(spec, to_input, describe)
    for slots, inputs in run.calls(data):
        run.settle(slots, _safe_call(call, inputs))
    return run.finish()


async def arun_chunk(
    spec: ChunkSpec,
    data: bytes,
    call: AsyncCall,
    *,
    to_input: ToInput = record_value,
    describe: Describe = describe_error,
) -> ChunkOutput:
    """:func:`run_chunk` with an async ``call`` (a pipeline run by the driver)."""
    run = _Run(spec, to_input, describe)
    for slots, inputs in run.calls(data):
        try:
            results = await call(inputs)
        except Exception as exc:
            results = [exc] * len(inputs)
        run.settle(slots, results)
    return run.finish()


__all__ = [
    "BATCH_MISMATCH",
    "FILTER_ERROR",
    "INPUT_ERROR",
    "INVALID_RECORD",
    "MODEL_ERROR",
    "OUTPUT_ERROR",
    "RECORD_TOO_LARGE",
    "AsyncCall",
    "Call",
    "ChunkOutput",
    "Describe",
    "Record",
    "ToInput",
    "arun_chunk",
    "describe_error",
    "record_value",
    "run_chunk",
]
