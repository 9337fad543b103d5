"""Each sink against the real thing: a webhook receiver on loopback that verifies every
Standard Webhooks signature, Redis, NATS JetStream, RabbitMQ, and an SMTP server.

The brokers run on this machine (127.0.0.1: Redis 6379, NATS 4222, RabbitMQ 5672;
``FREIGHT_TEST_REDIS_URL`` / ``_NATS_URL`` / ``_AMQP_URL`` move them). Each test
uses its own stream, subject or exchange and removes it afterwards. A broker that
cannot be reached skips its tests locally and fails them under ``CI=true`` (the
pattern of tests/fixtures/postgres.py). The HTTP receiver and the SMTP server are
started by the tests on free loopback ports. Kafka has no broker here: see
tests/unit/test_notify_kafka.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import ssl
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import aiohttp
import nats
import pytest
import redis.asyncio as aioredis
import trustme
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from freight.errors import SinkError
from freight.notify.build import build_sinks
from freight.notify.config import parse_notifications
from freight.notify.envelope import from_cloudevent
from freight.notify.event import Event, Outcome
from freight.notify.signing import WebhookSecrets
from freight.notify.sinks.amqp import AmqpSink
from freight.notify.sinks.nats import NatsSink
from freight.notify.sinks.smtp import SmtpSink
from freight.notify.sinks.webhook import AddressRefusedError, WebhookSink, webhook_session

REDIS_URL = os.environ.get("FREIGHT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
NATS_URL = os.environ.get("FREIGHT_TEST_NATS_URL", "nats://127.0.0.1:4222")
AMQP_URL = os.environ.get("FREIGHT_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
SOURCE = "freight://test"


def _event(status: str = "succeeded", **data: Any) -> Event:
    pid = f"pred-{uuid.uuid4().hex[:8]}"
    body = {
        "id": pid,
        "target": "tabular",
        "kind": "model",
        "status": status,
        "attempts": 1,
        "created_at": "2024-06-01T12:00:00+00:00",
        "started_at": "2024-06-01T12:00:01+00:00",
        "finished_at": "2024-06-01T12:00:03.500000+00:00",
        "metrics": {"queue_ms": 1000.0, "run_ms": 2500.0, "total_ms": 3500.0},
        "error": None,
        **data,
    }
    return Event(
        id=f"evt-{uuid.uuid4().hex}",
        type="prediction.started" if status == "running" else "prediction.completed",
        timestamp=1_717_243_203.5,
        prediction_id=pid,
        target="tabular",
        status=status,
        data=body,
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _need(service: str, url: str) -> None:
    """Skip (locally) or fail (under CI=true) when the broker at ``url`` is unreachable."""
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), 3).close()
    except OSError as exc:
        message = f"{service} at {parts.hostname}:{parts.port} is unavailable: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def redis_url() -> str:
    _need("Redis", REDIS_URL)
    return REDIS_URL


@pytest.fixture
def nats_url() -> str:
    _need("NATS", NATS_URL)
    return NATS_URL


@pytest.fixture
def amqp_url() -> str:
    _need("RabbitMQ", AMQP_URL)
    return AMQP_URL


# --- webhooks ---------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    verified_by: list[str]  # the receiver's secrets this request's signature matched


@dataclass
class Receiver:
    """An HTTP receiver that verifies each signature against the secrets it knows."""

    port: int
    secrets: list[str] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        verified = []
        for secret in self.secrets:
            try:
                Webhook(secret).verify(body, headers)
                verified.append(secret)
            except WebhookVerificationError:
                pass
        self.requests.append(Received(request.path, headers, body, verified))
        if request.path == "/slow":
            await self.release.wait()
        answers = {"/ok": 204, "/gone": 410, "/fail": 500, "/slow": 200}
        if request.path == "/redirect":
            return web.Response(status=302, headers={"Location": "/ok"})
        return web.Response(status=answers.get(request.path, 404))


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    state = Receiver(port=sock.getsockname()[1])
    app = web.Application()
    app.router.add_post("/{tail:.*}", state.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    try:
        yield state
    finally:
        state.release.set()
        await runner.cleanup()
        sock.close()


@pytest.fixture
async def webhook_secrets() -> WebhookSecrets:
    return WebhookSecrets.generate()


async def _post(url: str, secrets: WebhookSecrets, **kwargs: Any) -> Outcome:
    """One event through a fresh loopback-allowed webhook sink."""
    sink = WebhookSink("hook", url, secrets=secrets, allow_private=True, **kwargs)
    await sink.open()
    try:
        return await sink.send(_event())
    finally:
        await sink.close()


async def test_a_webhook_delivers_a_signed_event(receiver: Receiver) -> None:
    """2xx is delivered; the receiver verifies the signature and reads type, timestamp, data."""
    secrets = WebhookSecrets.generate()
    receiver.secrets = [secrets.current]
    event = _event()
    sink = WebhookSink("hook", receiver.url("/ok"), secrets=secrets, allow_private=True)
    await sink.open()
    outcome = await sink.send(event)
    await sink.close()
    assert outcome.delivered and outcome.status_code == 204 and not outcome.stop
    (got,) = receiver.requests
    assert got.verified_by == [secrets.current]
    assert got.headers["webhook-id"] == event.id
    assert got.headers["content-type"] == "application/json"
    payload = Webhook(secrets.current).verify(got.body, got.headers)
    assert payload == {
        "type": "prediction.completed",
        "timestamp": "2024-06-01T12:00:03.500000Z",
        "data": event.data,
    }


async def test_during_a_rotation_both_secrets_verify(receiver: Receiver) -> None:
    """Signed with the new and the previous secret, a receiver holding either verifies."""
    old = WebhookSecrets.generate()
    rotated = old.rotate()
    outsider = WebhookSecrets.generate().current
    receiver.secrets = [old.current, rotated.current, outsider]
    outcome = await _post(receiver.url("/ok"), rotated)
    assert outcome.delivered
    (got,) = receiver.requests
    assert got.verified_by == [old.current, rotated.current]
    assert len(got.headers["webhook-signature"].split(" ")) == 2


async def test_410_gone_stops(receiver: Receiver, webhook_secrets: WebhookSecrets) -> None:
    """A receiver answering 410 Gone asks for no more: stop, no retry."""
    outcome = await _post(receiver.url("/gone"), webhook_secrets)
    assert (outcome.delivered, outcome.stop, outcome.retry, outcome.status_code) == (
        False,
        True,
        False,
        410,
    )


async def test_500_is_retried_with_its_status(
    receiver: Receiver, webhook_secrets: WebhookSecrets
) -> None:
    """A 5xx is a failure to retry, with the status code recorded."""
    outcome = await _post(receiver.url("/fail"), webhook_secrets)
    assert not outcome.delivered and outcome.retry and outcome.status_code == 500
    assert "HTTP 500" in (outcome.error or "")


async def test_redirects_are_not_followed(
    receiver: Receiver, webhook_secrets: WebhookSecrets
) -> None:
    """A 302 is recorded as a failure and its Location is never requested."""
    outcome = await _post(receiver.url("/redirect"), webhook_secrets)
    assert not outcome.delivered and outcome.status_code == 302
    assert "redirects are not followed" in (outcome.error or "")
    assert [r.path for r in receiver.requests] == ["/redirect"]


async def test_a_receiver_that_is_down_is_an_outcome(webhook_secrets: WebhookSecrets) -> None:
    """Nothing listening: a failed Outcome saying so, not an exception."""
    outcome = await _post(f"http://127.0.0.1:{_free_port()}/ok", webhook_secrets)
    assert not outcome.delivered and outcome.retry and outcome.status_code is None
    assert "cannot connect to 127.0.0.1" in (outcome.error or "")


async def test_a_receiver_that_never_answers_times_out(
    receiver: Receiver, webhook_secrets: WebhookSecrets
) -> None:
    """A hanging receiver is bounded by the per-attempt timeout: a failed Outcome."""
    outcome = await _post(receiver.url("/slow"), webhook_secrets, timeout_s=0.5)
    assert not outcome.delivered and "did not answer within 0.5 s" in (outcome.error or "")


async def test_loopback_is_refused_at_delivery_without_allow_private(
    receiver: Receiver, webhook_secrets: WebhookSecrets
) -> None:
    """A name resolving to loopback is refused when delivering; nothing reaches it."""

    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    sink = WebhookSink(
        "hook",
        receiver.url("/ok", host="receiver.freight.test"),
        secrets=webhook_secrets,
        resolver=resolver,
    )
    await sink.open()  # the text is fine: a hostname
    outcome = await sink.send(_event())
    await sink.close()
    assert not outcome.delivered and outcome.retry
    assert "resolves to 127.0.0.1, a loopback address" in (outcome.error or "")
    assert receiver.requests == []


async def test_the_connection_goes_to_the_address_that_was_checked(
    receiver: Receiver, webhook_secrets: WebhookSecrets
) -> None:
    """A name only the injected resolver knows is delivered to: the connection used the
    checked answer (one lookup, no second resolution), and Host names the URL's host."""
    asked: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        asked.append(host)
        return ["127.0.0.1"]

    url = receiver.url("/ok", host="receiver.freight.test")
    sink = WebhookSink("hook", url, secrets=webhook_secrets, allow_private=True, resolver=resolver)
    await sink.open()
    outcome = await sink.send(_event())
    await sink.close()
    assert outcome.delivered, outcome.error
    assert asked == ["receiver.freight.test"]
    assert receiver.requests[0].headers["host"] == f"receiver.freight.test:{receiver.port}"


