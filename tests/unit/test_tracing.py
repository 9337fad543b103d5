"""The pure parts of traces and logs: when tracing is on, the spans of a batch (with
the SDK's in-memory exporter), log lines in text and JSON with their ids."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from freight import logsetup, tracing
from freight.agent.traces import BatchTrace
from freight.prediction import Completion, Prediction, Status
from freight.runner import protocol

TRACEPARENT = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"


@pytest.mark.parametrize(
    ("environ", "exporters"),
    [
        ({}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "console"}, ["console"]),
        ({"OTEL_TRACES_EXPORTER": "otlp,console"}, ["otlp", "console"]),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, []),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, []),
        ({"OTEL_SDK_DISABLED": "false", "OTEL_TRACES_EXPORTER": "otlp"}, ["otlp"]),
    ],
)
def test_tracing_is_on_only_where_the_standard_variables_ask(
    environ: dict[str, str], exporters: list[str]
) -> None:
    """The exporters named, or otlp for an endpoint; none when disabled or "none"."""
    assert tracing.wanted(environ) == exporters


def test_the_service_name_is_otel_service_name_or_the_process_s() -> None:
    """OTEL_SERVICE_NAME wins over the process's default name."""
    assert tracing.service_name({}, "freight-api") == "freight-api"
    assert tracing.service_name({"OTEL_SERVICE_NAME": "x"}, "freight-api") == "x"


def test_off_nothing_is_configured_and_no_traceparent_is_made() -> None:
    """Without the variables configure says no, and the flag stays down."""
    assert tracing.configure("freight-serve", {}) is False
    assert tracing.ENABLED is False and tracing.traceparent() is None and tracing.ids() is None


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.configure("test", {}, exporter=exporter)
    yield exporter
    tracing.shutdown()


def _row(i: int, **fields: object) -> Prediction:
    row = Prediction(f"p{i}", "echo", Status.RUNNING, created_at=100.0, queued_at=100.0)
    row.started_at, row.attempts = 101.0, 1
    for name, value in fields.items():
        setattr(row, name, value)
    return row


def test_a_batch_gives_each_prediction_its_own_spans_in_its_own_trace(
    spans: InMemorySpanExporter,
) -> None:
    """Two rows of one batch: each its queue wait and predict span under its stored
    context, and the phases (from the runner's marks) under its predict span."""
    rows = [_row(0, trace_context=TRACEPARENT), _row(1)]
    trace = BatchTrace(rows)
    trace.ran((101.0, 101.1, 101.5, 101.6), 101.0, 101.7)
    trace.stored(101.8)
    done = [Completion(r.id, 1, "w", Status.SUCCEEDED, 101.9) for r in rows]
    trace.end(done)
    got = spans.get_finished_spans()
    assert len(got) == 2 * 5
    first = [s for s in got if s.attributes and s.attributes.get("freight.prediction_id") == "p0"]
    assert {s.context.trace_id for s in first} == {int("ab" * 16, 16)}
    assert {s.parent.span_id for s in first if s.parent} == {int("cd" * 8, 16)}
    predict = next(s for s in got if s.name == "freight.predict" and s in first)
    wait = next(s for s in first if s.name == "freight.queue_wait")
    assert (wait.start_time, wait.end_time) == (tracing.ns(100.0), tracing.ns(101.0))
    call = [s for s in got if s.name == "freight.model_call"]
    assert {s.attributes["freight.batch_size"] for s in call if s.attributes} == {2}
    under = [s for s in got if s.parent and s.parent.span_id == predict.context.span_id]
    assert sorted(s.name for s in under) == [
        "freight.input_fetch",
        "freight.model_call",
        "freight.output_store",
    ]
    other = {s.context.trace_id for s in got} - {int("ab" * 16, 16)}
    assert len(other) == 2  # p1 had no context: its two top spans start two traces


def test_a_span_s_traceparent_round_trips(spans: InMemorySpanExporter) -> None:
    """The traceparent of a span, stored and read back, parents a child on it."""
    span = tracing.start("a")
    stored = tracing.traceparent(span)
    tracing.start("b", tracing.context_of(stored)).end()
    (child,) = spans.get_finished_spans()
    assert child.parent is not None and child.parent.span_id == span.get_span_context().span_id
    assert tracing.context_of("not a traceparent") is None


def test_the_runner_s_marks_cross_the_pipe() -> None:
    """A result's marks are encoded and decoded; a runner that sends none gives ()."""
    result = protocol.Result((), 1.5, (1.0, 2.0, 3.0, 4.0))
    frame = protocol.encode(result)
    assert protocol.decode(frame[4:]) == result


def _record(message: str) -> logging.LogRecord:
    return logging.LogRecord("freight.x", logging.INFO, __file__, 1, message, None, None)


def test_json_lines_carry_the_ids_bound_and_the_current_span_s(
    spans: InMemorySpanExporter,
) -> None:
    """One JSON object per line, with time, level, logger, message and the ids."""
    record = _record("hello")
    span = tracing.start("s")
    with logsetup.bound(prediction_id="p1", tenant="acme"), tracing.current(span):
        logsetup.IdsFilter().filter(record)
    line = json.loads(logsetup.formatter("json").format(record))
    assert line["message"] == "hello" and line["level"] == "INFO" and line["logger"] == "freight.x"
    assert line["prediction_id"] == "p1" and line["tenant"] == "acme" and "time" in line
    context = span.get_span_context()
    assert line["trace_id"] == f"{context.trace_id:032x}"
    assert line["span_id"] == f"{context.span_id:016x}"
    assert "run_id" not in line


def test_text_lines_end_with_the_known_ids() -> None:
    """The plain line, then name=value of each id known."""
    record = _record("hello")
    with logsetup.bound(run_id="r1"):
        logsetup.IdsFilter().filter(record)
    assert logsetup.formatter("text").format(record).endswith("hello run_id=r1")
    bare = _record("plain")
    logsetup.IdsFilter().filter(bare)
    assert logsetup.formatter("text").format(bare).endswith("plain")
