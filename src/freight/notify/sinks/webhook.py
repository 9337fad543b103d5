"""Webhooks: an HTTP POST per event, signed per Standard Webhooks.

The body is ``{"type", "timestamp", "data"}`` (``timestamp``: the event's time,
ISO 8601 UTC); the headers ``webhook-id`` (the event id: receivers de-duplicate
on it), ``webhook-timestamp`` (the attempt's time, which the receiver checks
against replay) and ``webhook-signature`` (one ``v1,<sig>`` per secret while a
rotation overlaps). 2xx is delivered; 410 Gone stops (the receiver wants no
more); anything else, redirects included (never followed: a redirect is an easy
way around the SSRF guard), is a failure to retry, with its status recorded.

SSRF and DNS rebinding: the client's connection backend resolves the host
itself, refuses it when any address is in a refused range
(``notify/addresses.py``), and connects to one of the addresses it just checked
-- so no second lookup happens between check and connect. TLS is untouched:
httpcore sends SNI and verifies the certificate against the URL's hostname, not
against the address connected to. The residual window: none for the TCP
connection itself; a keep-alive connection is reused without a new lookup,
which is safe (it goes to the address that was checked when it was opened).
Environment proxies are ignored (``trust_env=False``): a proxy would connect
on our behalf to an address we never checked.

A per-request webhook (the URL from a create body) and a server-wide one are
the same class; per-request ones share one client (:func:`webhook_client`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from datetime import UTC, datetime
from typing import Final
from urllib.parse import urlsplit

import httpcore
import httpx
import orjson

from freight.errors import InvalidRequestError
from freight.notify import sagemaker
from freight.notify.addresses import Resolver, check_url_text, resolve_allowed
from freight.notify.event import Event, Outcome
from freight.notify.signing import WebhookSecrets
from freight.notify.sinks.base import Subscription, describe, sink_error

USER_AGENT: Final = "freight-webhooks/1"
DEFAULT_TIMEOUT_S: Final = 10.0


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves and checks the host, then connects to a checked address."""

    def __init__(
        self, *, allow_private: bool, resolver: Resolver | None, what: str = "webhook"
    ) -> None:
        self._inner = httpcore.AnyIOBackend()
        self._allow_private = allow_private
        self._resolver = resolver
        self._what = what

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await resolve_allowed(
            host, port, allow_private=self._allow_private, resolver=self._resolver, what=self._what
        )
        last: Exception | None = None
        for address in addresses:  # each one checked above
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("webhooks never go to a unix socket")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _Body(httpx.AsyncByteStream):
    """httpcore's response stream as the httpx stream a Response takes."""

    def __init__(self, stream: AsyncIterable[bytes]) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        aclose = getattr(self._stream, "aclose", None)
        if aclose is not None:
            await aclose()