async def test_the_socket_itself_is_checked_for_an_address_never_resolved(
    receiver: Receiver,
) -> None:
    """An IP literal goes to no resolver (aiohttp connects to it as is): the guarded
    session's socket factory refuses a loopback one before connecting; nothing arrives."""
    session = webhook_session(allow_private=False)
    try:
        with pytest.raises(aiohttp.ClientConnectorError) as caught:
            await session.post(receiver.url("/ok"), data=b"{}", allow_redirects=False)
    finally:
        await session.close()
    assert isinstance(caught.value.os_error, AddressRefusedError)
    assert "127.0.0.1 is a loopback address" in str(caught.value.os_error)
    assert receiver.requests == []


async def test_a_name_resolving_to_a_private_address_is_refused_through_the_session(
    receiver: Receiver, webhook_secrets: WebhookSecrets
) -> None:
    """Through the sink's aiohttp session, a name that resolves to a private address is
    refused by the guard; the mix of a public and a private answer is refused whole."""
    answers = {"private.freight.test": ["10.1.2.3"], "mixed.freight.test": ["8.8.8.8", "127.0.0.1"]}

    async def resolver(host: str, port: int) -> list[str]:
        return answers[host]

    for host, address in (
        ("private.freight.test", "10.1.2.3"),
        ("mixed.freight.test", "127.0.0.1"),
    ):
        url = receiver.url("/ok", host=host)
        sink = WebhookSink("hook", url, secrets=webhook_secrets, resolver=resolver)
        await sink.open()
        outcome = await sink.send(_event())
        await sink.close()
        assert not outcome.delivered and outcome.retry
        assert f"resolves to {address}" in (outcome.error or "")
    assert receiver.requests == []


