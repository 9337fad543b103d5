"""Catching a step's failure and tolerating failed elements against a real server, on
both shapes: a handler takes a failed step's error and stands in for it; a failed
nested run's default stands in for it; a for_each step survives one failed element,
marked in its output, and fails at the second."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.fixtures.server import Server, wait_until

PROJECT = Path(__file__).resolve().parent.parent / "pipeline_project"


def _run(server: Server, target: str, value: Any) -> dict[str, Any]:
    with server.client() as client:
        created = client.post("/v1/predictions", json={"target": target, "input": value})
        assert created.status_code == 202, created.text
        run_id = created.json()["id"]

        def ended() -> dict[str, Any] | None:
            body: dict[str, Any] = client.get(f"/v1/predictions/{run_id}").json()
            return body if body["status"] in ("succeeded", "failed", "canceled") else None

        run: dict[str, Any] = wait_until(ended, 60)
        return run


def test_a_handler_and_a_default_stand_in_and_the_run_goes_on(
    make_server: Callable[..., Server],
) -> None:
    server = make_server(project=PROJECT, models=["Fail", "Double"])
    run = _run(server, "caught", {"x": 5})
    assert (run["status"], run["output"]) == ("succeeded", {"b": 20, "why": "model_error"}), run
    steps = run["steps"]
    assert steps["a"]["status"] == "failed" and steps["a"]["error"]["code"] == "model_error"
    assert steps["rescue"]["status"] == "succeeded"
    run = _run(server, "nested_default", "anything")
    assert (run["status"], run["output"]) == ("succeeded", {"fallback": "model_error"}), run
    assert run["steps"]["inner"]["status"] == "failed"


def test_a_for_each_step_tolerates_one_failed_element(
    make_server: Callable[..., Server],
) -> None:
    server = make_server(project=PROJECT, models=["Double"])
    run = _run(server, "some_fail", {"xs": [1, {}, 3]})
    assert run["status"] == "succeeded", run
    assert run["output"][0] == 2 and run["output"][2] == 6
    assert run["output"][1]["error"]["code"] == "model_error"
    run = _run(server, "some_fail", {"xs": [1, {}, {}, 4]})
    assert (run["status"], run["error"]["code"]) == ("failed", "model_error"), run
    assert "2 of 4 elements failed" in run["error"]["message"]
