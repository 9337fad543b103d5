"""The guarded httpx client of pipelines' http steps (``agent/http_steps.py``).

SSRF and DNS rebinding: the client's connection backend resolves the host
itself, refuses it when any address is in a refused range
(``notify/addresses.py``), and connects to one of the addresses it just checked
-- so no second lookup happens between check and connect. TLS is untouched:
httpcore sends SNI and verifies the certificate against the URL's hostname, not
against the address connected to. A keep-alive connection is reused without a
new lookup, which is safe (it goes to the address that was checked when it was
opened). Environment proxies are ignored (``trust_env=False``): a proxy would
connect on our behalf to an address we never checked; redirects are not followed.

Webhooks use the same guard on aiohttp (``sinks/webhook.py``): per request it
costs a fraction of httpx's here (measured in bench/README.md, B10).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import Final

import httpcore
import httpx

from freight.notify.addresses import Resolver, resolve_allowed

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


def guarded_client(
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    allow_private: bool = False,
    resolver: Resolver | None = None,
    tls: ssl.SSLContext | None = None,
    what: str = "webhook",
    user_agent: str = USER_AGENT,
) -> httpx.AsyncClient:
    """An httpx client whose connections are guarded (``what``, in the guard's messages,
    and ``user_agent`` say who calls): no redirects, no env proxies. ``tls``: the
    context that verifies receivers (default: the system's CAs via certifi; an
    on-premise receiver signed by a private CA needs its own)."""
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


__all__ = ["guarded_client"]