@pytest.fixture
async def tls_receiver() -> AsyncIterator[tuple[Receiver, trustme.CA]]:
    """The receiver behind HTTPS, its certificate issued for receiver.freight.test only."""
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("receiver.freight.test").configure_cert(server_tls)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    state = Receiver(port=sock.getsockname()[1])
    app = web.Application()
    app.router.add_post("/{tail:.*}", state.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.SockSite(runner, sock, ssl_context=server_tls).start()
    try:
        yield state, ca
    finally:
        await runner.cleanup()
        sock.close()


async def _to_loopback(host: str, port: int) -> list[str]:
    return ["127.0.0.1"]


@pytest.mark.parametrize(
    ("host", "delivered"), [("receiver.freight.test", True), ("other.freight.test", False)]
)
async def test_tls_is_verified_against_the_urls_hostname_not_the_address(
    tls_receiver: tuple[Receiver, trustme.CA],
    webhook_secrets: WebhookSecrets,
    host: str,
    delivered: bool,
) -> None:
    """Connecting to the checked address keeps TLS intact: the certificate must match the
    URL's hostname (sent as SNI), so the right name delivers and another name fails."""
    receiver, ca = tls_receiver
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)
    url = f"https://{host}:{receiver.port}/ok"
    sink = WebhookSink(
        "hook",
        url,
        secrets=webhook_secrets,
        allow_private=True,
        resolver=_to_loopback,
        tls=client_tls,
    )
    await sink.open()
    outcome = await sink.send(_event())
    await sink.close()
    assert outcome.delivered is delivered, outcome.error
    if not delivered:
        assert "certificate" in (outcome.error or "").lower() and receiver.requests == []


