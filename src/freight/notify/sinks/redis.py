"""Redis Streams: ``XADD`` of one entry per event.

The entry's ``event`` field is the CloudEvents structured JSON document; ``id``
and ``type`` are copied beside it so that a consumer can skip without parsing.
A retried event is added again (streams do not de-duplicate): consumers
de-duplicate on ``id``. ``maxlen`` trims the stream approximately (``~``).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

import redis.asyncio as aioredis

from freight.notify.envelope import message
from freight.notify.event import Event, Outcome
from freight.notify.sinks.base import Subscription, describe, sink_error

EVENT_FIELD: Final = "event"


class RedisSink:
    """XADDs each event to ``stream`` on the server at ``url`` (from the environment)."""

    type = "redis"

    def __init__(
        self,
        name: str,
        url: str,
        stream: str,
        *,
        source: str,
        format: str = "freight",
        subscription: Subscription | None = None,
        maxlen: int | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.name = name
        self.stream = stream
        self.source = source
        self.format = format  # freight (CloudEvents) or sagemaker
        self.subscription = subscription or Subscription()
        self.maxlen = maxlen
        self.timeout_s = timeout_s
        self._url = url
        self._client: aioredis.Redis | None = None

    def __repr__(self) -> str:
        return f"RedisSink(name={self.name!r}, stream={self.stream!r})"

    __str__ = __repr__

    async def open(self) -> None:
        """Connect and PING; SinkError when the server cannot be reached or refuses."""
        try:
            client = aioredis.Redis.from_url(
                self._url,
                socket_connect_timeout=self.timeout_s,
                socket_timeout=self.timeout_s,
            )
        except ValueError as exc:
            raise sink_error(self, "the URL is not a Redis URL", exc, [self._url]) from None
        try:
            async with asyncio.timeout(self.timeout_s):
                await client.ping()
        except Exception as exc:
            await client.aclose()
            raise sink_error(self, "cannot reach the server", exc, [self._url]) from None
        self._client = client

    async def send(self, event: Event) -> Outcome:
        if self._client is None:
            return Outcome.failed("the sink is not open")
        encoded = message(event, self.source, self.format)
        if encoded is None:  # nothing to say of this event in the sink's format
            return Outcome.ok()
        try:
            fields: dict[str | bytes, str | bytes] = {
                EVENT_FIELD: encoded[0],
                "id": event.id,
                "type": event.type,
            }
            if event.traceparent:
                fields["traceparent"] = event.traceparent
            async with asyncio.timeout(self.timeout_s):
                await self._client.xadd(
                    self.stream,
                    fields,  # type: ignore[arg-type]
                    maxlen=self.maxlen,
                    approximate=True,
                )
        except Exception as exc:
            return Outcome.failed(describe(exc, [self._url]))
        return Outcome.ok()

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()