class _GuardedTransport(httpx.AsyncBaseTransport):
    """httpx's default transport, on a connection pool whose backend is guarded."""

    def __init__(
        self,
        *,
        allow_private: bool,
        resolver: Resolver | None,
        tls: ssl.SSLContext | None,
        what: str = "webhook",
    ) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=tls or httpx.create_ssl_context(),
            max_connections=100,
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            network_backend=_GuardedBackend(
                allow_private=allow_private, resolver=resolver, what=what
            ),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        resp = await self._pool.handle_async_request(core)
        assert isinstance(resp.stream, AsyncIterable)
        return httpx.Response(
            status_code=resp.status,
            headers=resp.headers,
            stream=_Body(resp.stream),
            extensions=resp.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


def webhook_client(
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    allow_private: bool = False,
    resolver: Resolver | None = None,
    tls: ssl.SSLContext | None = None,
    what: str = "webhook",
    user_agent: str = USER_AGENT,
) -> httpx.AsyncClient:
    """An HTTP client for webhooks (and pipelines' http steps: ``what``, in the guard's
    messages, and ``user_agent`` say which): guarded connections, no redirects, no env
    proxies. ``tls``: the context that verifies receivers (default: the system's CAs
    via certifi; an on-premise receiver signed by a private CA needs its own)."""
    transport = _GuardedTransport(
        allow_private=allow_private, resolver=resolver, tls=tls, what=what
    )
    return httpx.AsyncClient(
        transport=transport,
        follow_redirects=False,
        timeout=httpx.Timeout(timeout_s),
        trust_env=False,
        headers={"user-agent": user_agent},
    )


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def webhook_body(event: Event, format: str = "freight") -> bytes | None:
    """The JSON body of a webhook (the bytes that are signed and sent): the event, or
    SageMaker's async notification (``format: sagemaker``; None for an event SageMaker
    has none for, which is then not sent)."""
    if format == sagemaker.FORMAT:
        document = sagemaker.notification(event)
        return None if document is None else orjson.dumps(document)
    body = {"type": event.type, "timestamp": _iso(event.timestamp), "data": event.data}
    return orjson.dumps(body)


#: how much of an answer is read: what an operator is shown of it
ANSWER_READ = 1024


async def _head(resp: httpx.Response) -> str | None:
    """The first KB of the answer's body, as text (None: it had none, or it broke off)."""
    kept = bytearray()
    try:
        async for chunk in resp.aiter_bytes():
            kept += chunk
            if len(kept) >= ANSWER_READ:
                break
    except httpx.HTTPError:
        pass  # the status was the answer; a body cut short is shown as far as it came
    return kept[:ANSWER_READ].decode("utf-8", "replace") or None


def _status_outcome(status: int, host: str) -> Outcome:
    if 200 <= status < 300:
        return Outcome.ok(status)
    if status == 410:
        return Outcome.gone(status, f"{host} answered 410 Gone: it wants no more events")
    if 300 <= status < 400:
        return Outcome.failed(f"{host} answered HTTP {status}: redirects are not followed", status)
    return Outcome.failed(f"{host} answered HTTP {status}", status)


class WebhookSink:
    """POSTs each event to one URL. ``client``: a shared client (not closed here), made
    by :func:`webhook_client` with the same ``allow_private`` (its transport, not the
    sink, guards the connection); without one the sink makes its own on ``open`` (or
    on first ``send``)."""

    type = "webhook"

    def __init__(
        self,
        name: str,
        url: str,
        *,
        secrets: WebhookSecrets,
        subscription: Subscription | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        allow_private: bool = False,
        client: httpx.AsyncClient | None = None,
        resolver: Resolver | None = None,
        tls: ssl.SSLContext | None = None,
        format: str = "freight",
    ) -> None:
        self.name = name
        self.format = format  # the body: freight's event, or SageMaker's notification
        self.subscription = subscription or Subscription()
        self.timeout_s = timeout_s
        self.allow_private = allow_private
        self._url = url
        self._secrets = secrets
        self._client = client
        self._owns_client = client is None
        self._resolver = resolver
        self._tls = tls
        self.host = urlsplit(url).hostname or ""

    def __repr__(self) -> str:
        return f"WebhookSink(name={self.name!r}, host={self.host!r})"

    __str__ = __repr__

    async def open(self) -> None:
        """Check the URL's text (scheme, length, refused literals); make the client."""
        try:
            check_url_text(self._url, allow_private=self.allow_private)
        except InvalidRequestError as exc:
            raise sink_error(self, exc.message) from None
        self._ensure_client()

    def _ensure_client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = webhook_client(
                timeout_s=self.timeout_s,
                allow_private=self.allow_private,
                resolver=self._resolver,
                tls=self._tls,
            )
            self._owns_client = True
        return self._client

    async def send(self, event: Event) -> Outcome:
        """One signed POST; an Outcome, never an exception, for any delivery failure."""
        try:
            check_url_text(self._url, allow_private=self.allow_private)
            async with asyncio.timeout(self.timeout_s):
                return await self._post(event)
        except InvalidRequestError as exc:  # refused by the SSRF guard
            return Outcome.failed(exc.message)
        except (TimeoutError, httpx.TimeoutException, httpcore.TimeoutException):
            return Outcome.failed(f"{self.host} did not answer within {self.timeout_s:g} s")
        except (httpcore.ConnectError, httpx.ConnectError) as exc:
            return Outcome.failed(f"cannot connect to {self.host}: {describe(exc, [self._url])}")
        except ssl.SSLError as exc:
            return Outcome.failed(f"TLS with {self.host} failed: {describe(exc, [self._url])}")
        except OSError as exc:  # the name does not resolve
            return Outcome.failed(f"cannot resolve {self.host}: {describe(exc, [self._url])}")
        except Exception as exc:
            return Outcome.failed(f"delivery to {self.host} failed: {describe(exc, [self._url])}")

    async def _post(self, event: Event) -> Outcome:
        body = webhook_body(event, self.format)
        if body is None:  # nothing to say of this event in the sink's format
            return Outcome.ok()
        headers = self._secrets.headers(event.id, datetime.now(UTC), body.decode())
        headers["content-type"] = "application/json"
        if event.traceparent:  # the receiver's spans join the prediction's trace
            headers["traceparent"] = event.traceparent
        client = self._ensure_client()
        # streamed: of a huge answer only the first KB is read (kept for operators)
        async with client.stream("POST", self._url, content=body, headers=headers) as resp:
            outcome = _status_outcome(resp.status_code, self.host)
            return dataclasses.replace(outcome, response=await _head(resp))

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._owns_client:
            with contextlib.suppress(Exception):
                await client.aclose()
