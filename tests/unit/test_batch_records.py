"""Running a chunk's records: parsing, filters, calls, joins and every record error."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
import pytest

from freight.batch.formats import cell_value, output_cells
from freight.batch.records import (
    ChunkOutput,
    Record,
    arun_chunk,
    describe_error,
    run_chunk,
)
from freight.batch.spec import ChunkSpec, ChunkSummary, Format
from freight.batch.split import TOO_LARGE_MARKER


def spec(format: Format = "jsonl", **changes: Any) -> ChunkSpec:
    base = ChunkSpec(format=format, first_line=10, objects="batch/j/chunks/0-0")
    return replace(base, **changes)


class Recorder:
    """A fake model: doubles ``x`` (or answers what ``answer`` says), and records the
    inputs of every call."""

    def __init__(self, answer: Any = None) -> None:
        self.calls: list[list[Any]] = []
        self._answer = answer

    def __call__(self, inputs: list[Any]) -> list[Any]:
        self.calls.append(list(inputs))
        if self._answer is not None:
            return [self._answer(i) for i in inputs]
        return [{"y": i["x"] * 2} for i in inputs]


def lines(data: bytes) -> list[Any]:
    return [orjson.loads(line) for line in data.splitlines()]


def errors(done: ChunkOutput) -> list[tuple[int, str]]:
    return [(e["line"], e["error"]["code"]) for e in lines(done.errors)]


# -- JSON Lines --------------------------------------------------------------------


def test_outputs_are_in_input_order_and_counted() -> None:
    """Each record's output is a line, in input order; blank lines are not records."""
    data = b'{"x":1}\n\n{"x":2}\n  \n{"x":3}\n'
    done = run_chunk(spec(), data, Recorder())
    assert lines(done.output) == [{"y": 2}, {"y": 4}, {"y": 6}]
    assert done.errors == b""
    assert done.summary == ChunkSummary(3, 0, len(done.output), 0, None)


def test_every_record_error_has_its_code_and_line() -> None:
    """Bad JSON, a too-large marker, a filter, model and output failure: each fails
    its own record, named by its line, in order; the others still run."""

    def answer(value: Any) -> Any:
        if value == "boom":
            return RuntimeError("it broke")
        if value == "set":
            return {1, 2}
        return value

    data = b"\n".join(
        [
            b'{"v":"ok"}',  # line 10
            b"{not json",  # 11
            TOO_LARGE_MARKER + b"9999",  # 12
            b'{"v":"boom"}',  # 13
            b'{"v":"set"}',  # 14
            b'{"v":[1]}',  # 15
            b'{"v":"last"}',  # 16
        ]
    )
    s = spec(input_filter="v", output_filter="@")
    bad_filter = spec(input_filter="abs(v)")
    done = run_chunk(s, data, Recorder(answer))
    assert lines(done.output) == ["ok", [1], "last"]
    assert errors(done) == [
        (11, "invalid_record"),
        (12, "record_too_large"),
        (13, "model_error"),
        (14, "output_error"),
    ]
    entries = lines(done.errors)
    assert entries[0]["input"] == "{not json"
    assert entries[1]["input"] == "" and "9999 bytes" in entries[1]["error"]["message"]
    assert entries[2]["error"]["message"] == "RuntimeError: it broke"
    assert done.summary.records == 7 and done.summary.failed == 4
    assert done.summary.errors_bytes == len(done.errors)
    filtered = run_chunk(bad_filter, b'{"v":-3}\n{"v":[1]}\n', Recorder(lambda v: v))
    assert lines(filtered.output) == [3]
    assert errors(filtered) == [(11, "filter_error")]


def test_an_output_filter_error_fails_its_record() -> None:
    """An output filter that fails on one output (abs of a string) fails that record."""
    done = run_chunk(
        spec(output_filter="abs(@)"), b"1\n2\n", Recorder(lambda v: v if v == 1 else "s")
    )
    assert lines(done.output) == [1]
    assert errors(done) == [(11, "filter_error")]


def test_invalid_utf8_json_is_an_invalid_record() -> None:
    """A line that is not UTF-8 is an invalid record; its input is shown with replacement."""
    done = run_chunk(spec(), b'"\xff"\n', Recorder(lambda v: v))
    assert errors(done) == [(10, "invalid_record")]
    assert lines(done.errors)[0]["input"] == '"\ufffd"'


def test_join_input_pairs_the_unfiltered_record_with_its_output() -> None:
    """join=input writes {"input": record before the input filter, "output": ...}."""
    done = run_chunk(
        spec(join="input", input_filter="a", output_filter="z"),
        b'{"a":{"x":5},"id":"r1"}\n',
        Recorder(lambda v: {"z": v["x"] + 1}),
    )
    assert lines(done.output) == [{"input": {"a": {"x": 5}, "id": "r1"}, "output": 6}]


