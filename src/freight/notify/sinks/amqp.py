"""AMQP 0-9-1 (RabbitMQ): a publish per event to one exchange.

The routing key is the event type (``prediction.completed``), so a topic
exchange lets each queue bind to what it wants (``prediction.*``). Messages are
persistent (delivery mode 2), carry the event id as ``message_id`` (for
de-duplication) and the CloudEvents structured JSON document as the body
(content type ``application/cloudevents+json``). The channel uses publisher
confirms: an event counts as delivered once the broker has taken it.

``declare`` (default) declares the exchange durable; without it, ``open``
checks that the exchange exists (passive declare) and fails start-up if not.
``mandatory`` makes a message that no queue takes a failure (retried) instead
of silently dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractRobustConnection

from freight.notify.envelope import message
from freight.notify.event import Event, Outcome
from freight.notify.sinks.base import Subscription, describe, sink_error


class AmqpSink:
    """Publishes each event to ``exchange`` on the broker at ``url`` (from the env)."""

    type = "amqp"

    def __init__(
        self,
        name: str,
        url: str,
        exchange: str,
        *,
        source: str,
        format: str = "freight",
        subscription: Subscription | None = None,
        exchange_type: str = "topic",
        declare: bool = True,
        mandatory: bool = False,
        timeout_s: float = 10.0,
    ) -> None:
        self.name = name
        self.exchange = exchange
        self.exchange_type = exchange_type
        self.declare = declare
        self.mandatory = mandatory
        self.source = source
        self.format = format  # freight (CloudEvents) or sagemaker
        self.subscription = subscription or Subscription()
        self.timeout_s = timeout_s
        self._url = url
        self._connection: AbstractRobustConnection | None = None
        self._exchange: AbstractExchange | None = None

    def __repr__(self) -> str:
        return f"AmqpSink(name={self.name!r}, exchange={self.exchange!r})"

    __str__ = __repr__

    async def open(self) -> None:
        """Connect (robustly: it reconnects by itself later), open a confirming
        channel, declare or check the exchange."""
        try:
            async with asyncio.timeout(self.timeout_s):
                connection = await aio_pika.connect_robust(self._url, timeout=self.timeout_s)
        except Exception as exc:
            raise sink_error(self, "cannot reach the broker", exc, [self._url]) from None
        try:
            async with asyncio.timeout(self.timeout_s):
                channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
                exchange: AbstractExchange
                if self.declare:
                    exchange = await channel.declare_exchange(
                        self.exchange, self.exchange_type, durable=True
                    )
                else:
                    exchange = await channel.get_exchange(self.exchange, ensure=True)
        except Exception as exc:
            with contextlib.suppress(Exception):
                await connection.close()
            raise sink_error(
                self, f"cannot use exchange {self.exchange!r}", exc, [self._url]
            ) from None
        self._connection, self._exchange = connection, exchange

    async def send(self, event: Event) -> Outcome:
        if self._exchange is None:
            return Outcome.failed("the sink is not open")
        encoded = message(event, self.source, self.format)
        if encoded is None:  # nothing to say of this event in the sink's format
            return Outcome.ok()
        body, content_type = encoded
        try:  # a Nack, or a mandatory message returned unrouted, raises here
            sent = aio_pika.Message(
                body,
                content_type=content_type,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=event.id,
                type=event.type,
                timestamp=datetime.fromtimestamp(event.timestamp, UTC),
                app_id="freight",
                headers={"traceparent": event.traceparent} if event.traceparent else None,
            )
            await self._exchange.publish(
                sent, routing_key=event.type, mandatory=self.mandatory, timeout=self.timeout_s
            )
        except Exception as exc:
            return Outcome.failed(describe(exc, [self._url]))
        return Outcome.ok()

    async def close(self) -> None:
        connection, self._connection, self._exchange = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()
