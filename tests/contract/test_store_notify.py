"""PostgreSQL wake-ups: a change committed by one process reaches another's listener.

Single-writer stores (SQLite, memory) have nothing to listen to: their listen
returns at once, so the server's listener task ends instead of spinning.
"""

from __future__ import annotations

import asyncio

import pytest

from freight.prediction import Completion, Status
from freight.store.postgres import PostgresStore
from tests.contract.test_store import make

DEADLINE_S = 10.0


async def test_listen_reports_queued_work_and_finished_predictions(postgres_url: str) -> None:
    """Another store's enqueue calls on_work(target); its completion calls on_done(id)."""
    listener, writer = PostgresStore(postgres_url), PostgresStore(postgres_url)
    await listener.open()
    await writer.open()
    work: asyncio.Queue[str] = asyncio.Queue()
    done: asyncio.Queue[str] = asyncio.Queue()
    task = asyncio.create_task(listener.listen(work.put_nowait, done.put_nowait))
    try:
        # the listener is up once a notification gets through: enqueue until one does
        async def first_work() -> str:
            while True:
                await writer.create(make("warmup"))
                try:
                    return await asyncio.wait_for(work.get(), 0.2)
                except TimeoutError:
                    continue

        assert await asyncio.wait_for(first_work(), DEADLINE_S) == "warmup"
        prediction, _ = await writer.create(make("resnet"))
        assert await asyncio.wait_for(_next_other_than(work, "warmup"), DEADLINE_S) == "resnet"
        claimed = await writer.claim("resnet", 1, worker_id="w", lease_s=30, now=1.0)
        await writer.complete(
            [
                Completion(
                    id=prediction.id,
                    attempt=claimed[0].attempts,
                    worker_id="w",
                    status=Status.SUCCEEDED,
                    finished_at=2.0,
                )
            ]
        )
        assert await asyncio.wait_for(done.get(), DEADLINE_S) == prediction.id
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await listener.close()
        await writer.close()


async def _next_other_than(queue: asyncio.Queue[str], skip: str) -> str:
    while (value := await queue.get()) == skip:
        pass
    return value


@pytest.mark.parametrize("backend", ["sqlite", "memory"])
async def test_single_writer_listen_returns_at_once(
    backend: str, request: pytest.FixtureRequest
) -> None:
    """SQLite and memory have nothing to listen to: listen() returns immediately."""
    from freight.store import open_store

    store = open_store(request.getfixturevalue(f"{backend}_url"))
    await store.open()
    try:
        await asyncio.wait_for(store.listen(print, print), 1.0)
    finally:
        await store.close()