# --- Redis ------------------------------------------------------------------------


async def test_redis_stream_gets_a_cloudevent(redis_url: str) -> None:
    """Built from the config section, the sink XADDs an entry a consumer parses as a CloudEvent."""
    stream = f"freight-test-{uuid.uuid4().hex}"
    config = parse_notifications(
        {"sinks": [{"name": "stream", "type": "redis", "url_env": "R", "stream": stream}]}
    )
    sinks = build_sinks(config, env={"R": redis_url}, source=SOURCE)
    event = _event()
    reader = aioredis.Redis.from_url(redis_url)
    try:
        await sinks.open_all()
        outcome = await sinks["stream"].send(event)
        assert outcome.delivered
        ((_entry_id, fields),) = await reader.xrange(stream)
        parsed = from_cloudevent(fields[b"event"])
        assert parsed.get_id() == event.id and fields[b"id"].decode() == event.id
        assert parsed.get_type() == "dev.freight.prediction.completed"
        assert parsed.get_source() == SOURCE and parsed.get_subject() == event.prediction_id
        assert parsed.get_data() == event.data
    finally:
        await sinks.close_all()
        await reader.delete(stream)
        await reader.aclose()


async def test_redis_stream_gets_sagemakers_notification(redis_url: str) -> None:
    """With format: sagemaker the entry is SageMaker's async notification JSON, for a
    completed event only (a started one writes nothing)."""
    stream = f"freight-test-{uuid.uuid4().hex}"
    config = parse_notifications(
        {
            "sinks": [
                {
                    "name": "sns",
                    "type": "redis",
                    "url_env": "R",
                    "stream": stream,
                    "format": "sagemaker",
                }
            ]
        }
    )
    sinks = build_sinks(config, env={"R": redis_url}, source=SOURCE)
    reader = aioredis.Redis.from_url(redis_url)
    try:
        await sinks.open_all()
        assert (await sinks["sns"].send(_event("running"))).delivered
        done = _event(metadata={"sagemaker": {"inference_id": "inf-9"}})
        assert (await sinks["sns"].send(done)).delivered
        ((_entry_id, fields),) = await reader.xrange(stream)
        document = json.loads(fields[b"event"])
        assert document["inferenceId"] == "inf-9"
        assert document["invocationStatus"] == "Completed"
        assert document["eventTime"] == "2024-06-01T12:00:03.500Z"
    finally:
        await sinks.close_all()
        await reader.delete(stream)
        await reader.aclose()


async def test_redis_unreachable_fails_start_up_without_the_password() -> None:
    """A server nobody runs is a SinkError naming the sink; the URL's password is hidden."""
    from freight.notify.sinks.redis import RedisSink

    url = f"redis://:R3dis-Secret-PW@127.0.0.1:{_free_port()}/0"
    sink = RedisSink("stream", url, "s", source=SOURCE, timeout_s=3)
    with pytest.raises(SinkError) as info:
        await sink.open()
    assert info.value.message.startswith("sink 'stream' (redis): cannot reach the server")
    assert "R3dis-Secret-PW" not in info.value.message


# --- NATS JetStream ---------------------------------------------------------------


async def _quiet(exc: Exception) -> None:
    pass


