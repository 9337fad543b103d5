"""Kafka: a produce per event to one topic, acknowledged by all in-sync replicas.

The value is the CloudEvents structured JSON document (header ``content-type:
application/cloudevents+json``, per the CloudEvents Kafka binding); the key is
the prediction id, so one prediction's events land in one partition, in order.
``acks="all"`` with idempotence on: a send that returns has been replicated.

No broker runs in the test environment: the sink is tested against the
client's contract (``AIOKafkaProducer``'s ``start`` / ``send_and_wait`` /
``stop``) through the ``producer_factory`` seam, with a fake producer. The
factory receives exactly the keyword arguments below, which are
``AIOKafkaProducer``'s own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol

from freight.notify.envelope import message
from freight.notify.event import Event, Outcome
from freight.notify.sinks.base import Subscription, describe, sink_error

Headers = Sequence[tuple[str, bytes]]
SECURITY_PROTOCOLS: Final = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


class Producer(Protocol):
    """The part of ``aiokafka.AIOKafkaProducer`` the sink uses."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send_and_wait(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: Headers | None = None,
    ) -> Any: ...


ProducerFactory = Callable[..., Producer]


def aiokafka_producer(**kwargs: Any) -> Producer:
    """The real producer (aiokafka imported only when a Kafka sink is used)."""
    from aiokafka import AIOKafkaProducer

    producer: Producer = AIOKafkaProducer(**kwargs)
    return producer


class KafkaSink:
    """Produces each event to ``topic`` on the cluster at ``bootstrap`` (from the env)."""

    type = "kafka"

    def __init__(
        self,
        name: str,
        bootstrap: str,
        topic: str,
        *,
        source: str,
        format: str = "freight",
        subscription: Subscription | None = None,
        security_protocol: str = "PLAINTEXT",
        sasl_mechanism: str | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = 10.0,
        producer_factory: ProducerFactory = aiokafka_producer,
    ) -> None:
        self.name = name
        self.topic = topic
        self.source = source
        self.format = format  # freight (CloudEvents) or sagemaker
        self.subscription = subscription or Subscription()
        self.security_protocol = security_protocol
        self.sasl_mechanism = sasl_mechanism
        self.timeout_s = timeout_s
        self._bootstrap = bootstrap
        self._username = username
        self._password = password
        self._factory = producer_factory
        self._producer: Producer | None = None

    def __repr__(self) -> str:
        return f"KafkaSink(name={self.name!r}, topic={self.topic!r})"

    __str__ = __repr__

    @property
    def _secrets(self) -> list[str | None]:
        return [self._bootstrap, self._password]

    def producer_options(self) -> dict[str, Any]:
        """The keyword arguments the producer is made with (AIOKafkaProducer's names)."""
        options: dict[str, Any] = {
            "bootstrap_servers": [s.strip() for s in self._bootstrap.split(",") if s.strip()],
            "client_id": f"freight-{self.name}",
            "acks": "all",
            "enable_idempotence": True,
            "request_timeout_ms": int(self.timeout_s * 1000),
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism is not None:
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self._username
            options["sasl_plain_password"] = self._password
        return options

    async def open(self) -> None:
        """Start the producer (it fetches the cluster's metadata: an unreachable
        cluster fails here, within the timeout)."""
        try:
            producer = self._factory(**self.producer_options())
        except Exception as exc:
            raise sink_error(self, "cannot make a producer", exc, self._secrets) from None
        try:
            async with asyncio.timeout(self.timeout_s):
                await producer.start()
        except Exception as exc:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise sink_error(self, "cannot reach the cluster", exc, self._secrets) from None
        self._producer = producer

    async def send(self, event: Event) -> Outcome:
        if self._producer is None:
            return Outcome.failed("the sink is not open")
        encoded = message(event, self.source, self.format)
        if encoded is None:  # nothing to say of this event in the sink's format
            return Outcome.ok()
        body, content_type = encoded
        headers: list[tuple[str, bytes]] = [("content-type", content_type.encode())]
        if event.traceparent:
            headers.append(("traceparent", event.traceparent.encode()))
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._producer.send_and_wait(
                    self.topic,
                    value=body,
                    key=event.prediction_id.encode(),
                    timestamp_ms=int(event.timestamp * 1000),
                    headers=headers,
                )
        except Exception as exc:
            return Outcome.failed(describe(exc, self._secrets))
        return Outcome.ok()

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()
