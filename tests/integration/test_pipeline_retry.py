"""A pipeline step's retry against a real server, on both shapes: a step whose model
fails twice then succeeds finishes the run, each failed attempt visible on the step,
each retry started only after its back-off (ordering of recorded times, not durations)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from tests.fixtures.server import Server, wait_until

PROJECT = Path(__file__).resolve().parent.parent / "pipeline_project"
INTERVAL_S, BACKOFF = 0.3, 2  # the retrying pipeline's (freight.yaml)


def _at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def test_a_step_that_fails_twice_then_succeeds_finishes_the_run(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    server = make_server(project=PROJECT, models=["Flaky", "Double"])
    with server.client() as client:
        created = client.post(
            "/v1/predictions",
            json={
                "target": "retrying",
                "input": {"fail": 2, "value": 21, "dir": str(tmp_path / "calls")},
            },
        )
        assert created.status_code == 202, created.text
        run_id = created.json()["id"]

        def ended() -> dict[str, object] | None:
            body = client.get(f"/v1/predictions/{run_id}").json()
            return body if body["status"] in ("succeeded", "failed") else None

        run = wait_until(ended, 60)
        assert (run["status"], run["output"]) == ("succeeded", 42), run
        step = client.get(f"/v1/predictions/{run['steps']['flaky']['prediction_id']}").json()
    assert step["attempts"] == 3
    history = step["attempt_history"]
    assert [(h["attempt"], h["why"]) for h in history] == [(1, "model_error"), (2, "model_error")]
    # each retry began only after its back-off from the failure before it
    assert _at(history[1]["started_at"]) >= _at(history[0]["ended_at"]) + INTERVAL_S
    assert _at(step["started_at"]) >= _at(history[1]["ended_at"]) + INTERVAL_S * BACKOFF
    assert len(list((tmp_path / "calls").iterdir())) == 3