@pytest.fixture
async def jetstream(nats_url: str) -> AsyncIterator[tuple[Any, list[str]]]:
    """A JetStream context for reading back, and a list of streams to delete after."""
    nc = await nats.connect(nats_url, error_cb=_quiet)
    js = nc.jetstream()
    created: list[str] = []
    try:
        yield js, created
    finally:
        for name in created:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(name)
        await nc.close()


async def test_nats_jetstream_gets_a_cloudevent_once(
    nats_url: str, jetstream: tuple[Any, list[str]]
) -> None:
    """The sink creates its stream, publishes, and a retried event is stored once."""
    js, created = jetstream
    tag = uuid.uuid4().hex
    stream, subject = f"FREIGHT_TEST_{tag}", f"freight.test.{tag}"
    created.append(stream)
    sink = NatsSink("js", [nats_url], subject, source=SOURCE, stream=stream, create_stream=True)
    event = _event(status="running")
    await sink.open()
    try:
        assert (await sink.send(event)).delivered
        assert (await sink.send(event)).delivered  # a retry: de-duplicated by Nats-Msg-Id
    finally:
        await sink.close()
    message = await js.get_last_msg(stream, subject)
    assert message.headers["Nats-Msg-Id"] == event.id
    parsed = from_cloudevent(message.data)
    assert parsed.get_id() == event.id and parsed.get_type() == "dev.freight.prediction.started"
    assert parsed.get_data() == event.data
    assert (await js.stream_info(stream)).state.messages == 1


async def test_nats_without_a_stream_fails_start_up(nats_url: str) -> None:
    """No stream captures the subject and none may be created: SinkError saying so."""
    subject = f"freight.nostream.{uuid.uuid4().hex}"
    sink = NatsSink("js", [nats_url], subject, source=SOURCE)
    with pytest.raises(SinkError, match=r"sink 'js' \(nats\): no JetStream stream captures"):
        await sink.open()


async def test_nats_unreachable_fails_start_up_without_the_password() -> None:
    """A server nobody runs fails start-up within the timeout, naming the sink, no secret."""
    url = f"nats://freight:N4ts-Secret-PW@127.0.0.1:{_free_port()}"
    sink = NatsSink("js", [url], "freight.x", source=SOURCE, timeout_s=1)
    with pytest.raises(SinkError) as info:
        await sink.open()
    assert info.value.message.startswith("sink 'js' (nats): cannot reach the server")
    assert "N4ts-Secret-PW" not in info.value.message


# --- RabbitMQ ---------------------------------------------------------------------


@pytest.fixture
async def rabbit(amqp_url: str) -> AsyncIterator[tuple[Any, str]]:
    """A channel for reading back, and an exchange name deleted afterwards."""
    exchange = f"freight-test-{uuid.uuid4().hex}"
    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel()
    try:
        yield channel, exchange
    finally:
        await channel.exchange_delete(exchange)
        await connection.close()


async def test_amqp_exchange_routes_a_persistent_cloudevent(
    amqp_url: str, rabbit: tuple[Any, str]
) -> None:
    """Routed by event type, persistent, with the event id as message id; parses back."""
    channel, exchange = rabbit
    sink = AmqpSink("rabbit", amqp_url, exchange, source=SOURCE)
    await sink.open()
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(exchange, routing_key="prediction.*")
    event = _event(status="failed", error={"code": "model_error", "message": "boom"})
    try:
        assert (await sink.send(event)).delivered
        async with queue.iterator() as messages:
            message = await asyncio.wait_for(anext(messages), 10)
            await message.ack()
    finally:
        await sink.close()
    assert message.routing_key == "prediction.completed"
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.message_id == event.id
    assert message.content_type == "application/cloudevents+json"
    parsed = from_cloudevent(message.body)
    assert parsed.get_id() == event.id and parsed.get_data() == event.data


async def test_amqp_mandatory_unroutable_is_a_failure(
    amqp_url: str, rabbit: tuple[Any, str]
) -> None:
    """With ``mandatory`` a message no queue takes is a failed Outcome, not a silent drop."""
    _channel, exchange = rabbit
    sink = AmqpSink("rabbit", amqp_url, exchange, source=SOURCE, mandatory=True)
    await sink.open()
    try:
        outcome = await sink.send(_event())
    finally:
        await sink.close()
    assert not outcome.delivered and outcome.retry


