"""Queue semantics through the HTTP API: TTLs, priorities, canceling uploads, idempotency."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from tests.fixtures.server import Server, wait_until
from tests.integration.helpers import create, error_code, status_of, wait_done


def _hold_busy(client: httpx.Client, tmp_path: Path) -> dict[str, Any]:
    """Occupy the single `hold` replica until the returned prediction is canceled."""
    pidfile = tmp_path / "busy"
    busy = create(client, "hold", {"pidfile": str(pidfile)})
    wait_until(Path(f"{pidfile}.1").exists)
    return busy


def test_ttl_expires_a_prediction_queued_behind_a_busy_replica(
    make_server: Callable[..., Server],
    tmp_path: Path,
) -> None:
    """A prediction not started within its ttl_s expires with code `expired`, unrun."""
    server = make_server(models=["Hold"])
    with server.client() as client:
        _hold_busy(client, tmp_path)
        pidfile = tmp_path / "late"
        late = create(client, "hold", {"pidfile": str(pidfile), "ms": 0}, ttl_s=0.5)
        done = wait_done(client, late["id"], timeout_s=30)
        assert done["status"] == "expired", done
        assert done["error"]["code"] == "expired"
        assert done["started_at"] is None and done["attempts"] == 0
        assert not Path(f"{pidfile}.1").exists()


def test_higher_priority_starts_first(
    make_server: Callable[..., Server],
    tmp_path: Path,
) -> None:
    """Of two queued predictions the higher priority one starts first, though it came later."""
    server = make_server(models=["Hold"])
    with server.client() as client:
        busy = _hold_busy(client, tmp_path)
        low = create(client, "hold", {"pidfile": str(tmp_path / "low"), "ms": 0}, priority=-5)
        high = create(client, "hold", {"pidfile": str(tmp_path / "high"), "ms": 0}, priority=5)
        assert (status_of(client, low["id"]), status_of(client, high["id"])) == (
            "queued",
            "queued",
        )
        client.post(f"/v1/predictions/{busy['id']}/cancel").raise_for_status()
        low_done, high_done = wait_done(client, low["id"]), wait_done(client, high["id"])
        assert low_done["status"] == high_done["status"] == "succeeded"
        started = {
            name: datetime.fromisoformat(p["started_at"])
            for name, p in (("low", low_done), ("high", high_done))
        }
        assert started["high"] < started["low"], started


def test_cancel_awaiting_input_refuses_its_upload_url(make_server: Callable[..., Server]) -> None:
    """Canceling an awaiting_input prediction makes it canceled; its upload URL then gets
    409 invalid_state and the prediction stays canceled with no input."""
    server = make_server(models=["Reverse"])
    with server.client() as client:
        created = create(client, "reverse")
        assert created["status"] == "awaiting_input"
        canceled = client.post(f"/v1/predictions/{created['id']}/cancel")
        assert canceled.status_code == 200, canceled.text
        assert canceled.json()["status"] == "canceled"
        assert canceled.json()["error"]["code"] == "canceled"
        upload = httpx.put(
            created["upload_url"],
            content=b"late",
            headers={"Content-Type": "application/octet-stream"},
        )
        assert upload.status_code == 409, upload.text
        assert error_code(upload) == "invalid_state"
        after = client.get(f"/v1/predictions/{created['id']}").json()
        assert after["status"] == "canceled" and after["input_bytes"] is None


def test_concurrent_creates_with_one_idempotency_key_make_one_prediction(
    make_server: Callable[..., Server],
) -> None:
    """Two creates racing with the same Idempotency-Key and body get the same prediction,
    and only one row exists (several rounds, each a fresh key)."""
    server = make_server(models=["Echo"])
    rounds = 5
    with server.client() as client:
        for r in range(rounds):
            body = {"target": "echo", "input": {"round": r}}
            headers = {"Idempotency-Key": f"race-{r}"}
            barrier = threading.Barrier(2)
            responses: list[httpx.Response] = []

            def post(
                body: dict[str, Any] = body,
                headers: dict[str, str] = headers,
                barrier: threading.Barrier = barrier,
                responses: list[httpx.Response] = responses,
            ) -> None:
                with server.client() as own:
                    barrier.wait(10)
                    responses.append(own.post("/v1/predictions", json=body, headers=headers))

            threads = [threading.Thread(target=post) for _ in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            assert len(responses) == 2
            assert all(resp.status_code in (200, 202) for resp in responses), [
                resp.text for resp in responses
            ]
            ids = {resp.json()["id"] for resp in responses}
            assert len(ids) == 1, ids
            assert wait_done(client, ids.pop())["output"] == {"round": r}
        listed = client.get("/v1/predictions", params={"target": "echo", "limit": 500}).json()
        assert len(listed["data"]) == rounds
