"""Event streams, webhook subscriptions and deliveries against a real server, on both
deployment shapes.

Live streams are held open with the ``gate`` model (it runs until the test
creates its ``open`` file), so "running" is seen before "succeeded" because the
test decides when the prediction may finish, never because of timing. Webhooks
go to a receiver on loopback inside the test process (the server is told to
allow private addresses).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

import freight
from freight.client._events import SseParser
from tests.fixtures.server import FREIGHT, Server, wait_until
from tests.integration.helpers import create, error_code, gate_input, wait_done

PIPELINES = Path(__file__).resolve().parent.parent / "pipeline_project"
Event = tuple[int, str, dict[str, Any]]


def read_events(
    response: httpx.Response | Iterator[str], until: Callable[[Event], bool] | None = None
) -> Iterator[Event]:
    """The events of an open stream response (or of its lines) as ``(id, type, data)``,
    in order. Stopping early at ``until`` drops the response's line iterator, which
    closes the connection: a test that keeps the stream open passes its own lines."""
    parser = SseParser()
    lines = response.iter_lines() if isinstance(response, httpx.Response) else response
    for line in lines:
        raw = parser.feed(line)
        if raw is None:
            continue
        event = (int(raw.id or 0), raw.type, json.loads(raw.data))
        yield event
        if until is not None and until(event):
            return


def all_events(client: httpx.Client, prediction_id: str, **headers: str) -> list[Event]:
    path = f"/v1/predictions/{prediction_id}/events"
    with client.stream("GET", path, headers=headers) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        return list(read_events(response))


def kinds(events: list[Event]) -> list[tuple[int, str]]:
    return [(event_id, kind) for event_id, kind, _ in events]


def test_a_finished_prediction_replays_its_events_and_ends(
    make_server: Callable[..., Server],
) -> None:
    """A done prediction's stream replays queued, running, succeeded (ids 1-3) and ends;
    each event's data is the prediction object; ?after= replays only what follows; an
    unknown id is a 404 before any stream."""
    server = make_server(models=["Echo"])
    with server.client() as client:
        created = create(client, "echo", {"x": 1})
        wait_done(client, created["id"])
        events = all_events(client, created["id"])
        assert kinds(events) == [(1, "queued"), (2, "running"), (3, "succeeded")]
        final = events[-1][2]
        assert (final["id"], final["status"], final["output"]) == (
            created["id"],
            "succeeded",
            {"x": 1},
        )
        later = client.get(f"/v1/predictions/{created['id']}/events", params={"after": 1})
        assert [line for line in later.text.splitlines() if line.startswith("id:")] == [
            "id: 2",
            "id: 3",
        ]
        missing = client.get("/v1/predictions/01a00000-0000-7000-8000-000000000000/events")
        assert missing.status_code == 404 and error_code(missing) == "prediction_not_found"


def test_a_live_prediction_streams_each_change_and_resumes(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    """A held prediction streams queued then running; a new connection with Last-Event-ID
    resumes without repeats and gets succeeded once the gate opens, then ends."""
    server = make_server(models=["_Gate"])
    with server.client() as client:
        created = create(client, "gate", gate_input(tmp_path, "live"))
        path = f"/v1/predictions/{created['id']}/events"
        with client.stream("GET", path) as response:
            first = list(read_events(response, until=lambda e: e[1] == "running"))
        assert kinds(first) == [(1, "queued"), (2, "running")]
        with client.stream("GET", path, headers={"Last-Event-ID": "2"}) as response:
            (tmp_path / "open").touch()
            rest = list(read_events(response))
        assert kinds(rest) == [(3, "succeeded")]
        assert rest[0][2]["output"]["tag"] == "live"


def test_a_run_streams_its_steps(make_server: Callable[..., Server]) -> None:
    """A pipeline run's stream carries each step's transitions (data: the step's own
    prediction object, naming its step) with ids 1..n, and the run's end last."""
    server = make_server(project=PIPELINES)
    with server.client() as client:
        run = create(client, "diamond", {"x": 3})
        events = all_events(client, run["id"])
    assert [event_id for event_id, _, _ in events] == list(range(1, len(events) + 1))
    assert events[-1][1] == "succeeded" and events[-1][2]["output"] == {"sum": 24, "a": 6}
    steps = [(kind, data["step"]) for _, kind, data in events if kind.startswith("step.")]
    for name in "abcd":
        mine = [kind for kind, step in steps if step == name]
        assert mine == ["step.queued", "step.running", "step.succeeded"], (name, steps)
    ends = {step: n for n, (kind, step) in enumerate(steps) if kind == "step.succeeded"}
    assert ends["a"] < ends["b"] < ends["d"] and ends["c"] < ends["d"]


