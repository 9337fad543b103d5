"""Webhooks end to end, from the durable outbox, on both deployment shapes.

A real HTTP receiver on loopback verifies every delivery's Standard Webhooks
signature with the secret ``freight webhooks secret`` gives. It can be told to
refuse (503), to say ``410 Gone``, or be down altogether, so the tests show a
receiver that comes back getting every event, in order, once per event id; a
server SIGKILLed between a status change and its delivery losing nothing; and a
410 stopping the subscription.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from standardwebhooks import Webhook

from tests.fixtures.server import Server, wait_until
from tests.integration.helpers import create, wait_done

FAST_DELIVERY = {
    "FREIGHT_WEBHOOK_ALLOW_PRIVATE": "true",  # the receiver is on loopback
    "FREIGHT_DELIVERY_BACKOFF_S": "0.05",
    "FREIGHT_DELIVERY_BACKOFF_MAX_S": "0.2",
}


@dataclass
class Receiver:
    """Records each request; answers ``answer`` (200 by default)."""

    answer: int = 200
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def accepted(self, secret: str) -> list[dict[str, Any]]:
        """The bodies answered 2xx, each verified against its signature."""
        with self.lock:
            got = list(self.received)
        out = []
        for headers, body in got:
            if headers.get("x-answered") == "200":
                Webhook(secret).verify(body, headers)  # raises on a bad signature
                out.append(json.loads(body) | {"webhook-id": headers["webhook-id"]})
        return out


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            answer = state.answer
            headers = {k.lower(): v for k, v in self.headers.items()} | {"x-answered": str(answer)}
            with state.lock:
                state.received.append((headers, body))
            self.send_response(answer)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def secret_of(env: dict[str, str], project: Path) -> str:
    """The server's signing secret, as `freight webhooks secret` prints it."""
    import subprocess
    import sys

    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; "
            "from freight.server import webhook_secret; print(webhook_secret(Path(sys.argv[1])))",
            str(project),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return out.stdout.strip()


def hooked(client: Any, receiver: Receiver, events: list[str], **body: Any) -> dict[str, Any]:
    return create(client, "echo", {"x": 1}, webhook={"url": receiver.url, "events": events}, **body)


def test_events_arrive_signed_in_order(
    make_server: Callable[..., Server], receiver: Receiver
) -> None:
    """started then completed reach the receiver, signed, with the prediction object."""
    server = make_server(models=["Echo"], **FAST_DELIVERY)
    secret = secret_of(server.env, server.project)
    with server.client() as client:
        created = hooked(client, receiver, ["started", "completed"])
        done = wait_done(client, created["id"])
    got = wait_until(lambda: (r := receiver.accepted(secret)) and len(r) == 2 and r)
    assert [g["type"] for g in got] == ["prediction.started", "prediction.completed"]
    assert got[1]["data"]["id"] == done["id"] and got[1]["data"]["status"] == "succeeded"
    assert got[0]["webhook-id"] != got[1]["webhook-id"]


def test_a_receiver_that_comes_back_gets_every_event_once_in_order(
    make_server: Callable[..., Server], receiver: Receiver
) -> None:
    """While the receiver answers 503 the events are retried; once it answers 200 each
    event id is accepted exactly once, in event order per prediction."""
    server = make_server(models=["Echo"], **FAST_DELIVERY)
    secret = secret_of(server.env, server.project)
    receiver.answer = 503
    with server.client() as client:
        ids = [hooked(client, receiver, ["started", "completed"])["id"] for _ in range(3)]
        for prediction_id in ids:
            wait_done(client, prediction_id)
        wait_until(lambda: len(receiver.received) >= 6)  # started events refused, retried
        receiver.answer = 200
        got = wait_until(lambda: (r := receiver.accepted(secret)) and len(r) == 6 and r)

        def recorded() -> list[dict[str, Any]] | None:
            rows: list[dict[str, Any]] = client.get(f"/v1/predictions/{ids[0]}/deliveries").json()[
                "data"
            ]
            return rows if all(r["status"] == "delivered" for r in rows) else None

        rows = wait_until(recorded)  # the receiver may answer before the row is recorded
    per_prediction = {i: [g["type"] for g in got if g["data"]["id"] == i] for i in ids}
    assert all(v == ["prediction.started", "prediction.completed"] for v in per_prediction.values())
    assert len({g["webhook-id"] for g in got}) == 6
    assert [r["event"] for r in rows] == ["started", "completed"]
    assert rows[0]["attempts"] >= 2 and rows[1]["attempts"] == 1


