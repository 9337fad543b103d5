"""Webhooks: an HTTP POST per event, signed per Standard Webhooks.

The body is ``{"type", "timestamp", "data"}`` (``timestamp``: the event's time,
ISO 8601 UTC); the headers ``webhook-id`` (the event id: receivers de-duplicate
on it), ``webhook-timestamp`` (the attempt's time, which the receiver checks
against replay) and ``webhook-signature`` (one ``v1,<sig>`` per secret while a
rotation overlaps). 2xx is delivered; 410 Gone stops (the receiver wants no
more); anything else, redirects included (never followed: a redirect is an easy
way around the SSRF guard), is a failure to retry, with its status recorded.

The client is aiohttp's (:func:`webhook_session`): per request it costs a
fraction of httpx's here (B10 in bench/README.md). SSRF and DNS rebinding: the
connector's resolver resolves the host itself and refuses it when any address is
in a refused range (``notify/addresses.py``); the connector connects only to the
addresses that resolver returned, so no second lookup happens between check and
connect; and every socket is made by a factory that checks the address it is
about to connect to once more (an IP literal in the URL, which aiohttp does not
resolve, is judged there). TLS is untouched: aiohttp sends SNI and verifies the
certificate against the URL's hostname, not against the address connected to. A
keep-alive connection is reused without a new lookup, which is safe (it goes to
the address that was checked when it was opened). Environment proxies are
ignored (``trust_env=False``): a proxy would connect on our behalf to an address
we never checked. No cookies are kept.

A per-request webhook (the URL from a create body) and a server-wide one are
the same class; per-request ones share one session (:func:`webhook_session`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import ipaddress
import socket
import ssl
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
import certifi
import orjson
from aiohttp.abc import AbstractResolver, ResolveResult

from freight.errors import InvalidRequestError
from freight.notify import sagemaker
from freight.notify.addresses import Resolver, check_url_text, refusal, resolve_allowed
from freight.notify.event import Event, Outcome
from freight.notify.signing import WebhookSecrets
from freight.notify.sinks.base import Subscription, describe, sink_error

USER_AGENT: Final = "freight-webhooks/1"
DEFAULT_TIMEOUT_S: Final = 10.0


class AddressRefusedError(OSError):
    """The address a socket was about to connect to is refused (``addresses.refusal``)."""


class _GuardedResolver(AbstractResolver):
    """Resolves and checks the host: every answer allowed, or the host refused whole."""

    def __init__(self, *, allow_private: bool, resolver: Resolver | None, what: str) -> None:
        self._allow_private = allow_private
        self._resolver = resolver
        self._what = what

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = await resolve_allowed(
            host, port, allow_private=self._allow_private, resolver=self._resolver, what=self._what
        )
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in addresses
        ]

    async def close(self) -> None:
        return None


def _guarded_socket(allow_private: bool, what: str) -> Any:
    """aiohttp's socket factory: the last check, on the very address connected to."""

    def make(addr_info: Any) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        address = str(sockaddr[0])
        why = refusal(ipaddress.ip_address(address.split("%", 1)[0]), allow_private=allow_private)
        if why is not None:
            raise AddressRefusedError(f"the {what} address {address} is {why}")
        return socket.socket(family, type_, proto)

    return make


@functools.cache
def _default_tls() -> ssl.SSLContext:
    """The system's CAs as certifi has them (what httpx verified with before)."""
    return ssl.create_default_context(cafile=certifi.where())


def webhook_session(
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    allow_private: bool = False,
    resolver: Resolver | None = None,
    tls: ssl.SSLContext | None = None,
    what: str = "webhook",
) -> aiohttp.ClientSession:
    """An aiohttp session for webhooks, made on the event loop that uses it: guarded
    connections (``resolver``: the one the guard asks, default the system's), no
    redirects (each request says so), no env proxies, no cookies. ``tls``: the context
    that verifies receivers (default: the system's CAs via certifi; an on-premise
    receiver signed by a private CA needs its own)."""
    connector = aiohttp.TCPConnector(
        resolver=_GuardedResolver(allow_private=allow_private, resolver=resolver, what=what),
        use_dns_cache=False,  # each new connection is checked on a fresh answer
        ssl=tls or _default_tls(),
        limit=100,
        keepalive_timeout=5.0,
        happy_eyeballs_delay=None,  # the checked addresses in turn, as httpx did
        socket_factory=_guarded_socket(allow_private, what),
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout_s),
        trust_env=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        headers={"user-agent": USER_AGENT},
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


async def _head(resp: aiohttp.ClientResponse) -> str | None:
    """The first KB of the answer's body, as text (None: it had none, or it broke off)."""
    kept = bytearray()
    try:
        while len(kept) < ANSWER_READ:
            chunk = await resp.content.read(ANSWER_READ - len(kept))
            if not chunk:
                break
            kept += chunk
    except aiohttp.ClientError:
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
    """POSTs each event to one URL. ``client``: a shared session (not closed here), made
    by :func:`webhook_session` with the same ``allow_private`` on the loop that sends
    (its connector, not the sink, guards the connection); without one the sink makes
    its own on ``open`` (or on first ``send``)."""

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
        client: aiohttp.ClientSession | None = None,
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
        """Check the URL's text (scheme, length, refused literals); make the session."""
        try:
            check_url_text(self._url, allow_private=self.allow_private)
        except InvalidRequestError as exc:
            raise sink_error(self, exc.message) from None
        self._ensure_client()

    def _ensure_client(self) -> aiohttp.ClientSession:
        if self._client is None:
            self._client = webhook_session(
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
        except InvalidRequestError as exc:  # refused by the SSRF guard (the resolver)
            return Outcome.failed(exc.message)
        except TimeoutError:  # aiohttp's own timeouts are TimeoutErrors too
            return Outcome.failed(f"{self.host} did not answer within {self.timeout_s:g} s")
        except (aiohttp.ClientSSLError, ssl.SSLError) as exc:
            return Outcome.failed(f"TLS with {self.host} failed: {describe(exc, [self._url])}")
        except aiohttp.ClientConnectorDNSError as exc:  # the name does not resolve
            return Outcome.failed(f"cannot resolve {self.host}: {describe(exc, [self._url])}")
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, AddressRefusedError):  # the socket factory's check
                return Outcome.failed(str(exc.os_error))
            return Outcome.failed(f"cannot connect to {self.host}: {describe(exc, [self._url])}")
        except OSError as exc:  # the name does not resolve (the injected resolver's)
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
        # of a huge answer only the first KB is read (kept for operators)
        async with client.post(
            self._url, data=body, headers=headers, allow_redirects=False
        ) as resp:
            outcome = _status_outcome(resp.status, self.host)
            return dataclasses.replace(outcome, response=await _head(resp))

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._owns_client:
            with contextlib.suppress(Exception):
                await client.close()
