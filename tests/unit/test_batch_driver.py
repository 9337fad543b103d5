"""BatchService and BatchDriver on the in-memory twins: ordering, resume, cancel.

No processes: a fake replica (:class:`FakeReplica`) claims chunk predictions from
the MemoryStore and runs them with the same pure code a runner uses
(``transform.records.run_chunk``), writing the chunk objects into MemoryStorage.
Waiting is on conditions with deadlines; nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from freight.batch.driver import BatchDriver
from freight.batch.records import run_chunk
from freight.batch.service import BatchService, JobRequest, doc_of
from freight.batch.spec import ChunkSpec, Options
from freight.config import Settings
from freight.errors import InvalidRequestError, NotFoundError
from freight.events import CompletionHub, WorkSignal
from freight.model import Batching, InputKind, Replicas
from freight.prediction import Completion, Prediction, Status
from freight.registry import ModelSpec
from freight.storage.memory import MemoryStorage
from freight.store.memory import MemoryStore

LIVENESS_S = 30.0
SPEC = ModelSpec(
    name="echo",
    ref="models:Echo",
    input_kind=InputKind.JSON,
    batching=Batching(),
    replicas=Replicas(),
    timeout_s=None,
    max_attempts=None,
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("FREIGHT_"):
            monkeypatch.delenv(name)


class FakeReplica:
    """Claims chunks of ``echo`` and runs them: echo, or fail records with "fail"."""

    def __init__(self, store: MemoryStore, storage: MemoryStorage, hub: CompletionHub) -> None:
        self.store, self.storage, self.hub = store, storage, hub
        self.ran: list[str] = []
        self.paused = False

    async def step(self) -> bool:
        if self.paused:
            return False
        rows = await self.store.claim("echo", 1, worker_id="r", lease_s=60, now=1.0)
        for row in rows:
            await self._run(row)
        return bool(rows)

    async def _run(self, row: Prediction) -> None:
        spec = ChunkSpec.from_json(row.input_json or "")
        data = await self.storage.get(row.input_key or "")

        def call(inputs: list[Any]) -> list[Any]:
            return [ValueError("asked") if x.get("fail") else x for x in inputs]

        done = run_chunk(spec, data, call)
        await self.storage.put(spec.output_key, done.output)
        if done.errors:
            await self.storage.put(spec.errors_key, done.errors)
        self.ran.append(row.id)
        completion = Completion(
            id=row.id,
            attempt=row.attempts,
            worker_id="r",
            status=Status.SUCCEEDED,
            finished_at=2.0,
            output_json=done.summary.to_json(),
            output_key=spec.output_key,
        )
        await self.store.complete([completion])
        self.hub.publish([row.id])


@pytest.fixture
async def parts(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    store, storage, hub, signal = MemoryStore(), MemoryStorage(), CompletionHub(), WorkSignal()
    await store.open()
    settings = Settings(project_dir=tmp_path, state_dir=tmp_path / "s", poll_interval_s=0.05)
    service = BatchService(settings, {"echo": SPEC}, store, storage, signal=signal)
    yield {
        "store": store,
        "storage": storage,
        "hub": hub,
        "signal": signal,
        "service": service,
        "replica": FakeReplica(store, storage, hub),
    }
    await store.close()


def driver(parts: dict[str, Any], worker: str = "d1") -> BatchDriver:
    return BatchDriver(
        parts["store"],
        parts["storage"],
        signal=parts["signal"],
        hub=parts["hub"],
        worker_id=worker,
        lease_s=60,
        poll_s=0.05,
    )


async def until(check: Callable[[], Awaitable[Any]], replica: FakeReplica) -> Any:
    """Run the fake replica until ``check`` holds (a liveness deadline, no sleeps)."""

    async def loop() -> Any:
        while True:
            value = await check()
            if value:
                return value
            if not await replica.step():
                await asyncio.sleep(0)  # let the driver run: a yield, not a wait

    return await asyncio.wait_for(loop(), LIVENESS_S)


async def start(parts: dict[str, Any], data: bytes, **options: Any) -> Prediction:
    await parts["storage"].put("in/data.jsonl", data)
    request = JobRequest(
        target="echo",
        input_uri="freight://in/data.jsonl",
        uploads=None,
        output_uri="freight://out/",
        options=Options(**options),
    )
    job: Prediction = await parts["service"].create(request)
    return job


def lines(records: list[Any]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


@contextlib.asynccontextmanager
async def running(d: BatchDriver) -> AsyncIterator[None]:
    task = asyncio.create_task(d.run())
    try:
        yield
    finally:
        d.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_output_in_order_with_many_chunks(parts: dict[str, Any]) -> None:
    records = [{"i": i} for i in range(500)]
    job = await start(parts, lines(records), records_per_call=7, concurrency=3)
    store, replica = parts["store"], parts["replica"]
    async with running(driver(parts)):
        row = await until(lambda: _terminal(store, job.id), replica)
    assert row.status == Status.SUCCEEDED
    out = (await parts["storage"].get("out/data.jsonl.out")).splitlines()
    assert [orjson.loads(x) for x in out] == records
    doc = doc_of(row)
    assert (doc.records_done, doc.records_failed) == (500, 0)
    assert len(replica.ran) > 3  # split into several chunks
    leftovers = [k for k in parts["storage"].keys() if "/chunks/" in k]  # noqa: SIM118
    assert not leftovers  # the chunk objects are cleaned up


async def test_a_resumed_job_does_not_rerun_finished_chunks(parts: dict[str, Any]) -> None:
    """A driver that takes over (its predecessor's lease lost) reuses the chunks
    already done and writes every record once."""
    records = [{"i": i} for i in range(300)]
    job = await start(parts, lines(records), records_per_call=10, concurrency=2)
    store, replica = parts["store"], parts["replica"]
    first = driver(parts, "d1")
    async with running(first):
        await until(lambda: _done_chunks(store, job.id, 2), replica)
        replica.paused = True
    # d1 is gone; its lease is handed over as the reaper would
    reaped = await store.reap(now=time.time() + 3600)
    assert job.id in reaped.requeued
    replica.paused = False
    before = list(replica.ran)
    async with running(driver(parts, "d2")):
        row = await until(lambda: _terminal(store, job.id), replica)
    assert (row.status, row.worker_id) == (Status.SUCCEEDED, "d2")
    assert 2 <= len(before) < len(replica.ran)
    out = (await parts["storage"].get("out/data.jsonl.out")).splitlines()
    assert [orjson.loads(x)["i"] for x in out] == list(range(300))
    assert not set(before) & set(replica.ran[len(before) :]), "a done chunk ran again"


async def test_record_failures_and_cancel(parts: dict[str, Any]) -> None:
    records = [{"i": i, "fail": i == 3} for i in range(20)]
    job = await start(parts, lines(records), on_error="continue")
    store, replica = parts["store"], parts["replica"]
    async with running(driver(parts)):
        row = await until(lambda: _terminal(store, job.id), replica)
    assert row.status == Status.SUCCEEDED
    errors = (await parts["storage"].get("out/data.jsonl.out.errors")).splitlines()
    assert [orjson.loads(e)["line"] for e in errors] == [4]

    queued = await start(parts, lines(records))
    canceled = await parts["service"].cancel(queued.id)
    assert canceled.status == Status.CANCELED


async def test_create_checks_the_request_whole(parts: dict[str, Any]) -> None:
    service: BatchService = parts["service"]

    def request(**kw: Any) -> JobRequest:
        base: dict[str, Any] = {
            "target": "echo",
            "input_uri": "freight://nothing/",
            "uploads": None,
            "output_uri": None,
            "options": Options(),
        }
        return JobRequest(**(base | kw))

    with pytest.raises(NotFoundError) as unknown:
        await service.create(request(target="nope"))
    assert unknown.value.code == "unknown_target"
    with pytest.raises(NotFoundError) as missing:
        await service.create(request())
    assert missing.value.code == "input_not_found"
    with pytest.raises(InvalidRequestError):
        await service.create(request(options=Options(output_filter="[[")))
    with pytest.raises(InvalidRequestError) as where:
        await service.create(request(input_uri="ftp://x/y.jsonl"))
    assert where.value.code == "invalid_location"
    assert await service.list() == []


async def _terminal(store: MemoryStore, job_id: str) -> Prediction | None:
    row = await store.get(job_id)
    return row if row is not None and row.status.terminal else None


async def _done_chunks(store: MemoryStore, job_id: str, n: int) -> bool:
    rows = [await store.get(f"{job_id}.0.{i}") for i in range(n)]
    return all(r is not None and r.status == Status.SUCCEEDED for r in rows)