def test_a_kill_between_the_change_and_its_delivery_loses_nothing(
    make_server: Callable[..., Server], receiver: Receiver
) -> None:
    """The server is SIGKILLed while the receiver refuses; after a restart the receiver,
    back, gets the completed event."""
    short_lease = {"FREIGHT_DELIVERY_TIMEOUT_S": "3", "FREIGHT_DELIVERY_LEASE_S": "6"}
    server = make_server(models=["Echo"], **FAST_DELIVERY, **short_lease)
    secret = secret_of(server.env, server.project)
    receiver.answer = 503
    with server.client() as client:
        created = hooked(client, receiver, ["completed"])
        wait_done(client, created["id"])
    wait_until(lambda: len(receiver.received) >= 1)
    server.signal(signal.SIGKILL)
    server.wait_exit()
    receiver.answer = 200
    make_server(models=["Echo"], **FAST_DELIVERY, **short_lease)
    # killed mid-send, the row stays leased to the dead sender for the delivery lease
    # (FREIGHT_DELIVERY_LEASE_S, 6 s here: twice the attempt's timeout) before any
    # deliverer sends it again
    got = wait_until(lambda: receiver.accepted(secret), timeout_s=60)
    assert [(g["type"], g["data"]["id"]) for g in got] == [("prediction.completed", created["id"])]


def _deliverers(parent: int) -> list[int]:
    """The running delivery processes whose parent is ``parent`` (read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
        if int(ppid) == parent and state != "Z" and b"freight.deliverer" in command:
            found.append(int(entry.name))
    return found


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :].split()[0] != "Z"


def test_deliveries_come_from_a_process_that_ends_with_its_server(
    make_server: Callable[..., Server], receiver: Receiver
) -> None:
    """The server delivers from a process of its own; the server SIGKILLed alone (not
    its process group), that process sees its stdin end and exits by itself."""
    server = make_server(models=["Echo"], **FAST_DELIVERY)
    assert server.proc is not None
    with server.client() as client:
        created = hooked(client, receiver, ["completed"])
        wait_done(client, created["id"])
    wait_until(lambda: len(receiver.received) >= 1)
    (child,) = _deliverers(server.proc.pid)
    os.kill(server.proc.pid, signal.SIGKILL)
    server.wait_exit()
    wait_until(lambda: not _running(child))


def test_410_gone_stops_the_subscription(
    make_server: Callable[..., Server], receiver: Receiver
) -> None:
    """A receiver answering 410 to the started event never gets the completed one."""
    server = make_server(models=["Echo"], **FAST_DELIVERY)
    receiver.answer = 410
    with server.client() as client:
        created = hooked(client, receiver, ["started", "completed"])
        wait_done(client, created["id"])
        wait_until(lambda: len(receiver.received) >= 1)

        def stopped() -> list[dict[str, Any]] | None:
            rows: list[dict[str, Any]] = client.get(
                f"/v1/predictions/{created['id']}/deliveries"
            ).json()["data"]
            return rows if rows and all(r["status"] == "stopped" for r in rows) else None

        rows = wait_until(stopped)
    assert [r["event"] for r in rows] == ["started", "completed"]
    assert rows[0]["last_code"] == 410
    assert len(receiver.received) == 1


def test_a_batch_job_notifies_started_and_completed(
    make_server: Callable[..., Server], receiver: Receiver
) -> None:
    """A batch job's webhook gets batch_job.started and batch_job.completed, signed,
    carrying the job object (counts included), through the same outbox."""
    import httpx

    server = make_server(models=["Echo"], **FAST_DELIVERY)
    secret = secret_of(server.env, server.project)
    with server.client() as client:
        job = client.post(
            "/v1/batch-jobs",
            json={
                "target": "echo",
                "input": {"upload": ["d.jsonl"]},
                "webhook": {"url": receiver.url, "events": ["started", "completed"]},
            },
        ).json()
        put = httpx.put(job["upload_urls"]["d.jsonl"], content=b'{"a": 1}\n{"a": 2}\n')
        assert put.status_code == 200, put.text
    got = wait_until(lambda: (r := receiver.accepted(secret)) and len(r) == 2 and r)
    assert [g["type"] for g in got] == ["batch_job.started", "batch_job.completed"]
    data = got[1]["data"]
    assert (data["id"], data["target"], data["status"]) == (job["id"], "echo", "succeeded")
    assert data["counts"] == {"total": 2, "done": 2, "failed": 0}


def test_a_stopped_event_is_redelivered_with_its_event_id(
    make_server: Callable[..., Server], receiver: Receiver
) -> None:
    """POST /v1/deliveries/{id}/redeliver sends a stopped (or dead) event again, with
    the same webhook-id; a delivered one is 409, an unknown one 404."""
    server = make_server(models=["Echo"], **FAST_DELIVERY)
    secret = secret_of(server.env, server.project)
    receiver.answer = 410
    with server.client() as client:
        created = hooked(client, receiver, ["completed"])
        wait_done(client, created["id"])

        def rows() -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = client.get(
                f"/v1/predictions/{created['id']}/deliveries"
            ).json()["data"]
            return found

        stopped = wait_until(lambda: (r := rows()) and r[0]["status"] == "stopped" and r)[0]
        first_id = receiver.received[0][0]["webhook-id"]
        receiver.answer = 200
        again = client.post(f"/v1/deliveries/{quote(stopped['id'], safe='')}/redeliver")
        assert again.status_code == 200, again.text
        assert again.json()["id"] == stopped["id"] and again.json()["status"] == "pending"
        got = wait_until(lambda: receiver.accepted(secret))
        assert got[0]["webhook-id"] == first_id and got[0]["data"]["id"] == created["id"]
        wait_until(lambda: rows()[0]["status"] == "delivered")
        done = client.post(f"/v1/deliveries/{quote(stopped['id'], safe='')}/redeliver")
        assert done.status_code == 409 and done.json()["error"]["code"] == "invalid_state"
        unknown = client.post("/v1/deliveries/nosuch%23x/redeliver")
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "delivery_not_found"


def test_a_dead_webhook_shows_apart_from_the_status_and_the_sdk_redelivers_it(
    make_server: Callable[..., Server], receiver: Receiver
) -> None:
    """A receiver refusing until both events die: the prediction is ``succeeded`` while
    its ``notifications`` are ``dead``; ``client.redeliver`` sends each again with its
    original webhook-id to the receiver, back, and the state becomes ``delivered``;
    another tenant's key gets 404 ``delivery_not_found`` and changes nothing."""
    from freight.client import Client, FreightClientError

    server = make_server(models=["Echo"], **FAST_DELIVERY, FREIGHT_DELIVERY_MAX_AGE_S="0.3")
    keys = tenant_keys(server, "tenant-a", "tenant-b")
    receiver.answer = 503
    with Client(server.url, api_key=keys["tenant-a"]) as a:
        secret = a_secret(server, keys["tenant-a"])
        created = a.predict(
            "echo", {"x": 1}, webhook=receiver.url, webhook_events=["started", "completed"]
        )
        assert created.wait(timeout=60).status == "succeeded"

        def dead() -> list[Any] | None:
            found = a.deliveries(created.id)
            return found if [d.status for d in found] == ["dead", "dead"] else None

        started, completed = wait_until(dead)
        shown = a.get(created.id)
        assert shown.status == "succeeded" and shown.notifications is not None
        assert (shown.notifications.state, shown.notifications.dead) == ("dead", 2)
        first_ids = {h["webhook-id"] for h, _ in list(receiver.received)}
        assert first_ids == {started.event_id, completed.event_id}

        with (
            Client(server.url, api_key=keys["tenant-b"]) as b,
            pytest.raises(FreightClientError) as foreign,
        ):
            b.redeliver(started.id)
        assert (foreign.value.status, foreign.value.code) == (404, "delivery_not_found")
        assert a.deliveries(created.id)[0].status == "dead"

        receiver.answer = 200
        for delivery in (started, completed):
            again = a.redeliver(delivery.id)
            assert (again.id, again.event_id) == (delivery.id, delivery.event_id)
            assert again.status in ("pending", "sending", "delivered")

        def delivered() -> Any:
            summary = a.get(created.id).notifications
            return summary if summary is not None and summary.state == "delivered" else None

        summary = wait_until(delivered)
        assert (summary.deliveries, summary.delivered, summary.dead) == (2, 2, 0)
        with pytest.raises(FreightClientError) as done:
            a.redeliver(started.id)
        assert (done.value.status, done.value.code) == (409, "invalid_state")
    got = receiver.accepted(secret)
    assert [(g["type"], g["webhook-id"]) for g in got] == [
        ("prediction.started", started.event_id),
        ("prediction.completed", completed.event_id),
    ]


