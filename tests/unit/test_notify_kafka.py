"""The Kafka sink against aiokafka's contract.

No Kafka broker can run here, so the sink is driven through its producer factory
with a fake that has ``AIOKafkaProducer``'s ``start`` / ``send_and_wait`` / ``stop``
signatures (checked against the real class), and the real producer is made with
the sink's options and pointed at a closed loopback port to show start-up failing.
"""

from __future__ import annotations

import inspect
import socket
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from freight.errors import SinkError
from freight.notify.envelope import from_cloudevent
from freight.notify.event import Event
from freight.notify.sinks.kafka import KafkaSink, Producer

EVENT = Event(
    id="evt-k1",
    type="prediction.completed",
    timestamp=1_700_000_000.5,
    prediction_id="pred-k1",
    target="tabular",
    status="succeeded",
    data={"id": "pred-k1", "status": "succeeded"},
)


class FakeProducer:
    """Records what the sink asks of it; fails where told."""

    def __init__(self, fail_start: Exception | None = None, fail_send: Exception | None = None):
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.fail_start, self.fail_send = fail_start, fail_send

    async def start(self) -> None:
        self.calls.append(("start", {}))
        if self.fail_start:
            raise self.fail_start

    async def stop(self) -> None:
        self.calls.append(("stop", {}))

    async def send_and_wait(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: Any = None,
    ) -> Any:
        self.calls.append(
            (
                "send",
                {
                    "topic": topic,
                    "value": value,
                    "key": key,
                    "timestamp_ms": timestamp_ms,
                    "headers": headers,
                    "partition": partition,
                },
            )
        )
        if self.fail_send:
            raise self.fail_send
        return object()


def _sink(fake: FakeProducer, made: list[dict[str, Any]], **kwargs: Any) -> KafkaSink:
    def factory(**options: Any) -> Producer:
        made.append(options)
        return fake

    return KafkaSink(
        "bus",
        kwargs.pop("bootstrap", "k1.internal:9092, k2.internal:9092"),
        "freight",
        source="freight://test",
        producer_factory=factory,
        **kwargs,
    )


def test_the_fake_has_aiokafkas_signatures() -> None:
    """The fake's methods take exactly what AIOKafkaProducer's take (the contract)."""
    for method in ("start", "stop", "send_and_wait"):
        real = list(inspect.signature(getattr(AIOKafkaProducer, method)).parameters)
        fake = list(inspect.signature(getattr(FakeProducer, method)).parameters)
        assert fake == real, method


async def test_the_real_producer_accepts_the_sinks_options() -> None:
    """AIOKafkaProducer takes every keyword the sink makes it with (no unknown names)."""
    sink = KafkaSink(
        "bus",
        "127.0.0.1:1",
        "t",
        source="freight://t",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        username="u",
        password="Kafka-Secret-PW",
    )
    producer = AIOKafkaProducer(**sink.producer_options())
    await producer.stop()


async def test_a_send_produces_the_cloudevent_keyed_by_prediction() -> None:
    """The value is the structured CloudEvent, the key the prediction id, with headers."""
    fake, made = FakeProducer(), []
    sink = _sink(fake, made)
    await sink.open()
    outcome = await sink.send(EVENT)
    await sink.close()
    assert outcome.delivered
    assert made[0]["bootstrap_servers"] == ["k1.internal:9092", "k2.internal:9092"]
    assert made[0]["acks"] == "all" and made[0]["enable_idempotence"] is True
    assert [name for name, _ in fake.calls] == ["start", "send", "stop"]
    sent = fake.calls[1][1]
    assert sent["topic"] == "freight" and sent["key"] == b"pred-k1"
    assert sent["timestamp_ms"] == 1_700_000_000_500
    assert sent["headers"] == [("content-type", b"application/cloudevents+json")]
    parsed = from_cloudevent(sent["value"])
    assert parsed.get_id() == "evt-k1" and parsed.get_type() == "dev.freight.prediction.completed"
    assert parsed.get_data() == EVENT.data


async def test_a_failed_send_is_an_outcome_not_an_exception() -> None:
    """A broker error on send comes back as a failed Outcome (retried by the caller)."""
    fake = FakeProducer(fail_send=RuntimeError("NotLeaderForPartitionError"))
    sink = _sink(fake, [])
    await sink.open()
    outcome = await sink.send(EVENT)
    assert not outcome.delivered and outcome.retry
    assert "NotLeaderForPartitionError" in (outcome.error or "")


async def test_a_start_failure_is_a_sink_error_without_the_password() -> None:
    """A cluster that cannot be reached fails start-up naming the sink; no secret shown."""
    fake = FakeProducer(fail_start=ConnectionError("auth failed for Kafka-Secret-PW"))
    sink = _sink(fake, [], sasl_mechanism="PLAIN", username="u", password="Kafka-Secret-PW")
    with pytest.raises(SinkError) as info:
        await sink.open()
    assert info.value.message.startswith("sink 'bus' (kafka): cannot reach the cluster")
    assert "Kafka-Secret-PW" not in info.value.message
    assert [name for name, _ in fake.calls] == ["start", "stop"]  # cleaned up


async def test_unopened_sink_answers_with_an_outcome() -> None:
    """Sending before open is a failed Outcome, never an exception."""
    outcome = await _sink(FakeProducer(), []).send(EVENT)
    assert not outcome.delivered and outcome.error == "the sink is not open"


async def test_the_real_client_fails_start_up_on_a_closed_port() -> None:
    """The real aiokafka producer, pointed at a loopback port nobody listens on, makes
    open() raise SinkError (and leaves nothing unclosed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sink = KafkaSink("bus", f"127.0.0.1:{port}", "t", source="freight://t", timeout_s=10)
    with pytest.raises(SinkError, match="cannot reach the cluster"):
        await sink.open()
