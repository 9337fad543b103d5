"""The agent's duties that need no runner: retention purge, reaping, orphan recovery,
and the supervisor that keeps every duty running.

On the in-memory fakes, with no models (so no runner process is ever started).
The agent is built as ``server.py`` builds it; its periodic duties are swept one
``tick()`` per call here, instead of waiting for their timers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from freight.agent import Agent
from freight.config import Settings
from freight.errors import StorageError
from freight.events import CompletionHub, WorkSignal
from freight.ids import new_id
from freight.keys import input_key, output_key
from freight.prediction import Prediction, Status
from freight.storage.memory import MemoryStorage
from freight.store.memory import MemoryStore

RETENTION_S = 3600.0


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No FREIGHT_* variable of the calling shell leaks into the settings."""
    import os

    for name in list(os.environ):
        if name.startswith("FREIGHT_"):
            monkeypatch.delenv(name)


@pytest.fixture
async def store() -> AsyncIterator[MemoryStore]:
    s = MemoryStore()
    await s.open()
    yield s
    await s.close()


def make_agent(
    tmp_path: Path,
    store: MemoryStore,
    storage: MemoryStorage,
    *,
    hub: CompletionHub | None = None,
    **overrides: object,
) -> Agent:
    values: dict[str, object] = {
        "project_dir": tmp_path,
        "state_dir": tmp_path / "state",
        "retention_s": RETENTION_S,
    }
    settings = Settings(**(values | overrides))  # type: ignore[arg-type]
    return Agent(
        settings,
        {},
        store,
        storage,
        signal=WorkSignal(),
        hub=hub or CompletionHub(),
        storage_url="memory://",
    )


def finished_long_ago(**fields: object) -> Prediction:
    """A prediction that succeeded well past the retention period."""
    at = time.time() - 2 * RETENTION_S
    return Prediction(
        id=new_id(),
        target="m",
        status=Status.SUCCEEDED,
        created_at=at,
        finished_at=at,
        **fields,  # type: ignore[arg-type]
    )


async def with_objects(store: MemoryStore, storage: MemoryStorage) -> Prediction:
    """A stored old prediction whose input and output are freight's own objects."""
    row = finished_long_ago()
    row.input_key, row.output_key = input_key(row.id), output_key(row.id)
    await storage.put(row.input_key, b"in")
    await storage.put(row.output_key, b"out")
    await store.create(row)
    return row


class RecordingStorage(MemoryStorage):
    """Storage that notes, at each delete, whether the store still had the row."""

    def __init__(self, store: MemoryStore) -> None:
        super().__init__()
        self.store = store
        self.deleted: list[tuple[str, bool]] = []

    async def delete(self, key: str) -> None:
        prediction_id = key.rpartition("/")[2]
        self.deleted.append((key, await self.store.get(prediction_id) is not None))
        await super().delete(key)


class FlakyStorage(MemoryStorage):
    """Storage whose deletes of the given keys fail."""

    def __init__(self, failing: set[str]) -> None:
        super().__init__()
        self.failing = failing

    async def delete(self, key: str) -> None:
        if key in self.failing:
            raise StorageError(f"cannot delete {key!r}", key=key)
        await super().delete(key)


async def test_purge_deletes_rows_before_their_objects(tmp_path: Path, store: MemoryStore) -> None:
    """Retention deletes the row first, then its input and output objects."""
    storage = RecordingStorage(store)
    row = await with_objects(store, storage)
    await make_agent(tmp_path, store, storage).purger.tick()
    assert await store.get(row.id) is None
    assert sorted(storage.deleted) == [(input_key(row.id), False), (output_key(row.id), False)]
    assert storage.keys() == []


async def test_purge_never_deletes_the_callers_input_uri_object(
    tmp_path: Path, store: MemoryStore
) -> None:
    """A purged prediction's input named by input_uri is the caller's and stays."""
    storage = MemoryStorage()
    await storage.put("caller/data.csv", b"a,b\n")
    row = finished_long_ago(input_key="caller/data.csv", output_key=None)
    await store.create(row)
    await make_agent(tmp_path, store, storage).purger.tick()
    assert await store.get(row.id) is None
    assert storage.keys() == ["caller/data.csv"]


async def test_purge_keeps_recent_and_live_predictions(tmp_path: Path, store: MemoryStore) -> None:
    """Only predictions finished more than retention_s ago are purged."""
    storage = MemoryStorage()
    old = await with_objects(store, storage)
    recent = finished_long_ago()
    recent.finished_at = time.time()
    live = Prediction(id=new_id(), target="m", status=Status.QUEUED, created_at=0.0)
    for row in (recent, live):
        await store.create(row)
    await make_agent(tmp_path, store, storage).purger.tick()
    assert await store.get(old.id) is None
    assert [p.id for p in await store.list()] == sorted([recent.id, live.id], reverse=True)


async def test_failing_delete_is_logged_and_purge_goes_on(
    tmp_path: Path, store: MemoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    """An object that cannot be deleted is logged; the other objects and every later
    batch of rows are still purged."""
    rows = [finished_long_ago() for _ in range(5)]
    failing = {input_key(rows[0].id)}
    storage = FlakyStorage(failing)
    for row in rows:
        row.input_key, row.output_key = input_key(row.id), output_key(row.id)
        await storage.put(row.input_key, b"in")
        await storage.put(row.output_key, b"out")
        await store.create(row)
    agent = make_agent(tmp_path, store, storage, retention_batch=2)
    with caplog.at_level(logging.WARNING, logger="freight.agent"):
        await agent.purger.tick()
    assert await store.list() == []
    assert storage.keys() == sorted(failing)
    assert any(input_key(rows[0].id) in r.getMessage() for r in caplog.records)


async def test_purge_does_nothing_without_retention(tmp_path: Path, store: MemoryStore) -> None:
    """retention_s of 0 keeps every finished prediction and its objects."""
    storage = MemoryStorage()
    row = await with_objects(store, storage)
    await make_agent(tmp_path, store, storage, retention_s=0).purger.tick()
    assert await store.get(row.id) is not None
    assert storage.keys() == sorted([input_key(row.id), output_key(row.id)])


async def test_reap_publishes_expired_predictions(tmp_path: Path, store: MemoryStore) -> None:
    """A reap sweep that expires a prediction resolves the waiters of that prediction."""
    hub = CompletionHub()
    row = Prediction(
        id=new_id(),
        target="m",
        status=Status.QUEUED,
        created_at=0.0,
        queued_at=0.0,
        expires_at=1.0,
    )
    await store.create(row)
    waiter = hub.subscribe(row.id)
    await make_agent(tmp_path, store, MemoryStorage(), hub=hub).reaper.tick()
    assert waiter.done()
    got = await store.get(row.id)
    assert got is not None and got.status is Status.EXPIRED


async def test_start_requeues_orphans_of_an_exclusive_store(
    tmp_path: Path, store: MemoryStore
) -> None:
    """On an exclusive store, start() requeues what a previous run left running, counting
    the attempt the crash cut short."""
    row = Prediction(id=new_id(), target="m", status=Status.QUEUED, created_at=0.0)
    await store.create(row)
    await store.claim("m", 1, worker_id="dead", lease_s=3600, now=time.time())
    agent = make_agent(tmp_path, store, MemoryStorage())
    await agent.start()
    try:
        got = await store.get(row.id)
        assert got is not None
        assert (got.status, got.worker_id, got.attempts) == (Status.QUEUED, None, 1)
    finally:
        await agent.drain(0)