def test_a_prediction_without_subscriptions_has_no_notifications(
    make_server: Callable[..., Server],
) -> None:
    """``notifications`` is null for a prediction nobody subscribed to."""
    server = make_server(models=["Echo"])
    with server.client() as client:
        done = wait_done(client, create(client, "echo", {"x": 1})["id"])
    assert done["status"] == "succeeded" and done["notifications"] is None


def tenant_keys(server: Server, *tenants: str) -> dict[str, str]:
    """An admin key made by the loopback operator, then a predict+read key per tenant."""
    import httpx

    def make(client: httpx.Client, tenant: str, *scopes: str) -> str:
        made = client.post("/v1/keys", json={"tenant": tenant, "scopes": list(scopes)})
        assert made.status_code == 201, made.text
        token: str = made.json()["token"]
        return token

    with server.client() as anonymous:
        admin = make(anonymous, "ops", "admin")
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {admin}"}) as ops:
        return {tenant: make(ops, tenant, "predict", "read") for tenant in tenants}


def a_secret(server: Server, token: str) -> str:
    """The key's tenant's webhook signing secret."""
    import httpx

    answer = httpx.get(
        f"{server.url}/v1/webhooks/secret", headers={"Authorization": f"Bearer {token}"}
    )
    assert answer.status_code == 200, answer.text
    secret: str = answer.json()["secret"]
    return secret
