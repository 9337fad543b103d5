"""freight.agent.batches: claimed rows and runner results become completions."""

from __future__ import annotations

import orjson

from freight.agent.batches import completions_from_result, failed, item_message
from freight.prediction import ErrorCode, Prediction, Status

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


def test_item_message_carries_inline_input_or_key() -> None:
    """A runner item holds the id, inline JSON, object key, content type and size."""
    assert item_message(row("a")) == {
        "id": "a",
        "input_json": '{"x":1}',
        "input_key": None,
        "content_type": "application/json",
        "size": 7,
    }


def test_success_copies_the_output_fields() -> None:
    """An ok item succeeds with its inline output or object key, fenced by attempt and worker."""
    rows = [row("a", attempts=2), row("b")]
    result = {
        "items": [
            {"id": "a", "ok": True, "output_json": "[1]", "content_type": "application/json"},
            {
                "id": "b",
                "ok": True,
                "output_key": "out/b",
                "content_type": "image/png",
                "bytes": 10,
            },
        ]
    }
    a, b = completions_from_result(rows, result, "w1", NOW)
    assert (a.id, a.status, a.attempt, a.worker_id, a.finished_at) == (
        "a",
        Status.SUCCEEDED,
        2,
        "w1",
        NOW,
    )
    assert (a.output_json, a.output_key, a.batch_size, a.error_code) == ("[1]", None, 2, None)
    assert (b.output_key, b.output_content_type, b.output_bytes) == ("out/b", "image/png", 10)


def test_failure_keeps_code_message_and_detail() -> None:
    """A failed item carries the runner's error code, message and detail as JSON text."""
    result = {
        "items": [
            {
                "id": "a",
                "ok": False,
                "error": {
                    "code": "input_error",
                    "message": "bad image",
                    "detail": {"type": "ValueError"},
                },
            }
        ]
    }
    (done,) = completions_from_result([row("a")], result, "w1", NOW)
    assert done.status == Status.FAILED
    assert (done.error_code, done.error_message) == ("input_error", "bad image")
    assert orjson.loads(done.error_detail or "") == {"type": "ValueError"}


def test_failure_without_error_object_is_a_model_error() -> None:
    """A failed item with no error falls back to model_error and an empty detail."""
    (done,) = completions_from_result([row("a")], {"items": [{"id": "a"}]}, "w1", NOW)
    assert (done.status, done.error_code) == (Status.FAILED, ErrorCode.MODEL_ERROR)
    assert done.error_message == "the model failed"
    assert done.error_detail == "{}"


def test_a_row_missing_from_the_result_fails() -> None:
    """A claimed row the runner gave no item for fails; the others keep their outcome."""
    result = {"items": [{"id": "a", "ok": True, "output_json": "1"}, {"id": "zz", "ok": True}]}
    done = completions_from_result([row("a"), row("b")], result, "w1", NOW)
    assert [c.id for c in done] == ["a", "b"]
    assert done[0].status == Status.SUCCEEDED
    assert (done[1].status, done[1].error_code) == (Status.FAILED, ErrorCode.MODEL_ERROR)
    assert "no result" in (done[1].error_message or "")


def test_result_without_items_fails_every_row() -> None:
    """A result carrying no items at all fails the whole batch."""
    done = completions_from_result([row("a"), row("b")], {}, "w1", NOW)
    assert [c.status for c in done] == [Status.FAILED, Status.FAILED]


def test_failed_marks_the_batch_with_one_code() -> None:
    """failed() fails every row with the given code and message and the batch size."""
    done = failed([row("a"), row("b", attempts=3)], "w2", NOW, "timeout", "too slow")
    assert [(c.id, c.attempt, c.error_code, c.batch_size) for c in done] == [
        ("a", 1, "timeout", 2),
        ("b", 3, "timeout", 2),
    ]
    assert all(c.status == Status.FAILED and c.error_message == "too slow" for c in done)
