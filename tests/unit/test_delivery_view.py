"""What the deliverer renders: which attempt an event is about, and the base URL of
the API's signed routes in a notification (no HTTP request to take it from)."""

from __future__ import annotations

from pathlib import Path

import pytest

from freight.agent.delivery import attempt_of, links_base
from freight.config import Settings
from freight.deliveries import DeliveryStatus, OutboxRow


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No FREIGHT_* variable of the calling shell leaks into the settings."""
    import os

    for name in list(os.environ):
        if name.startswith("FREIGHT_"):
            monkeypatch.delenv(name)


def outbox(event_id: str, seq: int) -> OutboxRow:
    return OutboxRow(
        id=f"{event_id}#0",
        event_id=event_id,
        subscription=0,
        prediction_id="p",
        event_type="started",
        seq=seq,
        status=DeliveryStatus.PENDING,
        attempts=0,
        created_at=1.0,
        next_at=1.0,
    )


def test_the_attempt_of_an_event_is_in_its_id() -> None:
    """``<prediction>:<type>:<attempt>`` names the attempt; else its sequence does."""
    assert attempt_of(outbox("0193-a:started:2", 4)) == 2
    assert attempt_of(outbox("0193-a:started:x", 6)) == 3


@pytest.mark.parametrize(
    ("overrides", "base"),
    [
        ({"public_url": "https://freight.example.com/"}, "https://freight.example.com"),
        ({"host": "10.0.0.5", "port": 9000}, "http://10.0.0.5:9000"),
        ({"host": "::1", "port": 9000}, "http://[::1]:9000"),
    ],
)
def test_links_base(tmp_path: Path, overrides: dict[str, object], base: str) -> None:
    """The public URL when set, else the API's own host and port."""
    settings = Settings(project_dir=tmp_path, **overrides)  # type: ignore[arg-type]
    assert links_base(settings) == base


def test_a_wildcard_host_is_named_by_this_machine(tmp_path: Path) -> None:
    """An API listening on every address is reached by this machine's name."""
    import socket

    settings = Settings(project_dir=tmp_path, host="0.0.0.0", port=8000)
    assert links_base(settings) == f"http://{socket.gethostname()}:8000"
