"""The CLI's event following, webhook options and notification commands, against a
scripted API (the fake transport of test_cli.py)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from freight.cli import _base, _render, app
from freight.client import Prediction, StreamEvent
from tests.unit.test_cli import Api, prediction

runner = CliRunner()
EVENTS = "/v1/predictions/p1/events"


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Api:
    scripted = Api()
    monkeypatch.setattr(_base, "client_factory", scripted.client)
    return scripted


def stream(*events: tuple[str, dict[str, Any]]) -> httpx.Response:
    text = "".join(
        f"event: {kind}\ndata: {json.dumps(data)}\nid: {n}\n\n"
        for n, (kind, data) in enumerate(events, start=1)
    )
    return httpx.Response(200, headers={"Content-Type": "text/event-stream"}, content=text)


def paths(api: Api) -> list[str]:
    return [request.url.path for request in api.requests]


def test_predict_wait_follows_the_event_stream(api: Api) -> None:
    """predict --wait takes the outcome from the stream: no status polls at all."""
    api.on("POST", "/v1/predictions", httpx.Response(202, json=prediction("queued")))
    api.on(
        "GET",
        EVENTS,
        stream(
            ("queued", prediction("queued")),
            ("running", prediction("running")),
            ("succeeded", prediction("succeeded", output={"label": 3})),
        ),
    )
    result = runner.invoke(app, ["predict", "digits", "-i", "[1]"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"label": 3}
    assert "succeeded" in result.stderr
    assert paths(api) == ["/v1/predictions", EVENTS]


def test_predict_wait_polls_a_server_without_streams(api: Api) -> None:
    """Where the stream route is missing (an older server), --wait long-polls the status."""
    api.on("POST", "/v1/predictions", httpx.Response(202, json=prediction("queued")))
    api.on("GET", "/v1/predictions/p1", httpx.Response(200, json=prediction("succeeded", output=1)))
    result = runner.invoke(app, ["predict", "digits", "-i", "[1]"])
    assert result.exit_code == 0, result.output
    assert paths(api) == ["/v1/predictions", EVENTS, "/v1/predictions/p1"]


def test_predict_webhook_options_go_in_the_body(api: Api) -> None:
    """--webhook with --webhook-event sends ``webhook: {url, events}``; alone, just the url."""
    api.on("POST", "/v1/predictions", httpx.Response(202, json=prediction("queued")))
    argv = ["predict", "digits", "-i", "[1]", "--no-wait", "--webhook", "https://h.test/in"]
    assert runner.invoke(app, [*argv, "--webhook-event", "started"]).exit_code == 0
    assert runner.invoke(app, argv).exit_code == 0
    bodies = [json.loads(request.content) for request in api.requests]
    assert bodies[0]["webhook"] == {"url": "https://h.test/in", "events": ["started"]}
    assert bodies[1]["webhook"] == {"url": "https://h.test/in"}


def test_webhook_event_without_webhook_is_a_usage_error(api: Api) -> None:
    """--webhook-event alone exits 2 before any request."""
    result = runner.invoke(app, ["predict", "digits", "-i", "[1]", "--webhook-event", "started"])
    assert result.exit_code == 2
    assert api.requests == []


def delivery(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "sink": "webhook https://h.test/in",
        "event_id": "p1:completed:1",
        "event": "completed",
        "status": "pending",
        "attempts": 2,
        "last_code": 503,
        "last_error": None,
        "next_at": "2025-01-01T00:00:05+00:00",
        "finished_at": None,
        "created_at": "2025-01-01T00:00:00+00:00",
        "tries": [],
    }
    return body | fields


def test_deliveries_shows_each_event_per_sink(api: Api) -> None:
    """deliveries ID: sink, event, status, attempts, last answer and next retry per row."""
    rows = [
        delivery(),
        delivery(
            sink="audit",
            event="started",
            status="dead",
            last_code=None,
            last_error="timed out",
            next_at=None,
        ),
    ]
    api.on("GET", "/v1/predictions/p1/deliveries", httpx.Response(200, json={"data": rows}))
    result = runner.invoke(app, ["deliveries", "p1"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    first = next(line for line in lines if "h.test" in line)
    for expected in (
        "webhook https://h.test/in",
        "completed",
        "pending",
        "2",
        "503",
        "00:00:05 UTC",
    ):
        assert expected in first
    second = next(line for line in lines if "audit" in line)
    for expected in ("started", "dead", "timed out"):
        assert expected in second


def test_deliveries_of_a_prediction_nobody_subscribed_to(api: Api) -> None:
    """No deliveries is said in words, not an empty table."""
    api.on("GET", "/v1/predictions/p1/deliveries", httpx.Response(200, json={"data": []}))
    result = runner.invoke(app, ["deliveries", "p1"])
    assert result.exit_code == 0, result.output
    assert "no notifications for p1" in result.stdout


def test_deliveries_of_an_unknown_prediction_exits_1(api: Api) -> None:
    """An unknown id is the server's error code and exit status 1."""
    body = {"error": {"code": "prediction_not_found", "message": "no prediction", "detail": {}}}
    api.on("GET", "/v1/predictions/p1/deliveries", httpx.Response(404, json=body))
    result = runner.invoke(app, ["deliveries", "p1"])
    assert result.exit_code == 1
    assert "prediction_not_found" in result.stderr


