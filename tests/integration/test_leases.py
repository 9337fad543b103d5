"""Leases: a running prediction's lease is renewed by heartbeats for as long as it runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.fixtures.server import Server, wait_until
from tests.integration.helpers import create, wait_done

LEASE_S = 1.0


def test_heartbeats_keep_a_long_prediction_on_its_first_attempt(
    make_server: Callable[..., Server],
    tmp_path: Path,
) -> None:
    """A prediction running four leases long is never reaped: it succeeds on attempt 1."""
    server = make_server(models=["Hold"], FREIGHT_LEASE_S=str(LEASE_S))
    pidfile = tmp_path / "hold"
    with server.client() as client:
        created = create(client, "hold", {"pidfile": str(pidfile), "ms": 4 * LEASE_S * 1000})
        wait_until(Path(f"{pidfile}.1").exists)
        done = wait_done(client, created["id"])
        assert done["status"] == "succeeded", done
        assert done["attempts"] == 1 and done["output"]["attempt"] == 1
        assert not Path(f"{pidfile}.2").exists()  # the model ran it once