def test_the_converter_gets_records_and_its_failure_is_an_input_error() -> None:
    """to_input sees each parsed record (raw bytes, value, line); if it raises, that
    record is an input_error and is not sent to the model."""
    seen: list[Record] = []

    def to_input(record: Record) -> Any:
        seen.append(record)
        if record.value == 2:
            raise OSError("disk full")
        return record.value

    call = Recorder(lambda v: v)
    done = run_chunk(spec(), b"1\n2\n3\n", call, to_input=to_input)
    assert [(r.line, r.raw, r.value, r.filtered) for r in seen] == [
        (10, b"1", 1, False),
        (11, b"2", 2, False),
        (12, b"3", 3, False),
    ]
    assert call.calls == [[1, 3]]
    assert errors(done) == [(11, "input_error")]


def test_describe_maps_model_exceptions_to_codes() -> None:
    """describe() gives an exception's code: how the runner names batch_mismatch."""

    class Mismatch(Exception):
        pass

    def describe(exc: BaseException) -> tuple[str, str]:
        return ("batch_mismatch", str(exc)) if isinstance(exc, Mismatch) else describe_error(exc)

    done = run_chunk(spec(), b"1\n2\n", lambda xs: [Mismatch("short")] * len(xs), describe=describe)
    assert errors(done) == [(10, "batch_mismatch"), (11, "batch_mismatch")]


def test_a_raising_or_miscounting_call_fails_its_records_only() -> None:
    """A call that raises fails its own records (model_error); one that returns the
    wrong number of results fails them batch_mismatch; other calls are untouched."""
    calls = 0

    def call(inputs: list[Any]) -> list[Any]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("first call")
        if calls == 2:
            return inputs[:-1]
        return inputs

    done = run_chunk(spec(records_per_call=2), b"1\n2\n3\n4\n5\n", call)
    assert lines(done.output) == [5]
    assert errors(done) == [
        (10, "model_error"),
        (11, "model_error"),
        (12, "batch_mismatch"),
        (13, "batch_mismatch"),
    ]


# -- calls -------------------------------------------------------------------------


def test_calls_respect_records_per_call() -> None:
    """Good records go to the model in calls of at most records_per_call, in order;
    failed records are skipped, not sent."""
    call = Recorder(lambda v: v)
    run_chunk(spec(records_per_call=3), b"1\n2\nbad\n3\n4\n5\n6\n7\n", call)
    assert call.calls == [[1, 2, 3], [4, 5, 6], [7]]


def test_calls_respect_max_call_bytes() -> None:
    """A call's raw bytes stay within max_call_bytes; a record bigger than that still
    goes, alone (a call holds at least one record)."""
    call = Recorder(lambda v: v)
    data = b'"aaaa"\n"bb"\n"c"\n"dddddddddddd"\n"e"\n'
    run_chunk(spec(records_per_call=100, max_call_bytes=10), data, call)
    assert call.calls == [["aaaa", "bb"], ["c"], ["dddddddddddd"], ["e"]]


def test_a_call_is_written_before_the_next_records_are_read() -> None:
    """A chunk runs a call's worth at a time: when a call runs, no later record has been
    made into an input yet; outputs and errors still come out in input order, each
    record once."""
    read: list[int] = []

    def to_input(record: Record) -> Any:
        read.append(record.line)
        return record.value

    seen_at_call: list[tuple[list[Any], int]] = []

    def call(inputs: list[Any]) -> list[Any]:
        seen_at_call.append((list(inputs), max(read)))
        return [RuntimeError("odd") if v % 3 == 0 else v for v in inputs]

    data = b"1\n2\nbad\n3\n4\n\n5\n6\n7\nworse\n"
    done = run_chunk(spec(records_per_call=2), data, call, to_input=to_input)
    assert seen_at_call == [([1, 2], 11), ([3, 4], 14), ([5, 6], 17), ([7], 18)]
    assert lines(done.output) == [1, 2, 4, 5, 7]
    assert errors(done) == [
        (12, "invalid_record"),
        (13, "model_error"),
        (17, "model_error"),
        (19, "invalid_record"),
    ]
    assert done.summary == ChunkSummary(9, 4, len(done.output), len(done.errors), None)


async def test_arun_chunk_awaits_an_async_call() -> None:
    """arun_chunk gives what run_chunk gives, with an async call (a pipeline)."""

    async def call(inputs: list[Any]) -> list[Any]:
        return [{"y": i["x"] * 2} for i in inputs]

    async def raising(inputs: list[Any]) -> list[Any]:
        raise RuntimeError("pipeline down")

    data = b'{"x":1}\n{"x":2}\n'
    assert await arun_chunk(spec(), data, call) == run_chunk(spec(), data, Recorder())
    failed = await arun_chunk(spec(), data, raising)
    assert errors(failed) == [(10, "model_error"), (11, "model_error")]


