"""Why work waits: every queued prediction carries a reason, through the API, on both
shapes — in the cluster shape the API runs no replicas and reads the workers' census.

Each reason is produced for real: no worker at all (``no_replica``), a model scaled
to zero whose load is held (``cold_start``), its one replica held by a prediction
(``at_capacity``, ``lower_priority`` behind a higher priority), an upload not made
(``awaiting_input``), a replica killed mid-prediction (``retry_backoff``); ``quota``
is in test_quotas.py.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acceptance.conftest import run_cli
from tests.fixtures.server import Server, wait_until

SECRET = {"FREIGHT_SECRET_KEY": "w" * 32}  # one key for every process of a cluster


def _start(make_server: Callable[..., Server], shape: dict[str, str], **env: str) -> Server:
    """The API (and, in the cluster shape, a worker in another process)."""
    models = ["Hold", "_Gated"]
    if shape["FREIGHT_SHAPE"] == "embedded":
        return make_server(models=models, **env)
    api = make_server(models=models, command="api", **SECRET, **env)
    make_server(models=models, command="worker", **SECRET, **env)
    return api


def _reason(client: httpx.Client, prediction_id: str) -> Any:
    body = client.get(f"/v1/predictions/{prediction_id}").json()
    return body["waiting_reason"] if body["status"] in ("queued", "awaiting_input") else None


def _until(client: httpx.Client, prediction_id: str, reason: str) -> dict[str, Any]:
    wait_until(lambda: _reason(client, prediction_id) == reason, 60)
    body: dict[str, Any] = client.get(f"/v1/predictions/{prediction_id}").json()
    assert body["waiting_message"], body
    return body


def _create(client: httpx.Client, target: str, body: dict[str, Any]) -> str:
    created = client.post("/v1/predictions", json={"target": target, **body})
    assert created.status_code == 202, created.text
    return str(created.json()["id"])


@pytest.mark.parametrize("shape", ["cluster"], indirect=True)
def test_no_worker_is_no_replica(make_server: Callable[..., Server]) -> None:
    """An API with no worker anywhere: queued, and saying why."""
    api = make_server(models=["Hold"], command="api", **SECRET)
    with api.client() as client:
        pid = _create(client, "hold", {"input": {"pidfile": "/nonexistent"}})
        body = _until(client, pid, "no_replica")
        assert "hold" in body["waiting_message"]


def test_each_reason_a_prediction_waits(
    make_server: Callable[..., Server], shape: dict[str, str], tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    server = _start(
        make_server, shape, FREIGHT_TEST_LOAD_GATE=str(gate), FREIGHT_RETRY_BACKOFF_S="600"
    )
    with server.client() as client:
        # awaiting_input: created for an upload that never came
        upload = _create(client, "hold", {})
        _until(client, upload, "awaiting_input")

        # cold_start: a model at zero replicas whose load is held
        cold = _create(client, "gated", {"input": {"n": 1}})
        _until(client, cold, "cold_start")
        gate.touch()
        wait_until(lambda: client.get(f"/v1/predictions/{cold}").json()["status"] == "succeeded")

        # at_capacity, then lower_priority: hold's one replica held by a prediction
        pidfile = tmp_path / "pid"
        held = _create(client, "hold", {"input": {"pidfile": str(pidfile)}})
        wait_until(lambda: client.get(f"/v1/predictions/{held}").json()["status"] == "running", 60)
        high = _create(client, "hold", {"input": {"pidfile": str(tmp_path / "h")}, "priority": 5})
        _until(client, high, "at_capacity")
        low = _create(client, "hold", {"input": {"pidfile": str(tmp_path / "l")}})
        _until(client, low, "lower_priority")
        shown = run_cli("status", low, env={**server.env, "FREIGHT_URL": server.url})
        assert "waiting" in shown.stdout and "lower_priority" in shown.stdout, shown
        for waiting in (high, low):
            assert client.post(f"/v1/predictions/{waiting}/cancel").status_code == 200

        # retry_backoff: its replica killed mid-prediction, it waits out its back-off
        wait_until(lambda: Path(f"{pidfile}.1").exists())
        os.kill(int(Path(f"{pidfile}.1").read_text()), signal.SIGKILL)
        body = _until(client, held, "retry_backoff")
        assert body["attempts"] == 1
        (lost,) = body["attempt_history"]
        assert (lost["attempt"], lost["why"]) == (1, "replica_died"), lost
        assert client.post(f"/v1/predictions/{held}/cancel").status_code == 200
        # a prediction that runs or ended says nothing of waiting
        ended = client.get(f"/v1/predictions/{held}").json()
        assert (ended["status"], ended["waiting_reason"]) == ("canceled", None)
