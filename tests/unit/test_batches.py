"""freight.agent.batches: claimed rows and runner results become completions and objects."""

from __future__ import annotations

import copy

import orjson

from freight.agent.batches import batch, batch_item, failed, outcome
from freight.batch.job import chunk_id
from freight.model import PredictionContext
from freight.prediction import ErrorCode, Kind, Prediction, Status
from freight.runner.protocol import (
    Batch,
    BatchItem,
    Failed,
    HandedBack,
    Inline,
    Result,
    Stored,
)

NOW = 1_700_000_000.0


def row(prediction_id: str, attempts: int = 1) -> Prediction:
    return Prediction(
        id=prediction_id,
        target="echo",
        status=Status.RUNNING,
        created_at=NOW - 1,
        attempts=attempts,
        input_json='{"x":1}',
        input_content_type="application/json",
        input_bytes=7,
    )


def test_batch_item_carries_inline_input_or_key() -> None:
    """A runner item holds the id, inline JSON, object key, content type and size."""
    item = batch_item(row("a"), NOW + 30)
    assert item == BatchItem("a", '{"x":1}', None, "application/json", 7, item.context)
    assert batch([row("a"), row("b")], NOW + 30) == Batch(
        (batch_item(row("a"), NOW + 30), batch_item(row("b"), NOW + 30))
    )


def test_batch_item_context_is_the_rows_attempt_deadline_and_origin() -> None:
    """The context of a claimed row: its id, attempt (the claim already counted it),
    max_attempts and the batch deadline; a step's run, step and element index."""
    step = row("s", attempts=2)
    step.max_attempts, step.run_id, step.step, step.item_index = 3, "r1", "score", 4
    assert batch_item(step, NOW + 30).context == PredictionContext(
        "s", attempt=2, max_attempts=3, deadline=NOW + 30, run_id="r1", step="score", item_index=4
    )
    plain = batch_item(row("a"), NOW + 5).context
    assert plain is not None and (plain.run_id, plain.step, plain.job_id) == (None, None, None)


def test_a_chunks_context_names_its_batch_job() -> None:
    """A chunk row's context carries the id of the batch job it was split from."""
    chunk = row(chunk_id("job-1", 2, 7))
    chunk.kind = Kind.CHUNK
    context = batch_item(chunk, NOW).context
    assert context is not None and context.job_id == "job-1"


def test_inline_json_succeeds_and_is_stored_by_the_agent() -> None:
    """An Inline item succeeds with its JSON on the row, and its text is an object to store
    under the prediction's output key; fenced by attempt and worker."""
    (done,), objects = outcome([row("a", attempts=2)], Result((Inline("a", "[1]"),), 1), "w1", NOW)
    assert (done.id, done.status, done.attempt, done.worker_id, done.finished_at) == (
        "a",
        Status.SUCCEEDED,
        2,
        "w1",
        NOW,
    )
    assert (done.output_json, done.output_key, done.output_content_type) == (
        "[1]",
        "outputs/a",
        "application/json",
    )
    assert (done.output_bytes, done.batch_size, done.error_code) == (3, 1, None)
    assert objects == [("outputs/a", b"[1]")]


def test_inline_size_counts_bytes_not_characters() -> None:
    """The output size of inline JSON is its UTF-8 length."""
    (done,), objects = outcome([row("a")], Result((Inline("a", '"é"'),), 1), "w1", NOW)
    assert done.output_bytes == 4 and objects == [("outputs/a", '"é"'.encode())]


def test_handed_back_bytes_are_stored_without_inline_json() -> None:
    """HandedBack bytes become an object to store and an output key, with no inline JSON."""
    item = HandedBack("a", b"\x00\x01", "application/octet-stream")
    (done,), objects = outcome([row("a")], Result((item,), 1), "w1", NOW)
    assert done.status == Status.SUCCEEDED
    assert (done.output_json, done.output_key, done.output_bytes) == (None, "outputs/a", 2)
    assert done.output_content_type == "application/octet-stream"
    assert objects == [("outputs/a", b"\x00\x01")]


def test_stored_outputs_need_no_object_from_the_agent() -> None:
    """A Stored item points at the runner's object (with its inline copy, if any)."""
    items = (
        Stored("a", "outputs/a", "image/png", 10),
        Stored("b", "outputs/b", "application/json", 70_000, inline_json="[2]"),
    )
    (a, b), objects = outcome([row("a"), row("b")], Result(items, 1), "w1", NOW)
    assert (a.output_key, a.output_content_type, a.output_bytes, a.output_json) == (
        "outputs/a",
        "image/png",
        10,
        None,
    )
    assert (b.output_json, b.batch_size) == ("[2]", 2)
    assert objects == []


def test_failure_keeps_code_message_and_detail() -> None:
    """A Failed item carries the runner's error code, message and detail as JSON text."""
    item = Failed("a", "input_error", "bad image", {"type": "ValueError"})
    (done,), objects = outcome([row("a")], Result((item,), 1), "w1", NOW)
    assert done.status == Status.FAILED
    assert (done.error_code, done.error_message) == ("input_error", "bad image")
    assert orjson.loads(done.error_detail or "") == {"type": "ValueError"}
    assert (done.output_key, objects) == (None, [])


def test_a_row_missing_from_the_result_fails() -> None:
    """A claimed row the runner gave no item for fails; the others keep their outcome and
    items for rows not in the batch are ignored."""
    result = Result((Inline("a", "1"), Inline("zz", "2")), 1)
    done, objects = outcome([row("a"), row("b")], result, "w1", NOW)
    assert [c.id for c in done] == ["a", "b"]
    assert done[0].status == Status.SUCCEEDED
    assert (done[1].status, done[1].error_code) == (Status.FAILED, ErrorCode.MODEL_ERROR)
    assert "no result" in (done[1].error_message or "")
    assert objects == [("outputs/a", b"1")]


def test_result_without_items_fails_every_row() -> None:
    """A result carrying no items at all fails the whole batch."""
    done, objects = outcome([row("a"), row("b")], Result((), 1), "w1", NOW)
    assert [c.status for c in done] == [Status.FAILED, Status.FAILED]
    assert objects == []


def test_outcome_is_pure() -> None:
    """outcome() changes neither its rows nor its result, and gives the same answer twice."""
    rows = [row("a"), row("b")]
    result = Result((Inline("a", "1"), HandedBack("b", b"x", "application/octet-stream")), 1)
    before = copy.deepcopy((rows, result))
    first = outcome(rows, result, "w1", NOW)
    assert (rows, result) == before
    assert outcome(rows, result, "w1", NOW) == first


def test_failed_marks_the_batch_with_one_code() -> None:
    """failed() fails every row with the given code, message and the batch size."""
    done = failed([row("a"), row("b", attempts=3)], "w2", NOW, "timeout", "too slow")
    assert [(c.id, c.attempt, c.error_code, c.batch_size) for c in done] == [
        ("a", 1, "timeout", 2),
        ("b", 3, "timeout", 2),
    ]
    assert all(c.status == Status.FAILED and c.error_message == "too slow" for c in done)
    assert all(c.error_detail is None for c in done)


def test_failed_without_a_run_has_detail_and_no_batch_size() -> None:
    """Rows failed before reaching a model carry the detail as JSON and no batch size."""
    (done,) = failed(
        [row("a")], "w1", NOW, "model_unavailable", "down", {"load_error": {}}, ran=False
    )
    assert done.batch_size is None
    assert orjson.loads(done.error_detail or "") == {"load_error": {}}
