"""PostgreSQL restarted under load: 503 while down, then every accepted prediction completes."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import psycopg
import pytest

from freight.store import migrate
from tests.fixtures.private_postgres import PrivatePostgres
from tests.fixtures.server import FAST, PROJECT, Server, wait_until
from tests.integration.helpers import create, error_code, wait_done

pytestmark = pytest.mark.slow


def test_postgres_restart_under_load(
    private_postgres: PrivatePostgres,
    s3_url: str,
    tmp_path: Path,
) -> None:
    """While the database is down the API answers 503 store_unavailable and workers retry;
    once it is back every accepted prediction succeeds, each exactly once."""
    with psycopg.connect(private_postgres.url(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE freight")
    database_url = private_postgres.url("freight")
    migrate(database_url)
    env = {
        **os.environ,
        **FAST,
        "FREIGHT_DATABASE_URL": database_url,
        "FREIGHT_STORAGE_URL": s3_url,
        "FREIGHT_STATE_DIR": str(tmp_path / "state"),
        "FREIGHT_MODELS": '["models:Nap"]',
    }
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
