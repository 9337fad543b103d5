"""Retention end to end: finished predictions and freight's objects of them are
deleted once they are older than ``retention_s``; live ones and the caller's own
objects are kept. Both deployment shapes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx

from freight.storage import open_storage
from freight.storage.base import Storage
from tests.fixtures.server import Server, wait_until
from tests.integration.helpers import create, error_code, wait_done


def server_storage(server: Server) -> Storage:
    """The object store the server writes to, opened from this process."""
    url = server.env.get("FREIGHT_STORAGE_URL") or (
        (Path(server.env["FREIGHT_STATE_DIR"]) / "objects").resolve().as_uri()
    )
    return open_storage(url)


def exists(storage: Storage, key: str) -> bool:
    return asyncio.run(storage.stat(key)) is not None


def gone(client: httpx.Client, prediction_id: str) -> bool:
    response = client.get(f"/v1/predictions/{prediction_id}")
    return response.status_code == 404 and error_code(response) == "prediction_not_found"


def test_finished_predictions_and_their_objects_are_purged(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    """A finished prediction disappears with its stored input and output after
    retention_s; a running or queued one stays, and an input given by input_uri is kept."""
    server = make_server(
        models=["Echo", "Hold"],
        FREIGHT_RETENTION_S="2",
        FREIGHT_RETENTION_INTERVAL_S="0.2",
    )
    storage = server_storage(server)
    asyncio.run(storage.put("user/in.json", b'{"mine": true}', content_type="application/json"))
    with server.client() as client:
        running = create(client, "hold", {"pidfile": str(tmp_path / "hold")})
        queued = create(client, "hold", {"pidfile": str(tmp_path / "hold-2")})
        own = wait_done(client, create(client, "echo", {"x": 1})["id"])
        by_uri = create(
            client,
            "echo",
            input_uri="freight://user/in.json",
            input_content_type="application/json",
        )
        by_uri = wait_done(client, by_uri["id"])
        assert own["status"] == by_uri["status"] == "succeeded"
        # freight stored the input and the output (checked well within retention_s)
        assert exists(storage, f"inputs/{own['id']}")
        assert exists(storage, f"outputs/{own['id']}")
        assert exists(storage, f"outputs/{by_uri['id']}")

        wait_until(lambda: gone(client, own["id"]) and gone(client, by_uri["id"]), 30)
        assert client.get(f"/v1/predictions/{own['id']}/output").status_code == 404
        assert not exists(storage, f"inputs/{own['id']}")
        assert not exists(storage, f"outputs/{own['id']}")
        assert not exists(storage, f"outputs/{by_uri['id']}")
        assert exists(storage, "user/in.json")  # the caller's object, not freight's
        # older than retention_s too, but not finished: never purged
        for live in (running, queued):
            response = client.get(f"/v1/predictions/{live['id']}")
            assert response.status_code == 200
            assert response.json()["status"] in {"queued", "running"}