def test_a_chunk_that_cannot_run_raises() -> None:
    """A filter that does not compile, or a CSV chunk without a header, fails the chunk."""
    with pytest.raises(ValueError, match="JMESPath"):
        run_chunk(spec(input_filter="a[["), b"1\n", Recorder())
    with pytest.raises(ValueError, match="header"):
        run_chunk(spec("csv"), b"1\n", Recorder())
    with pytest.raises(ValueError, match="line formats"):
        run_chunk(spec("whole"), b"1\n", Recorder())


# -- CSV ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "value"),
    [
        ("12", 12),
        ("-3", -3),
        ("1.5", 1.5),
        ("2e3", 2000.0),
        ("", ""),
        ("007", "007"),
        ("1.", "1."),
        (" 1", " 1"),
        ("nan", "nan"),
        ("1_000", "1_000"),
        ("9" * 30, "9" * 30),
        ("1e999", "1e999"),
        ("text", "text"),
    ],
)
def test_csv_cells_are_numbers_only_when_json_numbers(cell: str, value: Any) -> None:
    """A cell that is a JSON number (within 64 bits, finite) becomes one; else text."""
    assert cell_value(cell) == value
    assert type(cell_value(cell)) is type(value)


def test_csv_rows_become_dicts_and_bad_rows_fail() -> None:
    """A row is header -> value; the wrong field count, bad quoting or bad UTF-8 is an
    invalid record; a quoted field may span lines (line numbers stay right)."""
    call = Recorder(lambda v: v)
    data = b'1,a,2.5\n1,2\n3,"x\ny",\n4,"bad"x,1\n5,\xff,1\n6,,7\n'
    done = run_chunk(spec("csv", header=["id", "name", "score"]), data, call)
    assert call.calls == [
        [
            {"id": 1, "name": "a", "score": 2.5},
            {"id": 3, "name": "x\ny", "score": ""},
            {"id": 6, "name": "", "score": 7},
        ]
    ]
    assert errors(done) == [(11, "invalid_record"), (14, "invalid_record"), (15, "invalid_record")]
    assert "expected 3 fields" in lines(done.errors)[0]["error"]["message"]


def test_csv_output_columns_follow_the_outputs() -> None:
    """Dict outputs give their keys as columns (union, first seen first, "" where
    missing); nested values are JSON text; ChunkSummary.columns names them."""
    outputs = iter(
        [{"label": "a", "p": 0.5}, {"label": "b", "extra": [1, {"k": None}]}, {"p": True}]
    )
    done = run_chunk(spec("csv", header=["f"]), b"1\n2\n3\n", Recorder(lambda v: next(outputs)))
    assert done.summary.columns == ["label", "p", "extra"]
    assert done.output == b'a,0.5,\nb,,"[1,{""k"":null}]"\n,true,\n'


def test_csv_scalars_and_lists_name_their_columns() -> None:
    """A scalar output is column "output"; a list is output_0..n."""
    done = run_chunk(spec("csv", header=["f"]), b"1\n", Recorder(lambda v: 7))
    assert (done.summary.columns, done.output) == (["output"], b"7\n")
    done = run_chunk(spec("csv", header=["f"]), b"1\n", Recorder(lambda v: [1, "a"]))
    assert (done.summary.columns, done.output) == (["output_0", "output_1"], b"1,a\n")
    assert output_cells(None) == {"output": ""}


def test_csv_join_input_puts_the_input_columns_first() -> None:
    """join=input: the row's cells as read (not as numbers), then the output's columns;
    an output column named like an input column gets an ``output.`` prefix."""
    done = run_chunk(
        spec("csv", header=["id", "label"], join="input"),
        b"007,x\n",
        Recorder(lambda v: {"label": "benign", "p": 0.9}),
    )
    assert done.summary.columns == ["id", "label", "output.label", "p"]
    assert done.output == b"007,x,benign,0.9\n"


def test_csv_output_that_cannot_be_a_row_is_an_output_error() -> None:
    """An output with a value that is not JSON-able fails its record output_error."""
    done = run_chunk(
        spec("csv", header=["f"]),
        b"1\n2\n",
        Recorder(lambda v: {"a": object()} if v["f"] == 1 else 5),
    )
    assert done.output == b"5\n" and done.summary.columns == ["output"]
    assert errors(done) == [(10, "output_error")]


def test_all_failed_chunk_has_empty_output() -> None:
    """When every record fails the output is empty and the summary says so."""
    done = run_chunk(spec(), b"x\ny\n", Recorder())
    assert done.output == b""
    assert (done.summary.records, done.summary.failed, done.summary.output_bytes) == (2, 2, 0)


def test_a_line_that_only_looks_like_a_marker_is_invalid() -> None:
    """A line starting with the marker but without a size is an invalid record, not a
    crash and not a record_too_large."""
    done = run_chunk(spec(), TOO_LARGE_MARKER + b"abc\n", Recorder())
    assert errors(done) == [(10, "invalid_record")]
