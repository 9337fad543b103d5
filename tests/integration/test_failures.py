"""Failure paths: killed runners, a killed server, drains. Nothing accepted is lost."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures.server import Server, wait_until
from tests.integration.helpers import create, status_of, wait_done

pytestmark = pytest.mark.slow


def _kill_runner(pidfile: Path, attempt: int) -> int:
    path = Path(f"{pidfile}.{attempt}")
    wait_until(path.exists)
    pid = int(wait_until(lambda: path.read_text().strip()))
    os.kill(pid, signal.SIGKILL)
    return pid


def test_runner_killed_mid_prediction_is_retried(
    make_server: Callable[..., Server],
    tmp_path: Path,
) -> None:
    """A runner SIGKILLed mid-prediction: the prediction reruns on a fresh replica."""
    server = make_server(models=["Hold"])
    pidfile = tmp_path / "hold"
    with server.client() as client:
        created = create(client, "hold", {"pidfile": str(pidfile), "hold_attempts": 1})
        killed = _kill_runner(pidfile, 1)
        done = wait_done(client, created["id"])
        assert done["status"] == "succeeded"
        assert done["attempts"] == 2 and done["output"]["attempt"] == 2
        assert done["output"]["pid"] != killed


def test_runner_killed_until_attempts_are_exhausted(
    make_server: Callable[..., Server],
    tmp_path: Path,
) -> None:
    """A prediction whose runner dies on every attempt fails with attempts_exhausted."""
    server = make_server(models=["Hold"])
    pidfile = tmp_path / "hold"
    with server.client() as client:
        created = create(client, "hold", {"pidfile": str(pidfile)})
        _kill_runner(pidfile, 1)
        _kill_runner(pidfile, 2)  # Hold.max_attempts == 2
        done = wait_done(client, created["id"])
        assert done["status"] == "failed"
        assert done["error"]["code"] == "attempts_exhausted"
        assert done["attempts"] == 2
        after = wait_done(
            client, create(client, "hold", {"pidfile": str(tmp_path / "n"), "ms": 0})["id"]
        )
        assert after["status"] == "succeeded"


def test_server_killed_then_restarted_loses_nothing(make_server: Callable[..., Server]) -> None:
    """SIGKILL of the whole server with work queued and running: after a restart every
    prediction succeeds exactly once with its own output."""
    server = make_server(models=["Nap"])
    with server.client() as client:
        ids = [create(client, "nap", {"ms": 300, "n": i})["id"] for i in range(40)]
        wait_until(
            lambda: client.get("/v1/predictions", params={"status": "running"}).json()["data"]
        )
    server.signal(signal.SIGKILL)
    server.wait_exit()
    restarted = make_server(models=["Nap"])
    with restarted.client() as client:
        outputs = [wait_done(client, i) for i in ids]
        assert [o["status"] for o in outputs] == ["succeeded"] * len(ids)
        assert [o["output"]["n"] for o in outputs] == list(range(len(ids)))
        listed: list[str] = []
        cursor = None
        while True:
            page = client.get(
                "/v1/predictions", params={"limit": 500, **({"cursor": cursor} if cursor else {})}
            ).json()
            listed += [p["id"] for p in page["data"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert sorted(listed) == sorted(ids)


def test_sigterm_drains_running_work_and_keeps_the_queue(
    make_server: Callable[..., Server],
    tmp_path: Path,
) -> None:
    """SIGTERM: running work finishes, queued work stays queued, exit code 0; a restart
    completes the rest."""
    server = make_server(models=["Hold"])
    pidfile = tmp_path / "hold"
    with server.client() as client:
        running = create(client, "hold", {"pidfile": str(pidfile), "ms": 1500})
        queued = [
            create(client, "hold", {"pidfile": str(tmp_path / f"q{i}"), "ms": 0})["id"]
            for i in range(3)
        ]
        wait_until(Path(f"{pidfile}.1").exists)
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    restarted = make_server(models=["Hold"])
    with restarted.client() as client:
        first = client.get(f"/v1/predictions/{running['id']}").json()
        assert first["status"] == "succeeded" and first["attempts"] == 1
        for prediction_id in queued:
            assert wait_done(client, prediction_id)["status"] == "succeeded"


def test_sigterm_past_grace_requeues_running_work(
    make_server: Callable[..., Server],
    tmp_path: Path,
) -> None:
    """Work still running when the drain grace ends is requeued, not failed or lost."""
    server = make_server(models=["Hold"], FREIGHT_DRAIN_GRACE_S="0.5")
    pidfile = tmp_path / "hold"
    with server.client() as client:
        held = create(client, "hold", {"pidfile": str(pidfile), "hold_attempts": 1})
        wait_until(Path(f"{pidfile}.1").exists)
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    restarted = make_server(models=["Hold"])
    with restarted.client() as client:
        done = wait_done(client, held["id"])
        assert done["status"] == "succeeded"
        assert done["output"]["attempt"] == 2
        assert done["attempts"] == 1  # the drain's kill was not the prediction's fault
        assert status_of(client, held["id"]) == "succeeded"
