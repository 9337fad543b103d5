"""The cluster shape: `freight api` and `freight worker` as separate processes on
PostgreSQL + S3, coordinating only through the database and the object store."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.server import FAST, FREIGHT, PROJECT, Server, free_port, wait_until
from tests.integration.helpers import create, status_of, wait_done

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(postgres_url: str, s3_url: str, tmp_path: Path) -> Iterator[tuple[Server, Path]]:
    """One API process and two worker processes serving Echo and Hold."""
    env = {
        **os.environ,
        **FAST,
        "FREIGHT_DATABASE_URL": postgres_url,
        "FREIGHT_STORAGE_URL": s3_url,
        "FREIGHT_STATE_DIR": str(tmp_path / "state"),
        "FREIGHT_MODELS": '["models:Echo", "models:Hold"]',
        "FREIGHT_SECRET_KEY": "k" * 32,
    }
    workers = [
        subprocess.Popen(
            [*FREIGHT, "worker", str(PROJECT)],
            env=env,
            cwd=tmp_path,
            stdout=(tmp_path / f"worker{i}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        for i in range(2)
    ]
    api = Server(env=env, cwd=tmp_path, project=PROJECT)
    api.port = free_port()
    api.log_path = tmp_path / "api.log"
    api.proc = subprocess.Popen(
        [*FREIGHT, "api", str(PROJECT), "--port", str(api.port)],
        env=env,
        cwd=tmp_path,
        stdout=api.log_path.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_until(api._ready, timeout_s=60)
        for i in range(2):  # both workers started (and handle SIGTERM by draining)
            log = tmp_path / f"worker{i}.log"
            wait_until(lambda log=log: "freight: worker " in log.read_text(), timeout_s=60)
        yield api, tmp_path
    finally:
        api.stop(kill=True)
        for worker in workers:
            worker.terminate()
        for worker in workers:
            assert worker.wait(30) == 0  # a drained worker exits cleanly


def test_api_and_workers_in_separate_processes(cluster: tuple[Server, Path]) -> None:
    """Predictions created on the API are run by worker processes, real-time included."""
    api, _ = cluster
    with api.client() as client:
        ids = [create(client, "echo", {"i": i})["id"] for i in range(20)]
        outputs = [wait_done(client, i) for i in ids]
        assert [o["output"] for o in outputs] == [{"i": i} for i in range(20)]
        response = client.post("/v1/models/echo/predict", json={"rt": True})
        assert response.status_code == 200 and response.json() == {"rt": True}


def test_cancel_reaches_a_worker_in_another_process(cluster: tuple[Server, Path]) -> None:
    """Canceling a prediction running on another process's worker interrupts it there."""
    api, tmp_path = cluster
    pidfile = tmp_path / "hold"
    with api.client() as client:
        held = create(client, "hold", {"pidfile": str(pidfile)})
        wait_until(Path(f"{pidfile}.1").exists)
        pid = int(wait_until(lambda: Path(f"{pidfile}.1").read_text().strip()))
        assert client.post(f"/v1/predictions/{held['id']}/cancel").json()["status"] == "canceled"
        wait_until(lambda: not Path(f"/proc/{pid}").exists(), timeout_s=30)
        assert status_of(client, held["id"]) == "canceled"
