"""The async client's default network: aiohttp.

Measured here (2 cores, 32 concurrent requests against freight): httpx's async
pool managed ~160-200 requests/s while aiohttp managed ~2,500/s, so httpx made
the *client* the bottleneck of every async workload. The shared flows still
speak in ``httpx.Response`` objects; this transport builds one per reply (a
cheap container) so that ``_flows``/``_protocol`` stay transport-neutral.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import httpx
import orjson

from freight.client._events import check_stream
from freight.client._models import FreightClientError
from freight.client._protocol import CHUNK_BYTES, Call, key_headers, partial_path


def _timeout(call: Call, default_s: float) -> aiohttp.ClientTimeout:
    if call.timeout is None:
        return aiohttp.ClientTimeout(total=None, sock_connect=default_s, sock_read=default_s)
    return aiohttp.ClientTimeout(
        total=None,
        sock_connect=call.timeout.connect,
        sock_read=call.timeout.read,
    )


class _Response(httpx.Response):
    """The answer as the client's flows read it (an ``httpx.Response``), its request
    made only when something asks for it (an error's message): building one parses
    the URL, ~15 µs of every call's ~170 µs of client CPU."""

    def __init__(self, status: int, *, asked: tuple[str, str], **kwargs: Any) -> None:
        super().__init__(status, **kwargs)
        self._asked = asked

    @property
    def request(self) -> httpx.Request:
        if self._request is None:
            self._request = httpx.Request(*self._asked)
        return self._request

    @request.setter
    def request(self, value: httpx.Request) -> None:
        self._request = value


class AiohttpTransport:
    def __init__(
        self, base_url: str, timeout_s: float, headers: dict[str, str], key: str | None = None
    ) -> None:
        self._base = base_url
        self._timeout_s = timeout_s
        self._headers = headers
        self._key = key
        self._session: aiohttp.ClientSession | None = None

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None:  # created lazily: needs the running loop
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=256),
                json_serialize=lambda o: orjson.dumps(o).decode(),
            )
        return self._session

    def _headers_for(self, call: Call, url: str) -> dict[str, str]:
        return {**self._headers, **key_headers(self._key, url, self._base), **call.headers}

    def _url(self, call: Call) -> str:
        url = call.url if "://" in call.url else self._base + call.url
        if call.params:
            url += ("&" if "?" in url else "?") + urlencode(call.params)
        return url

    async def send(
        self, call: Call, content: bytes | AsyncIterator[bytes] | None
    ) -> httpx.Response:
        url = self._url(call)
        headers = self._headers_for(call, url)
        body: Any = content
        if call.has_json:
            body = orjson.dumps(call.json)
            headers["Content-Type"] = "application/json"
        try:
            async with self._session_now().request(
                call.method,
                url,
                data=body,
                headers=headers,
                timeout=_timeout(call, self._timeout_s),
            ) as reply:
                if call.download_to is not None and 200 <= reply.status < 300:
                    await _save(reply, call.download_to, call)
                    data = b""
                else:
                    data = await reply.read()
                return _Response(
                    reply.status,
                    headers=[
                        (k.decode("latin-1"), v.decode("latin-1")) for k, v in reply.raw_headers
                    ],
                    content=data,
                    asked=(call.method, url),
                )
        except TimeoutError as exc:
            raise FreightClientError(0, "timeout", f"timed out talking to {url}") from exc
        except aiohttp.ClientError as exc:
            raise FreightClientError(
                0,
                "connection_error",
                f"{type(exc).__name__} talking to {url}: {exc}",
            ) from exc

    async def lines(self, call: Call) -> AsyncGenerator[str, None]:
        """The lines of an event stream as they arrive (an error answer raised); the
        request may have a body (a real-time stream's input)."""
        url = self._url(call)
        headers = self._headers_for(call, url)
        body: Any = call.content
        if call.has_json:
            body = orjson.dumps(call.json)
            headers["Content-Type"] = "application/json"
        try:
            async with self._session_now().request(
                call.method,
                url,
                data=body,
                headers=headers,
                timeout=_timeout(call, self._timeout_s),
            ) as reply:
                head = _Response(
                    reply.status,
                    headers=[
                        (k.decode("latin-1"), v.decode("latin-1")) for k, v in reply.raw_headers
                    ],
                    content=await reply.read() if reply.status >= 400 else b"",
                    asked=(call.method, url),
                )
                check_stream(head)
                async for line in reply.content:
                    yield line.decode()
        except TimeoutError as exc:
            raise FreightClientError(0, "timeout", f"timed out talking to {url}") from exc
        except aiohttp.ClientError as exc:
            raise FreightClientError(
                0, "connection_error", f"{type(exc).__name__} talking to {url}: {exc}"
            ) from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def _save(reply: aiohttp.ClientResponse, path: Path, call: Call) -> None:
    """Stream the body to a temporary file, renamed into place only when complete;
    ``call.progress(received, total)`` follows it."""
    part = partial_path(path)
    total = reply.content_length or 0
    received = 0
    try:
        with part.open("wb") as f:
            async for chunk in reply.content.iter_chunked(CHUNK_BYTES):
                await asyncio.to_thread(f.write, chunk)
                received += len(chunk)
                if call.progress is not None:
                    call.progress(received, total)
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
