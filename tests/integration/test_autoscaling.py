"""Autoscaling of a real server (embedded shape): from zero, back to zero, out on a burst.

The ``nap0`` model (tests/project/models.py) has ``Replicas(min=0, max=3,
target_backlog=2, idle_s=1)``: no runner process while idle, one started by its
first request, up to three under a backlog. Every wait is polled on a deadline.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.acceptance.conftest import run_cli
from tests.fixtures.server import Server, wait_until
from tests.integration.helpers import create, wait_done

pytestmark = [
    pytest.mark.slow,
    pytest.mark.parametrize("shape", ["embedded"], indirect=True),
]

MakeServer = Callable[..., Server]


def model(client: httpx.Client) -> dict[str, Any]:
    response = client.get("/v1/models/nap0")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_scale_from_zero_and_back(make_server: MakeServer) -> None:
    """Ready with no replica; the first prediction starts one and succeeds (no error);
    after idle_s without work the model is at zero replicas again."""
    server = make_server(models=["_Nap0"])
    with server.client(timeout_s=60) as client:
        idle = model(client)
        assert idle["replicas"]["total"] == 0 and idle["replicas"]["running"] == 0
        assert idle["replicas"]["min"] == 0 and idle["scaling"]["served"] is True
        response = client.post("/v1/models/nap0/predict", json={"ms": 0})
        assert response.status_code == 200, response.text
        assert response.json()["slept_ms"] == 0
        up = model(client)
        change = up["scaling"]["last_change"]
        assert (change["from"], change["to"]) == (0, 1)
        assert change["reason"] == "first request: scale from zero"
        (cold,) = up["scaling"]["cold_starts"]
        assert cold["seconds"] >= cold["load_s"] >= 0
        wait_until(lambda: model(client)["replicas"]["total"] == 0, timeout_s=30)
        down = model(client)
        assert down["scaling"]["last_change"]["to"] == 0
        assert down["replicas"]["desired"] == 0
        listed = {m["name"]: m for m in client.get("/v1/models").json()["data"]}
        assert listed["nap0"]["replicas"]["total"] == 0
        # and from zero once more
        again = client.post("/v1/models/nap0/predict", json={"ms": 0})
        assert again.status_code == 200, again.text
        metrics = client.get("/metrics").text
        assert 'freight_scale_decisions_total{model="nap0",reason="from_zero"} 2.0' in metrics
        assert 'freight_scale_decisions_total{model="nap0",reason="down"} 1.0' in metrics
    shown = run_cli("models", "nap0", env={**server.env, "FREIGHT_URL": server.url})
    assert shown.returncode == 0, shown.stderr
    assert "last change" in shown.stdout, shown.stdout
    assert "cold start" in shown.stdout


def test_a_burst_scales_out(make_server: MakeServer) -> None:
    """Twelve half-second predictions at two per replica: more than one replica runs
    (at most three); all succeed, on several runner processes."""
    server = make_server(models=["_Nap0"])
    with server.client(timeout_s=60) as client:
        ids = [create(client, "nap0", {"ms": 500})["id"] for _ in range(12)]
        totals: list[int] = []

        def scaled_out() -> bool:
            totals.append(model(client)["replicas"]["total"])
            return totals[-1] > 1

        wait_until(scaled_out, timeout_s=30)
        done = [wait_done(client, i) for i in ids]
        assert {d["status"] for d in done} == {"succeeded"}
        assert len({d["output"]["pid"] for d in done}) > 1
        assert max(totals) <= 3 and model(client)["replicas"]["total"] <= 3


def test_unknown_model_is_404(make_server: MakeServer) -> None:
    server = make_server(models=["_Nap0"])
    with server.client() as client:
        response = client.get("/v1/models/nope")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "unknown_target"
