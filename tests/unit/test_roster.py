"""The roster's cached reads: a burst of views shares one query per key and second."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from freight.prediction import Prediction, Status
from freight.roster import Roster
from freight.store import open_store
from freight.store.base import Store


@pytest.fixture
async def store(sqlite_url: str) -> AsyncIterator[Store]:
    opened = open_store(sqlite_url)
    await opened.open()
    yield opened
    await opened.close()


def counted(store: Store) -> list[int]:
    """Count the store's reads from now on (the real store answers them)."""
    calls = [0]
    execute = store.execute

    async def counting(make: Callable[[], Any], *, write: bool = True) -> Any:
        calls[0] += 1
        return await execute(make, write=write)

    store.execute = counting  # type: ignore[method-assign]
    return calls


def queued(target: str = "m", priority: int = 0) -> Prediction:
    now = time.time()
    return Prediction(
        id=f"p-{now}", target=target, status=Status.QUEUED, created_at=now, priority=priority
    )


async def test_a_burst_of_views_shares_one_read_per_key(store: Store) -> None:
    """200 concurrent views of queued rows (one target and priority) cost one read of
    the nodes and one of the queue, not one each (a herd once the cache expires)."""
    roster = Roster(store, census_interval_s=1.0)
    calls = counted(store)
    reasons = await asyncio.gather(*(roster.why(queued()) for _ in range(200)))
    assert all(r is not None for r in reasons)
    assert calls[0] == 2
    await asyncio.gather(*(roster.why(queued(priority=5)) for _ in range(50)))
    assert calls[0] == 3  # a new key: one more read of the queue, the nodes reused


async def test_a_failed_read_is_not_kept(store: Store) -> None:
    """A read that raised is asked again by the next caller, not served from the cache."""
    roster = Roster(store, census_interval_s=1.0)
    execute = store.execute
    failures = [1]

    async def flaky(make: Callable[[], Any], *, write: bool = True) -> Any:
        if failures[0]:
            failures[0] -= 1
            raise RuntimeError("the database went away")
        return await execute(make, write=write)

    store.execute = flaky  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        await roster.nodes()
    assert await roster.nodes() == []
