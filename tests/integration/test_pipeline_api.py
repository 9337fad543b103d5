"""The pipeline API end to end against a real server, on both deployment shapes.

The project is tests/pipeline_project/: tiny arithmetic models and one pipeline
per feature (a diamond, a condition, a for_each, a nested run, optional and
required failures, and a run held open by a gate file).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.fixtures.server import Server
from tests.integration.helpers import error_code, wait_done

PROJECT = Path(__file__).resolve().parent.parent / "pipeline_project"
#: the pipelines of its freight.yaml (its Python modules may declare more)
MINE = ("broken", "conditional", "diamond", "fanout", "held", "nested", "tolerant")


def run(client: httpx.Client, name: str, input: Any, **params: Any) -> httpx.Response:
    return client.post(f"/v1/pipelines/{name}/predict", json=input, params=params)


def the_run(client: httpx.Client, response: httpx.Response) -> dict[str, Any]:
    """The run behind a real-time answer (its id is in X-Freight-Prediction-Id)."""
    body = client.get(f"/v1/predictions/{response.headers['X-Freight-Prediction-Id']}")
    assert body.status_code == 200, body.text
    result: dict[str, Any] = body.json()
    return result


def statuses(prediction: dict[str, Any]) -> dict[str, str]:
    return {name: step["status"] for name, step in prediction["steps"].items()}


def test_pipelines_are_listed_and_described(make_server: Callable[..., Server]) -> None:
    """GET /v1/pipelines lists every pipeline by name; GET one shows its steps in
    dependency order with inferred needs, options and the Mermaid graph."""
    server = make_server(project=PROJECT)
    with server.client() as client:
        listing = client.get("/v1/pipelines")
        assert listing.status_code == 200, listing.text
        names = [p["name"] for p in listing.json()["data"]]
        assert names == sorted(names) and set(MINE) <= set(names)
        diamond = client.get("/v1/pipelines/diamond").json()
        assert [s["name"] for s in diamond["steps"]] == ["a", "b", "c", "d"]
        d = diamond["steps"][3]
        assert (d["target"], d["kind"], d["needs"]) == ("add", "model", ["b", "c"])
        assert d["input"] == {"values": ["$steps.b.output", "$steps.c.output"]}
        assert diamond["output"] == {"sum": "$steps.d.output", "a": "$steps.a.output"}
        assert diamond["graph"].startswith("graph TD\n") and "s1 --> s3" in diamond["graph"]
        each = client.get("/v1/pipelines/fanout").json()["steps"][0]
        assert (each["for_each"], each["max_concurrency"]) == ("$input.xs", 2)
        inner = client.get("/v1/pipelines/nested").json()["steps"][0]
        assert (inner["kind"], inner["target"]) == ("pipeline", "diamond")
        big = client.get("/v1/pipelines/conditional").json()["steps"][1]
        assert big["when"] == "steps.a.output > `10`"
        maybe = client.get("/v1/pipelines/tolerant").json()["steps"][1]
        assert maybe["optional"] is True
        missing = client.get("/v1/pipelines/nope")
        assert missing.status_code == 404 and error_code(missing) == "unknown_pipeline"
        a_model = run(client, "double", 1)
        assert a_model.status_code == 404 and error_code(a_model) == "unknown_pipeline"


def test_realtime_runs_and_their_steps(make_server: Callable[..., Server]) -> None:
    """A diamond, a skipped condition and a for_each answer 200 with the output; the
    run's steps map shows each step's status, output and, for for_each, its elements."""
    server = make_server(project=PROJECT)
    with server.client() as client:
        response = run(client, "diamond", {"x": 3})
        assert response.status_code == 200, response.text
        assert response.json() == {"sum": 24, "a": 6}
        diamond = the_run(client, response)
        assert (diamond["kind"], diamond["status"]) == ("pipeline", "succeeded")
        assert list(diamond["steps"]) == ["a", "b", "c", "d"]
        assert [s["output"] for s in diamond["steps"].values()] == [6, 12, 12, 24]
        a = diamond["steps"]["a"]
        assert (a["target"], a["kind"], a["items"]) == ("double", "model", None)
        step = client.get(f"/v1/predictions/{a['prediction_id']}").json()
        assert (step["run_id"], step["step"], step["steps"]) == (diamond["id"], "a", None)

        skipped = run(client, "conditional", {"x": 3})
        assert skipped.status_code == 200 and skipped.json() == {"a": 6, "big": None}
        assert statuses(the_run(client, skipped)) == {"a": "succeeded", "big": "skipped"}
        taken = run(client, "conditional", {"x": 6})
        assert taken.json() == {"a": 12, "big": 24}

        fanned = run(client, "fanout", {"xs": [1, 2, 3]})
        assert fanned.status_code == 200 and fanned.json() == 12
        each = the_run(client, fanned)["steps"]["each"]
        assert (each["kind"], each["status"], each["output"]) == (
            "for_each",
            "succeeded",
            [2, 4, 6],
        )
        assert [(i["index"], i["status"]) for i in each["items"]] == [
            (0, "succeeded"),
            (1, "succeeded"),
            (2, "succeeded"),
        ]
        element = client.get(f"/v1/predictions/{each['items'][1]['prediction_id']}").json()
        assert (element["step"], element["item_index"], element["output"]) == ("each", 1, 4)
        empty = run(client, "fanout", {"xs": []})
        assert empty.json() == 0
        assert the_run(client, empty)["steps"]["each"]["items"] == []


def test_nested_runs_and_failures(make_server: Callable[..., Server]) -> None:
    """A nested run is one step whose own id lists its steps; an optional failure is a
    null output; a required failure answers 424 and cancels what had not run."""
    server = make_server(project=PROJECT)
    with server.client() as client:
        nested = run(client, "nested", {"x": 3})
        assert nested.status_code == 200 and nested.json() == 48
        outer = the_run(client, nested)
        inner_ref = outer["steps"]["inner"]
        assert (inner_ref["kind"], inner_ref["target"]) == ("pipeline", "diamond")
        assert inner_ref["output"] == {"sum": 24, "a": 6} and "steps" not in inner_ref
        inner = client.get(f"/v1/predictions/{inner_ref['prediction_id']}").json()
        assert (inner["run_id"], inner["step"]) == (outer["id"], "inner")
        assert statuses(inner) == dict.fromkeys("abcd", "succeeded")

        tolerant = run(client, "tolerant", {"x": 2})
        assert tolerant.status_code == 200 and tolerant.json() == {"a": 4, "maybe": None}
        maybe = the_run(client, tolerant)["steps"]["maybe"]
        assert maybe["status"] == "failed" and maybe["error"]["code"] == "model_error"

        broken = run(client, "broken", {"y": 1})
        assert broken.status_code == 424 and error_code(broken) == "model_error"
        failed = the_run(client, broken)
        assert failed["status"] == "failed" and failed["error"]["code"] == "model_error"
        assert statuses(failed) == {"a": "failed", "b": "canceled"}
        assert "asked to fail" in failed["steps"]["a"]["error"]["message"]


def test_past_the_deadline_a_run_answers_202_with_its_progress(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    """Past ?timeout= the caller gets 202 and the run with its steps so far; it finishes
    once the gate opens. Lists carry steps maps too; a body that is not JSON is 415."""
    server = make_server(project=PROJECT)
    gate = tmp_path / "open"
    with server.client() as client:
        response = run(client, "held", {"open": str(gate), "value": 7}, timeout=0.3)
        assert response.status_code == 202, response.text
        body = response.json()
        assert body["kind"] == "pipeline" and body["status"] in {"queued", "running"}
        assert body["steps"]["wait"]["status"] in {"pending", "queued", "running"}
        gate.touch()
        done = wait_done(client, body["id"])
        assert done["status"] == "succeeded" and done["output"] == 7
        assert done["steps"]["wait"]["output"] == 7

        listed = client.get("/v1/predictions", params={"target": "held"}).json()["data"]
        assert [p["id"] for p in listed] == [body["id"]]
        assert statuses(listed[0]) == {"wait": "succeeded"}

        raw = client.post(
            "/v1/pipelines/diamond/predict",
            content=b"x=3",
            headers={"Content-Type": "text/plain"},
        )
        assert raw.status_code == 415 and error_code(raw) == "unsupported_media_type"
