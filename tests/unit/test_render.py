"""freight.api.render: the prediction object as every route returns it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from freight.api.render import iso, json_response, prediction_dict
from freight.prediction import Prediction, Status

T0 = 1_700_000_000.0


def done(**fields: object) -> Prediction:
    base: dict[str, object] = {
        "id": "0193b7c2-0000-7000-8000-000000000001",
        "target": "echo",
        "status": Status.SUCCEEDED,
        "created_at": T0,
        "queued_at": T0 + 0.001,
        "started_at": T0 + 0.011,
        "finished_at": T0 + 0.051,
        "attempts": 1,
        "batch_size": 4,
    }
    base.update(fields)
    return Prediction(**base)  # type: ignore[arg-type]


def rendered(p: Prediction, **kwargs: str | None) -> dict[str, object]:
    """Render, serialise with orjson and parse back: what a client receives."""
    parsed: dict[str, object] = orjson.loads(orjson.dumps(prediction_dict(p, **kwargs)))
    return parsed


def test_timings_are_iso_stamps_and_millisecond_metrics() -> None:
    """Stamps are ISO 8601 UTC; queue/run/total are milliseconds between them."""
    body = rendered(done())
    assert body["created_at"] == datetime.fromtimestamp(T0, UTC).isoformat()
    assert body["metrics"] == {"queue_ms": 10.0, "run_ms": 40.0, "total_ms": 51.0, "batch_size": 4}
    assert body["status"] == "succeeded"
    assert iso(None) is None


def test_unfinished_prediction_has_null_metrics() -> None:
    """Before it starts, a prediction's timings are null."""
    body = rendered(done(status=Status.QUEUED, started_at=None, finished_at=None, batch_size=None))
    assert body["metrics"] == {
        "queue_ms": None,
        "run_ms": None,
        "total_ms": None,
        "batch_size": None,
    }
    assert body["started_at"] is None and body["finished_at"] is None


def test_inline_json_fragments_round_trip() -> None:
    """Stored JSON text for input, output and metadata is spliced in as values."""
    body = rendered(
        done(
            input_json='{"x": [1, 2.5, "é"]}',
            output_json='{"y":null}',
            metadata='{"ref":"r1"}',
        )
    )
    assert body["input"] == {"x": [1, 2.5, "é"]}
    assert body["output"] == {"y": None}
    assert body["metadata"] == {"ref": "r1"}


def test_absent_payloads_are_null_and_metadata_empty() -> None:
    """No inline input/output gives nulls; no metadata gives an empty object."""
    body = rendered(done(output_key="k", output_bytes=10), output_url="http://x/o")
    assert body["input"] is None and body["output"] is None
    assert body["metadata"] == {}
    assert body["output_url"] == "http://x/o" and body["upload_url"] is None
    assert body["error"] is None


def test_error_object_with_detail() -> None:
    """A failure renders {code, message, detail} with the stored detail parsed."""
    body = rendered(
        done(
            status=Status.FAILED,
            error_code="model_error",
            error_message="boom",
            error_detail='{"type":"ValueError"}',
        )
    )
    assert body["error"] == {
        "code": "model_error",
        "message": "boom",
        "detail": {"type": "ValueError"},
    }


def test_error_without_detail_has_an_empty_detail() -> None:
    """An error stored without detail renders detail as {}."""
    body = rendered(done(status=Status.CANCELED, error_code="canceled", error_message="x"))
    assert body["error"] == {"code": "canceled", "message": "x", "detail": {}}


def test_urls_point_at_the_prediction_routes() -> None:
    """urls holds the self, cancel and output paths of the prediction."""
    p = done()
    base = f"/v1/predictions/{p.id}"
    assert rendered(p)["urls"] == {
        "self": base,
        "cancel": f"{base}/cancel",
        "output": f"{base}/output",
    }


def test_json_response_serialises_with_orjson() -> None:
    """json_response renders a body with status, media type and headers."""
    response = json_response({"a": 1}, 202, {"X-Test": "1"})
    assert response.status_code == 202
    assert response.body == b'{"a":1}'
    assert response.media_type == "application/json"
    assert response.headers["x-test"] == "1"