def test_streams_past_the_bound_are_refused_until_one_ends(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    """With ``max_event_streams: 1`` and one stream open, another answers 503
    ``too_many_streams`` with Retry-After before any stream starts; a refused request
    (a Last-Event-ID that is not an event id: 422) keeps no slot; once the first
    client leaves, streams are served again."""
    server = make_server(models=["_Gate"], FREIGHT_MAX_EVENT_STREAMS="1")
    with server.client() as client:
        created = create(client, "gate", gate_input(tmp_path, "bound"))
        path = f"/v1/predictions/{created['id']}/events"
        bad = client.get(path, headers={"Last-Event-ID": "1.0"})
        assert (bad.status_code, error_code(bad)) == (422, "validation_error")
        with client.stream("GET", path) as held:
            lines = held.iter_lines()  # held here: dropping it would close the stream
            assert kinds(list(read_events(lines, until=lambda e: e[0] == 1))) == [(1, "queued")]
            refused = client.get(path)
            assert (refused.status_code, error_code(refused)) == (503, "too_many_streams")
            assert int(refused.headers["Retry-After"]) >= 1
        (tmp_path / "open").touch()
        wait_done(client, created["id"])

        def served() -> bool:  # once the server has seen the first client leave
            return client.get(path, headers={"Last-Event-ID": "2"}).status_code == 200

        wait_until(served, timeout_s=60)


BAD_WEBHOOKS: list[tuple[dict[str, Any], int, str]] = [
    ({"url": "ftp://hooks.example.com/in"}, 422, "validation_error"),
    ({"url": "https://hooks.example.com/" + "a" * 2048}, 422, "validation_error"),
    ({"url": "https://hooks.example.com/in", "events": ["finished"]}, 422, "validation_error"),
    ({"url": "http://10.1.2.3/in"}, 400, "webhook_refused"),
    ({"url": "http://localhost:9/in"}, 400, "webhook_refused"),
]


def test_a_bad_webhook_creates_nothing(make_server: Callable[..., Server]) -> None:
    """Not http(s), too long, an unknown event (named), a private or loopback receiver
    without allow_private: each gets its precise code, on the queue route and the
    real-time one, and no prediction is created."""
    server = make_server(models=["Echo"])
    with server.client() as client:
        for webhook, status, code in BAD_WEBHOOKS:
            body = {"target": "echo", "input": {"x": 1}, "webhook": webhook}
            queued = client.post("/v1/predictions", json=body)
            assert (queued.status_code, error_code(queued)) == (status, code), queued.text
            params = {"webhook": webhook["url"]}
            if "events" in webhook:
                params["webhook_events"] = ",".join(webhook["events"])
                assert "'finished'" in queued.text
            realtime = client.post("/v1/models/echo/predict", json={"x": 1}, params=params)
            assert (realtime.status_code, error_code(realtime)) == (status, code), realtime.text
        assert client.get("/v1/predictions").json()["data"] == []


class Receiver:
    """A webhook receiver on loopback: records each POST, answers 204."""

    def __init__(self) -> None:
        self.got: list[tuple[dict[str, str], bytes]] = []
        received = self.got

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def secret_of(server: Server) -> str:
    """The server's signing secret, as ``freight webhooks secret`` prints it."""
    result = subprocess.run(
        [*FREIGHT, "webhooks", "secret", str(server.project)],
        cwd=server.cwd,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "webhook-signature" in result.stderr
    return result.stdout.strip()


def test_webhook_deliveries_are_signed_and_listed(
    make_server: Callable[..., Server], receiver: Receiver
) -> None:
    """A prediction with a webhook for both events: the receiver gets both, signed with
    the secret the CLI prints, and the deliveries route lists each as delivered."""
    server = make_server(models=["Echo"], FREIGHT_WEBHOOK_ALLOW_PRIVATE="true")
    events = ["started", "completed"]
    with server.client() as client:
        created = create(client, "echo", {"x": 1}, webhook={"url": receiver.url, "events": events})
        wait_done(client, created["id"])
        path = f"/v1/predictions/{created['id']}/deliveries"

        def delivered() -> list[dict[str, Any]] | None:
            data: list[dict[str, Any]] = client.get(path).json()["data"]
            return data if data and all(d["status"] == "delivered" for d in data) else None

        deliveries = wait_until(delivered, timeout_s=60, interval_s=0.1)
    assert sorted(d["event"] for d in deliveries) == ["completed", "started"]
    for d in deliveries:
        assert d["sink"] == f"webhook {receiver.url}"
        assert (d["attempts"], d["last_code"], d["next_at"]) == (1, 204, None)
        assert [t["status_code"] for t in d["tries"]] == [204]
    signer = Webhook(secret_of(server))
    bodies = [signer.verify(body, headers) for headers, body in receiver.got]
    assert {body["data"]["id"] for body in bodies} == {created["id"]}
    assert {headers["webhook-id"] for headers, _ in receiver.got} == {
        d["event_id"] for d in deliveries
    }


def test_the_clients_follow_the_stream(make_server: Callable[..., Server], tmp_path: Path) -> None:
    """Client.events and handle.wait follow a live prediction to its end over SSE, and so
    does the asyncio client (its aiohttp transport)."""
    server = make_server(models=["_Gate"])
    with freight.Client(server.url) as client:
        handle = client.predict("gate", gate_input(tmp_path, "sync"))
        seen: list[str] = []
        for event in client.events(handle.id):
            seen.append(event.type)
            if event.type == "running":
                (tmp_path / "open").touch()
        assert seen == ["queued", "running", "succeeded"]
        assert handle.wait(timeout=60).output["tag"] == "sync"

    async def follow() -> list[tuple[int, str]]:
        async with freight.AsyncClient(server.url) as aclient:
            ahandle = await aclient.predict("gate", gate_input(tmp_path, "async"))
            got = [(e.id, e.type) async for e in aclient.events(ahandle.id)]
            assert (await ahandle.wait(timeout=60)).status == "succeeded"
            return got

    assert asyncio.run(follow()) == [(1, "queued"), (2, "running"), (3, "succeeded")]
