"""Creating many predictions in one request (``POST /v1/predictions/bulk``), on both
shapes: each item's result in its place (created, or the error a single create would
have answered), idempotency keys per item, the Python client and ``freight submit``."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from freight.client import Client
from tests.fixtures.server import FREIGHT, Server
from tests.integration.helpers import wait_done


def test_each_item_gets_its_own_result(server: Server) -> None:
    with server.client() as client:
        items = [
            {"target": "echo", "input": {"n": 1}, "metadata": {"row": 1}},
            {"target": "no-such-model", "input": 1},
            {"target": "echo", "input": {"n": 2}, "idempotency_key": "bulk-k2"},
            {"target": "echo", "priority": 5000},
            {"target": "echo", "input": 3, "input_uri": "freight://x"},
            "not an object",
        ]
        answer = client.post("/v1/predictions/bulk", json={"predictions": items})
        assert answer.status_code == 200, answer.text
        data = answer.json()["data"]
        assert [d["index"] for d in data] == list(range(6))
        assert [d["status"] for d in data] == [202, 404, 202, 422, 400, 422]
        assert data[1]["error"]["code"] == "unknown_target"
        assert data[3]["error"]["code"] == "validation_error"
        assert data[4]["error"]["code"] == "ambiguous_input"
        first = wait_done(client, data[0]["id"])
        assert (first["output"], first["metadata"]) == ({"n": 1}, {"row": 1})
        assert wait_done(client, data[2]["id"])["output"] == {"n": 2}
        again = client.post("/v1/predictions/bulk", json={"predictions": items[2:3]})
        assert again.json()["data"][0]["id"] == data[2]["id"]  # the key's replay
        changed = {**items[2], "input": {"n": 3}}
        clash = client.post("/v1/predictions/bulk", json={"predictions": [changed]})
        assert clash.json()["data"][0]["status"] == 409
        assert clash.json()["data"][0]["error"]["code"] == "idempotency_conflict"
        listed = client.get("/v1/predictions", params={"target": "echo", "limit": 100}).json()
        assert len(listed["data"]) == 2  # nothing refused left a row


def test_a_request_over_the_bound_or_of_the_wrong_shape_is_refused(server: Server) -> None:
    with server.client() as client:
        many = [{"target": "echo", "input": i} for i in range(1001)]
        over = client.post("/v1/predictions/bulk", json={"predictions": many})
        assert over.status_code == 400 and over.json()["error"]["code"] == "too_many_predictions"
        for body in ({"predictions": []}, [1], {"predictions": [], "x": 1}):
            bad = client.post("/v1/predictions/bulk", json=body)
            assert bad.status_code == 422 and bad.json()["error"]["code"] == "validation_error"
        assert client.get("/v1/predictions").json()["data"] == []


def test_the_client_and_the_cli_submit_many(server: Server, tmp_path: Path) -> None:
    with Client(server.url) as client:
        created = client.create_many(
            [{"target": "echo", "input": i, "idempotency_key": f"c-{i}"} for i in range(1500)]
        )
        assert [c.index for c in created] == list(range(1500)) and all(c.ok for c in created)
        assert client.wait(created[-1].id or "", timeout=60).output == 1499
    lines = tmp_path / "inputs.jsonl"
    lines.write_text('{"a": 1}\n\n[2]\n')
    env = {**server.env, "FREIGHT_URL": server.url}
    command = [*FREIGHT, "submit", "echo", str(lines), "--key-prefix", "run1"]
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    ids = [json.loads(line)["id"] for line in first.stdout.splitlines()]
    assert len(ids) == 2
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert [json.loads(line)["id"] for line in again.stdout.splitlines()] == ids
    with server.client() as http:
        assert wait_done(http, ids[1])["output"] == [2]
