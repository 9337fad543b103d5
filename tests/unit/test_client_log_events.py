"""The clients' event streams with log lines (``log`` events, pair ids) against a
scripted API: asked for, each line is a LogEvent and a reconnect resumes after the
last id as it came; not asked for (``wait`` included), the server is asked to leave
lines out and any it sends are skipped."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from freight.client import AsyncClient, Client, LogEvent, StreamEvent, _events
from tests.unit.fake_api import Api

EVENTS = "/v1/predictions/p1/events"


def prediction(status: str) -> dict[str, Any]:
    return {"id": "p1", "target": "echo", "kind": "model", "status": status}


def line(seq: int, text: str) -> dict[str, Any]:
    return {
        "seq": seq,
        "at": 1.0,
        "attempt": 1,
        "stream": "stdout",
        "level": None,
        "phase": "predict",
        "text": text,
        "dropped": None,
    }


def stream(*events: tuple[str, str, dict[str, Any]]) -> httpx.Response:
    text = "".join(f"event: {k}\ndata: {json.dumps(d)}\nid: {i}\n\n" for i, k, d in events)
    headers = {"Content-Type": "text/event-stream"}
    return httpx.Response(200, headers=headers, content=text.encode())


FIRST = [
    ("1", "queued", prediction("queued")),
    ("2", "running", prediction("running")),
    ("2-1", "log", line(1, "one")),
]
REST = [("2-2", "log", line(2, "two")), ("3-2", "succeeded", prediction("succeeded"))]


@pytest.fixture
def api() -> Api:
    return Api()


@pytest.fixture
def client(api: Api) -> Iterator[Client]:
    with Client("http://freight.test", transport=httpx.MockTransport(api)) as c:
        yield c


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_events, "RECONNECT_PAUSE_S", 0.0)


def described(event: StreamEvent | LogEvent) -> tuple[str, str, str | None]:
    if isinstance(event, LogEvent):
        return event.cursor, event.type, event.line.text
    return event.cursor, event.type, event.prediction.status


def test_lines_are_log_events_and_a_reconnect_resumes_after_the_last_id(
    api: Api, client: Client
) -> None:
    """With ``logs=True`` each line is a LogEvent with its LogLine; a stream cut after
    line 1 reconnects with ``Last-Event-ID: 2-1``; the end is still the final event."""
    api.on("GET", EVENTS, stream(*FIRST), stream(*REST))
    got = [described(e) for e in client.events("p1", logs=True)]
    assert got == [
        ("1", "queued", "queued"),
        ("2", "running", "running"),
        ("2-1", "log", "one"),
        ("2-2", "log", "two"),
        ("3-2", "succeeded", "succeeded"),
    ]
    assert [r.headers.get("Last-Event-ID") for r in api.requests] == [None, "2-1"]
    assert all(r.url.params.get("logs") == "true" for r in api.requests)


def test_a_follower_without_logs_asks_for_none_and_skips_any(api: Api, client: Client) -> None:
    """``events()`` asks for no lines; lines a server sends anyway are skipped, yet
    their id is the one a reconnect resumes after."""
    api.on("GET", EVENTS, stream(*FIRST), stream(*REST))
    assert [e.type for e in client.events("p1")][-1] == "succeeded"
    streams = [r for r in api.requests if r.url.path == EVENTS]
    assert [r.url.params.get("logs") for r in streams] == [None, None]
    assert [r.headers.get("Last-Event-ID") for r in streams] == [None, "2-1"]
    api.requests.clear()
    got = [(e.id, e.cursor, e.type) for e in client.events("p1", after="2-1")]
    assert got == [(3, "3-2", "succeeded")]
    assert api.requests[0].headers["Last-Event-ID"] == "2-1"


async def test_the_async_client_yields_log_events(api: Api) -> None:
    """AsyncClient.events(logs=True) runs the same follower."""
    api.on("GET", EVENTS, stream(*FIRST, *REST))
    async with AsyncClient("http://freight.test", transport=httpx.MockTransport(api)) as client:
        got = [described(e) async for e in client.events("p1", logs=True)]
    assert [g[1] for g in got] == ["queued", "running", "log", "log", "succeeded"]
    assert got[2] == ("2-1", "log", "one")