RUN = "0193b7c2-0000-7000-8000-0000000000a0"


def step_row(n: int, step: str, **fields: object) -> Prediction:
    """A step row of the run RUN; ``n`` orders the ids (creation order)."""
    base: dict[str, object] = {"id": f"0193b7c2-0000-7000-8000-{n:012d}", "run_id": RUN}
    base.update(step=step, **fields)
    return done(**base)


def test_a_plain_prediction_has_no_steps_map() -> None:
    """A model's prediction renders steps, run_id and step as null."""
    body = rendered(done())
    assert (body["steps"], body["run_id"], body["step"], body["item_index"]) == (
        None,
        None,
        None,
        None,
    )


def test_a_step_names_its_run() -> None:
    """A step's own object carries its run's id and its step name (and element index)."""
    body = rendered(step_row(1, "score", item_index=2))
    assert (body["run_id"], body["step"], body["item_index"]) == (RUN, "score", 2)


def test_steps_map_in_creation_order_with_timings_output_and_error() -> None:
    """Each step gets status, id, target, attempts, ISO stamps, metrics, output and error."""
    rows = [
        step_row(3, "d", status=Status.PENDING, started_at=None, finished_at=None, attempts=0),
        step_row(1, "a", output_json='{"v":1}'),
        step_row(
            2,
            "b",
            status=Status.FAILED,
            error_code="model_error",
            error_message="boom",
            output_key="k",
        ),
    ]
    run = done(id=RUN, target="diamond", kind="pipeline")
    body = orjson.loads(
        orjson.dumps(prediction_dict(run, steps=rows, step_output_urls={rows[2].id: "http://x/o"}))
    )
    steps = body["steps"]
    assert list(steps) == ["a", "b", "d"]
    assert steps["a"] == {
        "status": "succeeded",
        "prediction_id": rows[1].id,
        "target": "echo",
        "kind": "model",
        "attempts": 1,
        "created_at": iso(T0),
        "started_at": iso(T0 + 0.011),
        "finished_at": iso(T0 + 0.051),
        "metrics": {"queue_ms": 10.0, "run_ms": 40.0},
        "output": {"v": 1},
        "output_url": None,
        "error": None,
        "waiting_reason": None,
        "items": None,
        "callback": None,
    }
    assert steps["b"]["error"] == {"code": "model_error", "message": "boom", "detail": {}}
    assert steps["b"]["output_url"] == "http://x/o"
    assert steps["d"]["status"] == "pending" and steps["d"]["metrics"]["run_ms"] is None


def test_for_each_step_lists_its_elements_by_index() -> None:
    """A for_each step's elements appear under its items, by index, not as steps; its
    target is the model its elements run."""
    rows = [
        step_row(1, "each", kind="for_each", target="run", status=Status.RUNNING),
        step_row(4, "each", item_index=1, status=Status.FAILED, error_code="timeout"),
        step_row(2, "each", item_index=0),
        step_row(3, "each", item_index=2, status=Status.QUEUED),
    ]
    steps = orjson.loads(orjson.dumps(prediction_dict(done(kind="pipeline"), steps=rows)))["steps"]
    assert list(steps) == ["each"]
    assert steps["each"]["target"] == "echo"  # the model its elements run
    items = steps["each"]["items"]
    assert [(i["index"], i["prediction_id"], i["status"]) for i in items] == [
        (0, rows[2].id, "succeeded"),
        (1, rows[1].id, "failed"),
        (2, rows[3].id, "queued"),
    ]
    assert items[1]["error"] == {"code": "timeout", "message": None, "detail": {}}
    assert items[0]["error"] is None


def test_for_each_over_nothing_has_empty_items() -> None:
    """A for_each step that had no elements lists none (not null)."""
    rows = [step_row(1, "each", kind="for_each", output_json="[]")]
    steps = prediction_dict(done(kind="pipeline"), steps=rows)["steps"]
    assert steps["each"]["items"] == []


