"""Failure paths: killed runners, a killed server, drains. Nothing accepted is lost."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.server import Server, wait_until
from tests.integration.helpers import create, status_of, stored, wait_done

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


@pytest.mark.parametrize("shape", ["embedded"], indirect=True)  # the exclusive store
def test_a_prediction_that_kills_the_server_spends_its_attempts(
    make_server: Callable[..., Server],
    tmp_path: Path,
) -> None:
    """The whole embedded server SIGKILLed while one prediction runs, restarted, and
    killed again on its rerun: each crash counts an attempt, so after max_attempts (2)
    the restart ends it attempts_exhausted instead of running it a third time."""
    pidfile = tmp_path / "hold"
    server = make_server(models=["Hold"])
    with server.client() as client:
        prediction_id = create(client, "hold", {"pidfile": str(pidfile)})["id"]
    for attempt in (1, 2):  # Hold.max_attempts == 2
        wait_until(Path(f"{pidfile}.{attempt}").exists)  # running this attempt
        server.signal(signal.SIGKILL)  # the server and its runners, mid-prediction
        server.wait_exit()
        server = make_server(models=["Hold"])
    with server.client() as client:

        def ended_or_rerun() -> dict[str, Any] | None:
            if Path(f"{pidfile}.3").exists():
                return {"status": "ran a third time"}
            body: dict[str, Any] = client.get(f"/v1/predictions/{prediction_id}").json()
            return body if body["status"] in {"failed", "succeeded"} else None

        done = wait_until(ended_or_rerun)
    assert done["status"] == "failed", done
    assert (done["error"]["code"], done["attempts"]) == ("attempts_exhausted", 2)
    assert not Path(f"{pidfile}.3").exists()


def test_sigterm_drains_running_work_and_keeps_the_queue(
    make_server: Callable[..., Server],
    tmp_path: Path,
) -> None:
    """SIGTERM stops claiming: running work finishes, queued work is left queued and
    unrun (attempts 0) when the process exits with 0; a restart runs the rest."""
    server = make_server(models=["Hold"])
    pidfile = tmp_path / "hold"
    with server.client() as client:
        running = create(client, "hold", {"pidfile": str(pidfile), "ms": 2500})
        queued = [
            create(client, "hold", {"pidfile": str(tmp_path / f"q{i}"), "ms": 0})["id"]
            for i in range(3)
        ]
        wait_until(Path(f"{pidfile}.1").exists)
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    rows = stored(server.env, [running["id"], *queued])
    assert rows[running["id"]].status == "succeeded" and rows[running["id"]].attempts == 1
    for i, prediction_id in enumerate(queued):
        row = rows[prediction_id]
        assert (row.status, row.attempts, row.started_at) == ("queued", 0, None), row
        assert not Path(f"{tmp_path / f'q{i}'}.1").exists()  # the model never saw it
    restarted = make_server(models=["Hold"])
    with restarted.client() as client:
        first = client.get(f"/v1/predictions/{running['id']}").json()
        assert first["status"] == "succeeded" and first["attempts"] == 1
        for prediction_id in queued:
            done = wait_done(client, prediction_id)
            assert done["status"] == "succeeded" and done["attempts"] == 1


@pytest.mark.parametrize("shape", ["embedded"], indirect=True)  # a local upload to watch
def test_sigterm_stops_claiming_while_requests_finish(
    make_server: Callable[..., Server],
    tmp_path: Path,
) -> None:
    """Work queued at SIGTERM is not claimed while the server waits for in-flight
    requests (here a slow upload) to finish."""
    server = make_server(models=["Hold", "Reverse"])
    pidfile, late = tmp_path / "hold", tmp_path / "late"
    with server.client() as client:
        running = create(client, "hold", {"pidfile": str(pidfile), "ms": 1500})
        queued = create(client, "hold", {"pidfile": str(late), "ms": 0})["id"]
        awaiting = create(client, "reverse")
        wait_until(Path(f"{pidfile}.1").exists)
    release = threading.Event()

    def slow_body() -> Iterator[bytes]:
        yield b"first chunk"
        release.wait(60)  # the request stays in flight until the test lets go
        yield b"last chunk"

    def upload() -> None:
        with contextlib.suppress(httpx.HTTPError):  # the server may cut it at shutdown
            httpx.put(awaiting["upload_url"], content=slow_body(), timeout=60)

    uploader = threading.Thread(target=upload)
    uploader.start()
    try:
        inputs = Path(server.env["FREIGHT_STATE_DIR"]) / "objects" / "inputs"
        # the upload is in progress once its (temporary) file exists
        wait_until(lambda: any(awaiting["id"] in f.name for f in inputs.iterdir()))
        server.signal(signal.SIGTERM)
        assert server.wait_exit() == 0
    finally:
        release.set()
        uploader.join(60)
    rows = stored(server.env, [running["id"], queued])
    assert rows[running["id"]].status == "succeeded"
    assert not Path(f"{late}.1").exists(), "queued work ran after SIGTERM"
    assert (rows[queued].status, rows[queued].attempts) == ("queued", 0)


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
