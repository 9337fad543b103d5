"""BatchService and BatchDriver on a real SQLite store and the in-memory object store.

No processes: a fake replica (:class:`FakeReplica`) claims chunk predictions (and
pipeline steps) from the store and runs them with the same pure code and key
scheme a runner uses (``batch.records.run_chunk``, ``keys.chunk_output_key``).
Waiting is on conditions with deadlines; nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from freight.batch.driver import STORAGE_RETRIES, BatchDriver
from freight.batch.options import Options
from freight.batch.records import run_chunk
from freight.batch.service import BatchService, JobRequest, doc_of
from freight.batch.spec import ChunkSpec
from freight.config import Settings
from freight.errors import InvalidRequestError, NotFoundError, StorageError
from freight.events import CompletionHub, WorkSignal
from freight.keys import chunk_base, chunk_errors_key, chunk_output_key
from freight.model import Batching, InputKind, Replicas
from freight.prediction import Completion, Kind, Prediction, Status
from freight.project import load_pipelines
from freight.registry import ModelSpec
from freight.storage.memory import MemoryStorage
from freight.store import open_store
from freight.store.base import Store

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
PIPELINES = {"relay": {"steps": {"a": {"model": "echo"}}, "output": "$steps.a.output"}}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("FREIGHT_"):
            monkeypatch.delenv(name)


def echo(inputs: list[Any]) -> list[Any]:
    """The fake model: echo, fail a record with "fail", add a column to a "wide" one."""
    return [
        ValueError("asked") if x.get("fail") else {**x, "more": "yes"} if x.get("wide") else x
        for x in inputs
    ]


class FlakyStorage(MemoryStorage):
    """The in-memory store, failing the next calls of the operations named in
    ``failing`` (a transient outage); ``forever`` fails every one."""

    def __init__(self) -> None:
        super().__init__()
        self.failing: dict[str, int] = {}
        self.forever = False

    def _trip(self, op: str, key: str) -> None:
        left = self.failing.get(op, 0)
        if self.forever or left:
            self.failing[op] = max(left - 1, 0)
            raise StorageError(f"object store failed on {key!r}: 503 Slow Down", key=key)

    async def put_stream(self, key: str, chunks: Any, **kw: Any) -> int:
        self._trip("put_stream", key)
        return await super().put_stream(key, chunks, **kw)

    def get_stream(self, key: str, *, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        self._trip("get_stream", key)
        return super().get_stream(key, chunk_size=chunk_size)


class FakeReplica:
    """Claims ``echo`` rows and runs them: a chunk as the runner does (objects fenced
    by attempt), a pipeline step by echoing its input."""

    def __init__(self, store: Store, storage: MemoryStorage, hub: CompletionHub) -> None:
        self.store, self.storage, self.hub = store, storage, hub
        self.ran: list[str] = []
        self.paused = False
        self.storage_failures = 0  # chunks to fail storage_error, as a runner would

    async def step(self) -> bool:
        if self.paused:
            return False
        rows = await self.store.claim("echo", 1, worker_id="r", lease_s=60, now=1.0)
        for row in rows:
            await self.finish(row, await self.run(row))
        return bool(rows)

    async def run(self, row: Prediction, call: Callable[[list[Any]], list[Any]] = echo) -> Any:
        """Run a claimed row (nothing written yet): ``(completion fields, objects)``."""
        if row.kind != Kind.CHUNK:
            return {"output_json": row.input_json}, {}
        if self.storage_failures:
            self.storage_failures -= 1
            fields = {
                "status": Status.FAILED,
                "error_code": "storage_error",
                "error_message": "503",
            }
            return fields, {}
        spec = ChunkSpec.from_json(row.input_json or "")
        done = run_chunk(spec, await self.storage.get(row.input_key or ""), call)
        output_key = chunk_output_key(spec.objects)
        objects = {output_key: done.output}
        if done.errors:
            objects[chunk_errors_key(output_key)] = done.errors
        return {"output_json": done.summary.to_json(), "output_key": output_key}, objects

    async def finish(self, row: Prediction, ran: Any) -> list[str]:
        await self.write(ran)
        return await self.complete(row, ran)

    async def write(self, ran: Any) -> None:
        for key, data in ran[1].items():
            await self.storage.put(key, data)

    async def complete(self, row: Prediction, ran: Any) -> list[str]:
        """Complete a run (fenced: a lost attempt's completion is refused)."""
        fields = dict(ran[0])
        self.ran.append(row.id)
        completion = Completion(
            id=row.id,
            attempt=row.attempts,
            worker_id="r",
            status=fields.pop("status", Status.SUCCEEDED),
            finished_at=2.0,
            **fields,
        )
        applied: list[str] = await self.store.complete([completion])
        self.hub.publish([row.id])
        return applied


@pytest.fixture
async def parts(tmp_path: Path, sqlite_url: str) -> AsyncIterator[dict[str, Any]]:
    store, storage, hub, signal = (
        open_store(sqlite_url),
        FlakyStorage(),
        CompletionHub(),
        WorkSignal(),
    )
    await store.open()
    (tmp_path / "freight.yaml").write_text(orjson.dumps({"pipelines": PIPELINES}).decode())
    settings = Settings(project_dir=tmp_path, state_dir=tmp_path / "s", poll_interval_s=0.05)
    pipelines = load_pipelines(tmp_path, {"echo": SPEC}, settings)
    service = BatchService(
        settings, {"echo": SPEC}, store, storage, signal=signal, pipelines=pipelines
    )
    yield {
        "store": store,
        "storage": storage,
        "hub": hub,
        "signal": signal,
        "service": service,
        "pipelines": pipelines,
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
        pipelines=parts["pipelines"],
        retry_s=0.001,
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


async def start(
    parts: dict[str, Any],
    data: bytes,
    name: str = "data.jsonl",
    target: str = "echo",
    **options: Any,
) -> Prediction:
    await parts["storage"].put(f"in/{name}", data)
    request = JobRequest(
        target=target,
        input_uri=f"freight://in/{name}",
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


async def finished(parts: dict[str, Any], job_id: str, worker: str = "d1") -> Prediction:
    """Drive the job to its end with one driver and the fake replica."""
    async with running(driver(parts, worker)):
        row: Prediction = await until(lambda: _terminal(parts["store"], job_id), parts["replica"])
    return row


async def test_output_in_order_with_many_chunks(parts: dict[str, Any]) -> None:
    """500 records in several chunks come out in input order; chunk objects are gone."""
    records = [{"i": i} for i in range(500)]
    job = await start(parts, lines(records), records_per_call=7, concurrency=3)
    row = await finished(parts, job.id)
    assert row.status == Status.SUCCEEDED
    out = (await parts["storage"].get("out/data.jsonl.out")).splitlines()
    assert [orjson.loads(x) for x in out] == records
    doc = doc_of(row)
    assert (doc.records_done, doc.records_failed) == (500, 0)
    assert len(parts["replica"].ran) > 3  # split into several chunks
    leftovers = [k for k in parts["storage"].keys() if "/chunks/" in k]  # noqa: SIM118
    assert not leftovers  # the chunk objects are cleaned up


async def test_a_resumed_job_does_not_rerun_finished_chunks(parts: dict[str, Any]) -> None:
    """A driver that takes over (its predecessor's lease lost) reuses the chunks
    already done and writes every record once."""
    records = [{"i": i} for i in range(300)]
    job = await start(parts, lines(records), records_per_call=10, concurrency=2)
    store, replica = parts["store"], parts["replica"]
    async with running(driver(parts, "d1")):
        await until(lambda: _done_chunks(store, job.id, 2), replica)
        replica.paused = True
    # d1 is gone; its lease is handed over as the reaper would
    reaped = await store.reap(now=time.time() + 3600, backoff_s=0.0)
    assert job.id in reaped.requeued
    replica.paused = False
    before = list(replica.ran)
    row = await finished(parts, job.id, "d2")
    assert (row.status, row.worker_id) == (Status.SUCCEEDED, "d2")
    assert 2 <= len(before) < len(replica.ran)
    out = (await parts["storage"].get("out/data.jsonl.out")).splitlines()
    assert [orjson.loads(x)["i"] for x in out] == list(range(300))
    assert not set(before) & set(replica.ran[len(before) :]), "a done chunk ran again"


async def test_record_failures_and_cancel(parts: dict[str, Any]) -> None:
    """A failed record goes to the error file (on_error=continue); a queued job cancels."""
    records = [{"i": i, "fail": i == 3} for i in range(20)]
    job = await start(parts, lines(records), on_error="continue")
    row = await finished(parts, job.id)
    assert row.status == Status.SUCCEEDED
    errors = (await parts["storage"].get("out/data.jsonl.out.errors")).splitlines()
    assert [orjson.loads(e)["line"] for e in errors] == [4]

    queued = await start(parts, lines(records))
    canceled = await parts["service"].cancel(queued.id)
    assert canceled.status == Status.CANCELED


def request(**kw: Any) -> JobRequest:
    base: dict[str, Any] = {
        "target": "echo",
        "input_uri": "freight://nothing/",
        "uploads": None,
        "output_uri": None,
        "options": Options(),
    }
    return JobRequest(**(base | kw))


async def test_create_checks_the_request_whole(parts: dict[str, Any]) -> None:
    """Unknown target, no input, a bad filter, a location outside the store: 4xx."""
    service: BatchService = parts["service"]
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


async def test_jobs_list_newest_first_and_by_target(parts: dict[str, Any]) -> None:
    """Jobs (rows of kind batch, no others) list newest first, filtered by target."""
    first = await start(parts, lines([{"i": 1}]))
    second = await start(parts, lines([{"i": 2}]), "b.jsonl", target="relay")
    service: BatchService = parts["service"]
    assert [j.id for j in await service.list()] == [second.id, first.id]
    assert [j.id for j in await service.list(target="echo")] == [first.id]
    assert [j.id for j in await service.list(after_id=second.id)] == [first.id]


@pytest.mark.parametrize(
    ("field", "uri"),
    [
        ("output_uri", "freight://batch/other/output/"),
        ("output_uri", "freight://inputs/"),
        ("output_uri", "freight://outputs"),
        ("output_uri", "freight://"),
        ("input_uri", "freight://batch/other/chunks/"),
        ("input_uri", "freight://batch/other/"),
    ],
)
async def test_no_job_writes_or_reads_among_freights_own_objects(
    parts: dict[str, Any], field: str, uri: str
) -> None:
    """An output in (or above) inputs/, outputs/, batch/, or an input of a job's working
    objects, is refused at create: 400 invalid_location, nothing created."""
    await parts["storage"].put("in/data.jsonl", b"{}\n")
    await parts["storage"].put("batch/other/chunks/0-0.in", b"{}\n")
    changes = {"input_uri": "freight://in/data.jsonl", field: uri}
    with pytest.raises(InvalidRequestError) as refused:
        await parts["service"].create(request(**changes))
    assert refused.value.code == "invalid_location"
    assert await parts["service"].list() == []


async def test_a_jobs_outputs_are_the_next_jobs_input(parts: dict[str, Any]) -> None:
    """Listing a job's output prefix as an input reads its outputs (``<name>.out``), not
    its manifest nor its error files: jobs chain."""
    records = [{"i": i, "fail": i == 2} for i in range(10)]
    first = await finished(parts, (await start(parts, lines(records), on_error="continue")).id)
    assert first.status == Status.SUCCEEDED
    assert {"out/manifest.json", "out/data.jsonl.out.errors"} <= set(parts["storage"].keys())
    second = await parts["service"].create(
        request(input_uri="freight://out/", output_uri="freight://again/")
    )
    row = await finished(parts, second.id)
    assert row.status == Status.SUCCEEDED
    assert [(f.name, f.output) for f in doc_of(row).files or []] == [
        ("data.jsonl.out", "data.jsonl.out.out")
    ]
    chained = (await parts["storage"].get("again/data.jsonl.out.out")).splitlines()
    assert [orjson.loads(x)["i"] for x in chained] == [i for i in range(10) if i != 2]


async def test_a_gzip_input_has_an_uncompressed_output_named_without_gz(
    parts: dict[str, Any],
) -> None:
    """``rows.jsonl.gz`` is written uncompressed as ``rows.jsonl.out``; beside a plain
    ``rows.jsonl`` (which takes that name) it keeps ``.gz``: no output overwrites another."""
    import gzip

    data = lines([{"i": i} for i in range(5)])
    await parts["storage"].put("in/rows.jsonl.gz", gzip.compress(data))
    one = await parts["service"].create(request(input_uri="freight://in/rows.jsonl.gz"))
    row = await finished(parts, one.id)
    (output,) = doc_of(row).outputs
    assert output.output_key == f"batch/{one.id}/output/rows.jsonl.out"
    assert await parts["storage"].get(output.output_key) == data
    await parts["storage"].put("in/rows.jsonl", data)
    both = await parts["service"].create(
        request(input_uri="freight://in/", output_uri="freight://o/")
    )
    row = await finished(parts, both.id)
    assert sorted(o.output_key for o in doc_of(row).outputs) == [
        "o/rows.jsonl.gz.out",
        "o/rows.jsonl.out",
    ]


async def test_csv_columns_are_the_union_over_the_whole_file(parts: dict[str, Any]) -> None:
    """A column that only later records' outputs have is in the header; every row is
    aligned to it (empty where a record's output had no such key)."""
    rows = "".join(f"{i},{int(i >= 150)}\n" for i in range(200))
    job = await start(parts, ("i,wide\n" + rows).encode(), "t.csv", records_per_call=8)
    row = await finished(parts, job.id)
    assert row.status == Status.SUCCEEDED
    text = (await parts["storage"].get("out/t.csv.out")).decode()
    table = list(csv.DictReader(io.StringIO(text)))
    assert text.startswith("i,wide,more\n") and len(table) == 200
    assert [r["more"] for r in table] == [""] * 150 + ["yes"] * 50
    assert [r["i"] for r in table] == [str(i) for i in range(200)]


async def test_a_zombie_attempt_never_overwrites_the_winners_output(
    parts: dict[str, Any],
) -> None:
    """A chunk attempt that lost its lease and still runs writes objects of its own and
    its completion is refused: the output holds the winner's records only."""
    store, replica = parts["store"], parts["replica"]
    job = await start(parts, lines([{"i": i} for i in range(5)]))
    replica.paused = True
    async with running(driver(parts)):

        async def claimed() -> list[Prediction]:
            rows = await store.claim("echo", 1, worker_id="r", lease_s=60, now=1.0)
            return rows

        (zombie,) = await until(claimed, replica)
        reaped = await store.reap(now=100.0, backoff_s=0.0)  # its lease (61.0) expired: requeued
        assert reaped.requeued == [zombie.id]
        (winner,) = await until(claimed, replica)
        assert winner.attempts == zombie.attempts + 1
        won = await replica.run(winner)
        late = await replica.run(zombie, lambda xs: [{"zombie": True} for _ in xs])
        await replica.write(won)
        await replica.write(late)  # after the winner's: the last write
        assert await replica.complete(winner, won) == [winner.id]
        assert await replica.complete(zombie, late) == []
        row = await until(lambda: _terminal(store, job.id), replica)
    assert row.status == Status.SUCCEEDED
    out = [orjson.loads(x) for x in (await parts["storage"].get("out/data.jsonl.out")).splitlines()]
    assert out == [{"i": i} for i in range(5)]
    assert won[0]["output_key"] != late[0]["output_key"]


async def test_a_transient_storage_error_does_not_fail_the_job(parts: dict[str, Any]) -> None:
    """The object store failing for a while (reading the input, writing the output, a
    chunk's objects) resumes the job after a back-off: it succeeds, every record once."""
    storage, replica = parts["storage"], parts["replica"]
    records = [{"i": i} for i in range(50)]
    job = await start(parts, lines(records), records_per_call=5)
    storage.failing = {"get_stream": 2, "put_stream": 2}
    replica.storage_failures = 2
    row = await finished(parts, job.id)
    assert row.status == Status.SUCCEEDED, row.error_message
    out = (await storage.get("out/data.jsonl.out")).splitlines()
    assert [orjson.loads(x) for x in out] == records
    assert not storage.failing["get_stream"] and not storage.failing["put_stream"]
    assert f"{job.id}.0.0.r1" in replica.ran  # a storage_error chunk was queued again


async def test_a_job_whose_store_keeps_failing_is_given_back(parts: dict[str, Any]) -> None:
    """After STORAGE_RETRIES failures in a row without progress the driver requeues the
    job (its attempt counted) instead of failing it."""
    store, storage = parts["store"], parts["storage"]
    job = await start(parts, lines([{"i": 1}]))
    storage.forever = True

    async def retried() -> Prediction | None:
        row = await store.get(job.id)
        return row if row is not None and row.attempts >= 2 else None

    async with running(driver(parts)):
        row = await until(retried, parts["replica"])
    assert not row.status.terminal
    assert STORAGE_RETRIES >= 1


async def test_a_pipeline_chunk_is_done_only_once_its_summary_is_written(
    parts: dict[str, Any],
) -> None:
    """A resumed pipeline job does not take a chunk whose output was written without
    its summary (a crash between the two writes) for finished: it runs it again."""
    records = [{"i": i} for i in range(4)]
    job = await start(parts, lines(records), target="relay")
    base = chunk_base(job.id, 0, 0)
    for key in (f"{base}.out", chunk_output_key(base)):  # outputs of a crashed attempt
        await parts["storage"].put(key, b'{"stale": true}\n')
    row = await finished(parts, job.id)
    assert row.status == Status.SUCCEEDED, row.error_message
    out = (await parts["storage"].get("out/data.jsonl.out")).splitlines()
    assert [orjson.loads(x) for x in out] == records


async def _terminal(store: Store, job_id: str) -> Prediction | None:
    row = await store.get(job_id)
    return row if row is not None and row.status.terminal else None


async def _done_chunks(store: Store, job_id: str, n: int) -> bool:
    rows = [await store.get(f"{job_id}.0.{i}") for i in range(n)]
    return all(r is not None and r.status == Status.SUCCEEDED for r in rows)