def test_nested_run_is_one_entry_without_its_steps() -> None:
    """A nested pipeline step is one entry naming its own id; its steps are not recursed."""
    rows = [step_row(1, "inner", kind="pipeline", target="sub", status=Status.RUNNING)]
    steps = prediction_dict(done(kind="pipeline"), steps=rows)["steps"]
    assert steps["inner"]["kind"] == "pipeline" and steps["inner"]["target"] == "sub"
    assert steps["inner"]["prediction_id"] == rows[0].id
    assert "steps" not in steps["inner"] and steps["inner"]["items"] is None


def test_a_run_with_no_step_rows_has_an_empty_map() -> None:
    """A pipeline run whose rows are not there yet renders steps as {}."""
    assert prediction_dict(done(kind="pipeline"), steps=[])["steps"] == {}


# -- event stream and deliveries (api/routes/events.py) ------------------------------------


async def test_a_stream_event_reaches_the_client_as_the_prediction_object(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An SSE event carries the integer id as text, the type as ``event`` and the
    prediction object as ``data``; FastAPI's framing of it (a stored JSON text with
    newlines spans several ``data:`` lines) parses back in the client to the same id,
    type and prediction."""
    from fastapi.sse import format_sse_event

    from freight.api import render as api_render
    from freight.client._events import SseParser, event_from
    from freight.streams import StreamEvent

    p = done(output_json='{"a":\n1}')

    async def rendered(request: Any, row: Prediction) -> dict[str, Any]:
        return prediction_dict(row)

    async def one() -> AsyncIterator[StreamEvent]:
        yield StreamEvent(3, "succeeded", p)

    monkeypatch.setattr(api_render, "rendered", rendered)
    (sent,) = [e async for e in api_render.sse_events(None, one())]  # type: ignore[arg-type]
    assert (sent.id, sent.event) == ("3", "succeeded")
    wire = format_sse_event(data_str=sent.raw_data, event=sent.event, id=sent.id).decode()
    parser = SseParser()
    (raw,) = [e for line in wire.split("\n") if (e := parser.feed(line)) is not None]
    received = event_from(raw)
    assert (received.id, received.type, received.final) == (3, "succeeded", True)
    assert received.prediction.output == {"a": 1} and received.prediction.id == p.id


def test_a_delivery_renders_its_stamps_as_iso_and_its_tries() -> None:
    """Deliveries show times as ISO 8601 and each try; an ended one has no next_at."""
    from freight.api.render import delivery_dict
    from freight.deliveries import DeliveryAttempt, DeliveryStatus
    from freight.service import DeliveryView

    view = DeliveryView(
        id="p:completed:1#0",
        sink="webhook https://h.test/in",
        event_id="p:completed:1",
        event_type="completed",
        status=DeliveryStatus.DELIVERED,
        attempts=2,
        created_at=T0,
        next_at=None,
        finished_at=T0 + 2,
        last_code=200,
        last_error=None,
        tries=[
            DeliveryAttempt("o", 1, "p", T0 + 1, status_code=503, next_at=T0 + 1.5),
            DeliveryAttempt("o", 2, "p", T0 + 2, status_code=200),
        ],
    )
    body = delivery_dict(view)
    assert body["id"] == "p:completed:1#0"
    assert (body["event"], body["status"], body["next_at"]) == ("completed", "delivered", None)
    assert body["finished_at"] == iso(T0 + 2)
    assert [t["status_code"] for t in body["tries"]] == [503, 200]
    assert body["tries"][0]["next_at"] == iso(T0 + 1.5) and body["tries"][1]["next_at"] is None


def test_the_webhook_query_parameters_of_the_realtime_routes() -> None:
    """``webhook_events`` is a comma list (default: the server's), a name it does not know
    is a validation error naming it, and it means nothing without ``webhook``."""
    import pytest
    from fastapi.exceptions import RequestValidationError

    from freight.api.params import webhook_query
    from freight.service import Webhook

    assert webhook_query() is None
    assert webhook_query("https://h.test/a") == Webhook("https://h.test/a")
    both = webhook_query("https://h.test/a", "started, completed,started")
    assert both == Webhook("https://h.test/a", ("started", "completed"))
    with pytest.raises(RequestValidationError) as unknown:
        webhook_query("https://h.test/a", "started,finished")
    assert "'finished'" in unknown.value.errors()[0]["msg"]
    with pytest.raises(RequestValidationError):
        webhook_query(None, "started")
