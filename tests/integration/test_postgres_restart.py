"""PostgreSQL restarted under load and with work in flight: 503 while down, then every
accepted prediction completes, none twice."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx
import psycopg
import pytest

from freight.errors import StoreUnavailableError
from freight.store import migrate
from freight.store.postgres import DOWN_ACQUIRE_S, PostgresStore
from tests.fixtures.private_postgres import PrivatePostgres
from tests.fixtures.server import FAST, PROJECT, Server, wait_until
from tests.integration.helpers import (
    create,
    error_code,
    gate_input,
    gate_runs,
    wait_done,
)

pytestmark = pytest.mark.slow


def _env(
    pg: PrivatePostgres, s3_url: str, tmp_path: Path, model: str, **extra: str
) -> dict[str, str]:
    """A server environment on a fresh, migrated database of the private PostgreSQL."""
    with psycopg.connect(pg.url(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE freight")
    database_url = pg.url("freight")
    migrate(database_url)
    return {
        **os.environ,
        **FAST,
        "FREIGHT_DATABASE_URL": database_url,
        "FREIGHT_STORAGE_URL": s3_url,
        "FREIGHT_STATE_DIR": str(tmp_path / "state"),
        "FREIGHT_MODELS": f'["models:{model}"]',
        **extra,
    }


def test_postgres_restart_under_load(
    private_postgres: PrivatePostgres,
    s3_url: str,
    tmp_path: Path,
) -> None:
    """While the database is down the API answers 503 store_unavailable and workers retry;
    once it is back every accepted prediction succeeds, each exactly once."""
    env = _env(private_postgres, s3_url, tmp_path, "Nap")
    server = Server(env=env, cwd=tmp_path, project=PROJECT).start()
    try:
        with server.client(timeout_s=15) as client:
            ids = [create(client, "nap", {"ms": 100, "n": i})["id"] for i in range(30)]
            private_postgres.stop("fast")
            down = client.post("/v1/predictions", json={"target": "nap", "input": {"n": -1}})
            assert down.status_code == 503 and error_code(down) == "store_unavailable"
            assert client.get(f"/v1/predictions/{ids[0]}").status_code == 503
            assert client.get("/readyz").status_code == 503
            private_postgres.start()
            wait_until(lambda: client.get("/readyz").status_code == 200, timeout_s=60)
            outputs = [wait_done(client, i, timeout_s=120) for i in ids]
            assert [o["status"] for o in outputs] == ["succeeded"] * len(ids)
            assert [o["output"]["n"] for o in outputs] == list(range(len(ids)))
            listed = client.get("/v1/predictions", params={"limit": 500}).json()["data"]
            assert sorted(p["id"] for p in listed) == sorted(ids)
            assert httpx.get(f"{server.url}/healthz").status_code == 200
    finally:
        server.stop(kill=True)


def test_postgres_restart_with_work_in_flight(
    private_postgres: PrivatePostgres,
    s3_url: str,
    tmp_path: Path,
) -> None:
    """Predictions running when the database goes down finish in the model meanwhile
    (GET answers 503 store_unavailable) and are recorded once it is back: succeeded on
    attempt 1, each run by the model exactly once."""
    gate = tmp_path / "gate"
    gate.mkdir()
    # leases far longer than the outage: this pins retried completions, not lease expiry
    env = _env(private_postgres, s3_url, tmp_path, "_Gate", FREIGHT_LEASE_S="60")
    server = Server(env=env, cwd=tmp_path, project=PROJECT).start()
    try:
        with server.client(timeout_s=20) as client:
            ids = [create(client, "gate", gate_input(gate, i))["id"] for i in range(2)]
            wait_until(lambda: all(gate_runs(gate, i) for i in range(2)))  # both in flight
            private_postgres.stop("fast")
            down = client.get(f"/v1/predictions/{ids[0]}")
            assert down.status_code == 503, down.text
            assert error_code(down) == "store_unavailable"
            (gate / "open").touch()  # the model finishes while the database is away
            wait_until(lambda: all((gate / f"{i}.done").exists() for i in range(2)))
            # and the agent has failed to record them at least once (it logs each retry)
            wait_until(lambda: "retrying completion" in server.logs(), timeout_s=30)
            private_postgres.start()
            wait_until(lambda: client.get("/readyz").status_code == 200, timeout_s=60)
            done = [wait_done(client, i, timeout_s=120) for i in ids]
            assert [(p["status"], p["attempts"]) for p in done] == [("succeeded", 1)] * 2, done
            assert [p["output"]["tag"] for p in done] == ["0", "1"]
            assert [len(gate_runs(gate, i)) for i in range(2)] == [1, 1]
    finally:
        server.stop(kill=True)


async def test_in_an_outage_the_store_stops_waiting_the_whole_acquire_timeout(
    private_postgres: PrivatePostgres, tmp_path: Path
) -> None:
    """After a transaction failed to reach the server, the next ones wait only
    DOWN_ACQUIRE_S for a connection (each still StoreUnavailableError); the first one
    that succeeds after the restart waits the pool's whole timeout again."""
    url = _env(private_postgres, "memory://", tmp_path, "Nap")["FREIGHT_DATABASE_URL"]
    store = PostgresStore(url)
    await store.open()
    try:
        assert store._acquire_s() is None
        private_postgres.stop("fast")
        for _ in range(2):
            with pytest.raises(StoreUnavailableError):
                await store.get_many(["x"])
            assert store._acquire_s() == DOWN_ACQUIRE_S
        private_postgres.start()

        async def back() -> bool:
            try:
                await store.get_many(["x"])
            except StoreUnavailableError:
                return False
            return True

        async with asyncio.timeout(60):
            while not await back():
                await asyncio.sleep(0.1)
        assert store._acquire_s() is None
    finally:
        await store.close()