def test_redeliver_prints_the_delivery_and_unknown_ids_exit_1(api: Api) -> None:
    """redeliver ID POSTs the quoted id and says which event goes where again; a 404
    exits 1 with the server's code."""
    path = "/v1/deliveries/p1:completed:1#0/redeliver"
    body = {"error": {"code": "delivery_not_found", "message": "no delivery", "detail": {}}}
    api.on(
        "POST",
        path,
        httpx.Response(200, json=delivery(id="p1:completed:1#0")),
        httpx.Response(404, json=body),
    )
    result = runner.invoke(app, ["redeliver", "p1:completed:1#0"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "completed to webhook https://h.test/in: pending" in result.stdout
    assert "p1:completed:1" in result.stdout
    missing = runner.invoke(app, ["redeliver", "p1:completed:1#0"])
    assert missing.exit_code == 1 and "delivery_not_found" in missing.stderr


def test_deliveries_redeliver_dead_sends_only_the_dead_ones(api: Api) -> None:
    """--redeliver-dead redelivers each dead delivery (not the delivered one), then shows
    the list again."""
    rows = [
        delivery(id="p1:started:1#0", event="started", status="delivered"),
        delivery(id="p1:completed:1#0", status="dead"),
    ]
    after = [rows[0], rows[1] | {"status": "pending"}]
    api.on(
        "GET",
        "/v1/predictions/p1/deliveries",
        httpx.Response(200, json={"data": rows}),
        httpx.Response(200, json={"data": after}),
    )
    api.on("POST", "/v1/deliveries/p1:completed:1#0/redeliver", httpx.Response(200, json=after[1]))
    result = runner.invoke(app, ["deliveries", "p1", "--redeliver-dead"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "sent 1 dead notification(s) again" in result.stderr
    assert [r.method for r in api.requests] == ["GET", "POST", "GET"]
    assert "dead" not in result.stdout and "p1:completed:1#0" in result.stdout


def test_status_shows_the_notifications_apart_from_the_status(api: Api) -> None:
    """status ID: a notifications row with the state and its non-zero counts."""
    summary = {"state": "failing", "deliveries": 3, "delivered": 1, "failing": 2}
    api.on(
        "GET",
        "/v1/predictions/p1",
        httpx.Response(200, json=prediction("succeeded") | {"notifications": summary}),
    )
    result = runner.invoke(app, ["status", "p1"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "failing (1 delivered, 2 failing of 3)" in result.stdout


def test_webhooks_secret_prints_it_alone_and_says_how_to_verify(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """webhooks secret [DIR] [--rotate] [--tenant T]: a tenant's secret on stdout, a hint
    on stderr."""
    calls: list[tuple[Path, bool, str]] = []
    fake = types.ModuleType("freight.server")

    def webhook_secret(project_dir: Path, rotate: bool, tenant: str) -> str:
        calls.append((project_dir, rotate, tenant))
        return "whsec_bmV3" if rotate else "whsec_b2xk"

    fake.webhook_secret = webhook_secret  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "freight.server", fake)
    shown = runner.invoke(app, ["webhooks", "secret", str(tmp_path)])
    rotated = runner.invoke(app, ["webhooks", "secret", "--rotate", "--tenant", "acme"])
    assert (shown.exit_code, rotated.exit_code) == (0, 0), shown.output + rotated.output
    assert (shown.stdout, rotated.stdout) == ("whsec_b2xk\n", "whsec_bmV3\n")
    assert "webhook-signature" in shown.stderr and "Standard Webhooks" in shown.stderr
    assert calls == [(tmp_path, False, "default"), (Path("."), True, "acme")]


def test_the_spinner_names_a_step_and_its_status() -> None:
    """A step event reads as the step's progress; the run's own as its status."""
    step = Prediction.model_validate(prediction("running", step="resize", run_id="r1"))
    run = Prediction.model_validate(prediction("running"))
    assert _render.progress(StreamEvent(4, "step.running", step)) == "running; step resize running"
    assert _render.progress(StreamEvent(2, "running", run)) == "running"


def test_a_validation_error_names_the_field_and_why(api: Api) -> None:
    """A 422 prints each problem as ``field: message`` under the error line."""
    problem = {"loc": ["body", "webhook", "url"], "msg": "String should match", "type": "x"}
    body = {
        "error": {
            "code": "validation_error",
            "message": "the request is not valid",
            "detail": {"errors": [problem]},
        }
    }
    api.on("POST", "/v1/predictions", httpx.Response(422, json=body))
    result = runner.invoke(app, ["predict", "digits", "-i", "[1]", "--webhook", "ftp://x/y"])
    assert result.exit_code == 1
    assert "validation_error" in result.stderr
    assert "webhook.url: String should match" in result.stderr