async def test_amqp_missing_exchange_fails_start_up(amqp_url: str) -> None:
    """Told not to declare, a sink whose exchange does not exist fails start-up."""
    sink = AmqpSink("rabbit", amqp_url, f"absent-{uuid.uuid4().hex}", source=SOURCE, declare=False)
    with pytest.raises(SinkError, match=r"sink 'rabbit' \(amqp\): cannot use exchange"):
        await sink.open()


async def test_amqp_unreachable_fails_start_up_without_the_password() -> None:
    """A broker nobody runs is a SinkError naming the sink; the URL's password is hidden."""
    url = f"amqp://freight:Amqp-Secret-PW@127.0.0.1:{_free_port()}/"
    sink = AmqpSink("rabbit", url, "freight", source=SOURCE, timeout_s=3)
    with pytest.raises(SinkError) as info:
        await sink.open()
    assert info.value.message.startswith("sink 'rabbit' (amqp): cannot reach the broker")
    assert "Amqp-Secret-PW" not in info.value.message


# --- SMTP -------------------------------------------------------------------------


@dataclass
class Mailbox:
    port: int
    messages: list[Envelope] = field(default_factory=list)

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        self.messages.append(envelope)
        return "250 OK"


def _authenticate(
    server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, data: Any
) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
        b"mailer",
        b"Smtp-Secret-PW",
    )
    return AuthResult(success=ok, handled=False)  # False: the server answers 535 itself


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox(port=_free_port())
    controller = Controller(
        box,
        hostname="127.0.0.1",
        port=box.port,
        authenticator=_authenticate,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


def _smtp(box: Mailbox, password: str = "Smtp-Secret-PW") -> SmtpSink:
    return SmtpSink(
        "mail",
        "127.0.0.1",
        box.port,
        "freight@example.com",
        ["ops@example.com", "oncall@example.com"],
        public_url="https://freight.example.com/",
        security="none",
        username="mailer",
        password=password,
    )


async def test_smtp_mails_a_short_human_message(mailbox: Mailbox) -> None:
    """A failed prediction arrives as a readable mail: subject, status, timings, error, link."""
    sink = _smtp(mailbox)
    event = _event(status="failed", error={"code": "model_error", "message": "boom at row 3"})
    await sink.open()
    outcome = await sink.send(event)
    await sink.close()
    assert outcome.delivered
    (envelope,) = mailbox.messages
    assert envelope.rcpt_tos == ["ops@example.com", "oncall@example.com"]
    mail = message_from_bytes(envelope.original_content or b"")
    assert mail["Subject"] == f"freight: prediction {event.prediction_id} failed (tabular)"
    assert mail["X-Freight-Event-Id"] == event.id
    text = mail.get_payload(decode=True).decode()
    assert "Status:     failed" in text and "Target:     tabular (model)" in text
    assert "Ran for:    2,500.0 ms" in text and "Finished:   2024-06-01 12:00:03 UTC" in text
    assert "Error:      model_error: boom at row 3" in text
    assert f"https://freight.example.com/v1/predictions/{event.prediction_id}" in text
    assert "{" not in text  # not a JSON dump


async def test_smtp_wrong_password_fails_start_up_without_showing_it(mailbox: Mailbox) -> None:
    """A refused login is a SinkError naming the sink; the password is not in it."""
    sink = _smtp(mailbox, password="Wrong-Secret-PW")
    with pytest.raises(SinkError) as info:
        await sink.open()
    assert info.value.message.startswith("sink 'mail' (smtp): cannot use the SMTP server")
    assert "Wrong-Secret-PW" not in info.value.message
    assert mailbox.messages == []


async def test_smtp_server_down_is_an_outcome() -> None:
    """Sending through a server nobody runs is a failed Outcome, not an exception."""
    sink = SmtpSink(
        "mail",
        "127.0.0.1",
        _free_port(),
        "f@example.com",
        ["o@example.com"],
        security="none",
        timeout_s=3,
    )
    outcome = await sink.send(_event())
    assert not outcome.delivered and outcome.retry and outcome.error
