"""PostgreSQL outages: they surface as StoreUnavailableError within seconds, and
the store recovers by itself once the server is back.

The outage is a TCP proxy between the store and the shared server that the test
stops and starts: the real server is never restarted (others use it).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest

from freight.errors import StoreUnavailableError
from freight.ids import new_id
from freight.prediction import Prediction, Status
from freight.store.postgres import PostgresStore

OUTAGE_DEADLINE_S = 8.0


class Proxy:
    """A stoppable TCP relay to the database server."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Refuse new connections and cut every open one, as a crashed server would."""
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        self._writers.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        self._writers += [writer, up_writer]
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst), name="pg-proxy-pipe")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        dst.close()


@pytest.fixture
async def proxied(postgres_url: str) -> AsyncIterator[tuple[Proxy, str]]:
    parts = urlsplit(postgres_url)
    proxy = Proxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    url = f"postgresql://{parts.username}@127.0.0.1:{proxy.port}{parts.path}"
    try:
        yield proxy, url
    finally:
        with contextlib.suppress(AssertionError):
            await proxy.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_open_unreachable_server_raises_store_unavailable() -> None:
    """Opening a store on a port nobody listens on raises StoreUnavailableError (no hang)."""
    store = PostgresStore(f"postgresql://postgres@127.0.0.1:{_free_port()}/x", connect_timeout_s=1)
    with pytest.raises(StoreUnavailableError):
        await asyncio.wait_for(store.open(), OUTAGE_DEADLINE_S)


async def test_outage_raises_store_unavailable_then_recovers(
    proxied: tuple[Proxy, str],
) -> None:
    """During an outage calls raise StoreUnavailableError within seconds; after it, they work."""
    proxy, url = proxied
    store = PostgresStore(url, connect_timeout_s=1, acquire_timeout_s=1)
    await store.open()
    try:
        p = Prediction(id=new_id(), target="m", status=Status.QUEUED, created_at=1.0)
        await store.create(p)
        await proxy.stop()
        for call in (store.ping, lambda: store.get(p.id), store.stats):
            # the outage must surface as an error, not a hang: wait_for is the liveness guard
            with pytest.raises(StoreUnavailableError):
                await asyncio.wait_for(call(), OUTAGE_DEADLINE_S)
        await proxy.start()
        deadline = time.monotonic() + OUTAGE_DEADLINE_S
        while True:  # the pool reconnects in the background: poll with a deadline
            try:
                assert await store.get(p.id) == p
                break
            except StoreUnavailableError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
    finally:
        await store.close()


async def test_terminated_connections_are_replaced(postgres_url: str) -> None:
    """Connections killed server-side (as by a restart) are dropped and replaced unseen."""
    store = PostgresStore(postgres_url)
    await store.open()
    try:
        await store.ping()
        dbname = urlsplit(postgres_url).path.lstrip("/")
        from tests.fixtures.postgres import _admin

        with _admin() as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (dbname,),
            )
        await store.ping()
        assert await store.stats() == {}
    finally:
        await store.close()
