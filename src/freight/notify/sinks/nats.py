"""NATS JetStream: a publish per event, acknowledged by the stream.

The payload is the CloudEvents structured JSON document; the ``Nats-Msg-Id``
header is the event id, so JetStream itself drops a retried duplicate inside the
stream's duplicate window. ``open`` checks that some stream captures the
subject (a core-NATS publish to nobody would be lost); with ``create_stream``
it creates ``stream`` over the subject when it is missing.

The client reconnects by itself for ever after the first connection; the first
one is bounded by the sink's timeout, so an unreachable server fails start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext

from freight.notify.envelope import message
from freight.notify.event import Event, Outcome
from freight.notify.sinks.base import Subscription, describe, sink_error

_FOREVER: Final = -1  # nats-py: a non-positive max_reconnect_attempts means unlimited


async def _quiet(exc: Exception) -> None:
    """nats-py logs every failed (re)connect with a traceback by default; the sink
    reports failures through SinkError and Outcomes instead."""


class NatsSink:
    """Publishes each event to ``subject`` through JetStream."""

    type = "nats"

    def __init__(
        self,
        name: str,
        servers: list[str],
        subject: str,
        *,
        source: str,
        format: str = "freight",
        subscription: Subscription | None = None,
        stream: str | None = None,
        create_stream: bool = False,
        user: str | None = None,
        password: str | None = None,
        token: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.name = name
        self.subject = subject
        self.stream = stream
        self.create_stream = create_stream
        self.source = source
        self.format = format  # freight (CloudEvents) or sagemaker
        self.subscription = subscription or Subscription()
        self.timeout_s = timeout_s
        self._servers = servers
        self._user = user
        self._password = password
        self._token = token
        self._client: Client | None = None
        self._js: JetStreamContext | None = None

    def __repr__(self) -> str:
        return f"NatsSink(name={self.name!r}, subject={self.subject!r}, stream={self.stream!r})"

    __str__ = __repr__

    @property
    def _secrets(self) -> list[str | None]:
        return [*self._servers, self._password, self._token]

    async def open(self) -> None:
        """Connect, then make sure a stream captures the subject (creating it if told)."""
        client = Client()
        try:
            async with asyncio.timeout(self.timeout_s):
                await client.connect(
                    servers=self._servers,
                    user=self._user,
                    password=self._password,
                    token=self._token,
                    connect_timeout=max(1, int(self.timeout_s)),
                    max_reconnect_attempts=_FOREVER,
                    error_cb=_quiet,
                )
        except Exception as exc:
            cause = client.last_error or exc
            await self._drop(client)
            raise sink_error(self, "cannot reach the server", cause, self._secrets) from None
        js = client.jetstream(timeout=self.timeout_s)
        try:
            await self._ensure_stream(js)
        except Exception:
            await self._drop(client)
            raise
        self._client, self._js = client, js

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        try:
            await js.find_stream_name_by_subject(self.subject)
            return
        except nats.js.errors.NotFoundError:
            pass
        except Exception as exc:
            raise sink_error(self, "cannot query JetStream", exc, self._secrets) from None
        if not (self.create_stream and self.stream):
            raise sink_error(
                self,
                f"no JetStream stream captures subject {self.subject!r}; create one, "
                "or set stream and create_stream: true",
            )
        try:
            await js.add_stream(name=self.stream, subjects=[self.subject])
        except Exception as exc:
            raise sink_error(
                self, f"cannot create stream {self.stream!r}", exc, self._secrets
            ) from None

    async def send(self, event: Event) -> Outcome:
        if self._js is None:
            return Outcome.failed("the sink is not open")
        encoded = message(event, self.source, self.format)
        if encoded is None:  # nothing to say of this event in the sink's format
            return Outcome.ok()
        body, content_type = encoded
        headers = {"Nats-Msg-Id": event.id, "Content-Type": content_type}
        if event.traceparent:
            headers["traceparent"] = event.traceparent
        try:
            await self._js.publish(
                self.subject,
                body,
                timeout=self.timeout_s,
                stream=self.stream,
                headers=headers,
            )
        except Exception as exc:
            return Outcome.failed(describe(exc, self._secrets))
        return Outcome.ok()

    @staticmethod
    async def _drop(client: Client) -> None:
        with contextlib.suppress(Exception):
            await client.close()

    async def close(self) -> None:
        client, self._client, self._js = self._client, None, None
        if client is not None:
            await self._drop(client)
