"""ModelWorker's claim loop against fake replicas, an in-memory store and storage."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest

from freight.agent import worker as worker_module
from freight.agent.replica import ReplicaError, ReplicaLoadError, RunnerCommand
from freight.agent.worker import ModelWorker, Persist
from freight.events import WorkSignal
from freight.ledger import UsageLine, hour_of
from freight.model import Batching, Replicas, Resources
from freight.prediction import Completion, Prediction, Status
from freight.registry import ModelSpec
from freight.runner.protocol import Batch, Inline, LoadFailed, Result
from freight.storage.memory import MemoryStorage
from freight.store import usage
from freight.store.memory import MemoryStore

DEADLINE_S = 10.0
T = TypeVar("T")
_ids = itertools.count()

Behaviour = Callable[["FakeReplica", Batch], Awaitable[Result]]


async def echo(replica: FakeReplica, batch: Batch) -> Result:
    """Every input back as its output."""
    return Result(tuple(Inline(i.id, i.input_json or "null") for i in batch.items), 1.0)


async def hang(replica: FakeReplica, batch: Batch) -> Result:
    """Never answers: returns only by being killed."""
    await replica.dead.wait()
    raise ReplicaError("killed")


async def crash(replica: FakeReplica, batch: Batch) -> Result:
    """The runner dies mid-batch."""
    await replica.kill()
    raise ReplicaError("the runner exited")


def gated(gate: asyncio.Event) -> Behaviour:
    """Answers like echo once ``gate`` is set."""

    async def run(replica: FakeReplica, batch: Batch) -> Result:
        await gate.wait()
        return await echo(replica, batch)

    return run


@dataclass
class Script:
    """What the fake replicas do: ``runs`` in order (the last repeats), and how many
    starts fail before one loads."""

    runs: list[Behaviour] = field(default_factory=lambda: [echo])
    failing_loads: int = 0
    replicas: list[FakeReplica] = field(default_factory=list)
    batches: list[Batch] = field(default_factory=list)
    running: asyncio.Event = field(default_factory=asyncio.Event)

    def next_run(self) -> Behaviour:
        return self.runs.pop(0) if len(self.runs) > 1 else self.runs[0]


class FakeReplica:
    """A replica without a process, following the script."""

    def __init__(self, name: str, script: Script) -> None:
        self.name = name
        self.load_ms: float | None = None
        self.script = script
        self.dead = asyncio.Event()
        self.started = False
        self.ready = False
        self.stopped = False

    @property
    def alive(self) -> bool:
        return self.started and not self.dead.is_set()

    @property
    def serving(self) -> bool:
        return self.ready and self.alive

    async def start(self) -> None:
        self.started = True
        if self.script.failing_loads > 0:
            self.script.failing_loads -= 1
            await self.kill()
            raise ReplicaLoadError(LoadFailed("load_error", "RuntimeError: weights missing"))
        self.ready, self.load_ms = True, 1.0

    async def run(self, batch: Batch) -> Result:
        self.script.batches.append(batch)
        self.script.running.set()
        return await self.script.next_run()(self, batch)

    async def kill(self) -> None:
        self.dead.set()

    async def stop(self, grace_s: float = 5.0) -> None:
        self.stopped = True
        await self.kill()


@dataclass
class Harness:
    store: MemoryStore
    storage: MemoryStorage
    signal: WorkSignal
    script: Script
    worker: ModelWorker
    published: list[str]
    queued: list[str] = field(default_factory=list)

    async def submit(self, n: int = 0, timeout_s: float = 60.0, max_attempts: int = 3) -> str:
        now = time.time()
        prediction_id = f"p{next(_ids):06d}"
        await self.store.create(
            Prediction(
                id=prediction_id,
                target="m",
                status=Status.QUEUED,
                created_at=now,
                queued_at=now,
                input_json=orjson.dumps({"n": n}).decode(),
                input_content_type="application/json",
                timeout_s=timeout_s,
                max_attempts=max_attempts,
            )
        )
        self.signal.notify("m")
        return prediction_id

    async def row(self, prediction_id: str) -> Prediction:
        found = await self.store.get(prediction_id)
        assert found is not None
        return found

    async def until(self, prediction_id: str, *statuses: Status) -> Prediction:
        """The prediction once it is in one of ``statuses`` (fails past the deadline)."""
        return await until(lambda: self._in(prediction_id, statuses))

    async def _in(self, prediction_id: str, statuses: tuple[Status, ...]) -> Prediction | None:
        row = await self.row(prediction_id)
        return row if row.status in statuses else None


async def until(check: Callable[[], Awaitable[T | None]]) -> T:
    """Poll an async condition until it gives a value; fail past the deadline."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.005)
    raise AssertionError(f"condition not met within {DEADLINE_S}s")


def make_harness(
    script: Script,
    tmp_path: Path,
    *,
    max_load_attempts: int = 5,
    max_size: int = 4,
    gpus: int = 0,
    replicas: int = 1,
    poll_s: float = 0.02,
) -> Harness:
    store, storage, signal = MemoryStore(), MemoryStorage(), WorkSignal()
    published: list[str] = []
    spec = ModelSpec(
        name="m",
        ref="models:M",
        input_kind="json",
        batching=Batching(max_size=max_size),
        replicas=Replicas(),
        timeout_s=None,
        max_attempts=None,
        resources=Resources(gpus=gpus),
    )

    def factory(name: str) -> FakeReplica:
        replica = FakeReplica(name, script)
        script.replicas.append(replica)
        return replica

    worker = ModelWorker(
        spec,
        RunnerCommand("models:M", tmp_path, "memory://", 1024),
        store=store,
        storage=storage,
        signal=signal,
        worker_id="w1",
        lease_s=30.0,
        poll_interval_s=poll_s,
        replicas=replicas,
        on_finished=Persist(store, published.extend, lambda: False),
        max_load_attempts=max_load_attempts,
        make_replica=factory,
    )
    return Harness(store, storage, signal, script, worker, published)


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Load retries come quickly (the back-off policy itself is not under test)."""
    monkeypatch.setattr(worker_module, "BACKOFF_START_S", 0.01)
    monkeypatch.setattr(worker_module, "LOAD_BACKOFF_MAX_S", 0.02)


Start = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def start(tmp_path: Path, fast_backoff: None) -> AsyncIterator[Start]:
    """Start a worker on a fresh store following a ``Script``; all drained at teardown."""
    started: list[Harness] = []

    async def make(script: Script | None = None, queued: int = 0, **kw: Any) -> Harness:
        """``queued``: predictions (inputs 1, 2, ...) queued before the worker starts, so
        that its first claim takes them together (``Harness.queued``: their ids)."""
        harness = make_harness(script or Script(), tmp_path, **kw)
        await harness.store.open()
        harness.queued = [await harness.submit(n) for n in range(1, queued + 1)]
        harness.worker.start()
        started.append(harness)
        return harness

    yield make
    for harness in started:
        await harness.worker.drain(0)


async def test_success_stores_outputs_and_completes(start: Start) -> None:
    """A queued prediction runs on the replica: succeeded, output inline and stored."""
    running = await start()
    prediction_id = await running.submit(7)
    done = await running.until(prediction_id, Status.SUCCEEDED, Status.FAILED)
    assert done.status == Status.SUCCEEDED
    assert (done.output_json, done.output_key, done.batch_size) == (
        '{"n":7}',
        f"outputs/{prediction_id}",
        1,
    )
    assert await running.storage.get(f"outputs/{prediction_id}") == b'{"n":7}'
    assert prediction_id in running.published


async def test_queued_predictions_are_batched(start: Start) -> None:
    """Predictions queued while the replica is busy are claimed together as one batch."""
    gate = asyncio.Event()
    running = await start(Script(runs=[gated(gate), echo]))
    first = await running.submit(0)
    await asyncio.wait_for(running.script.running.wait(), DEADLINE_S)
    ids = [await running.submit(n) for n in range(1, 4)]
    gate.set()
    assert (await running.until(first, Status.SUCCEEDED)).batch_size == 1
    rows = [await running.until(i, Status.SUCCEEDED) for i in ids]
    assert [r.batch_size for r in rows] == [3, 3, 3]
    assert [len(b.items) for b in running.script.batches] == [1, 3]


async def test_idle_slots_claim_in_turn(start: Start) -> None:
    """With two idle replicas, each prediction costs one claim, not one per slot: the
    slot whose turn it is waits for the signal and claims, the other waits its turn
    (no poll in the way: the interval is a minute)."""
    running = await start(replicas=2, poll_s=60.0)
    claims: list[int] = []
    claim = running.store.claim

    async def spy(target: str, limit: int, **kw: Any) -> list[Prediction]:
        rows = await claim(target, limit, **kw)
        claims.append(len(rows))
        return rows

    running.store.claim = spy  # type: ignore[method-assign]
    await running.until(await running.submit(0), Status.SUCCEEDED)
    claims.clear()
    for n in range(1, 4):
        await running.until(await running.submit(n), Status.SUCCEEDED)
    assert claims == [1, 1, 1]


async def test_timeout_kills_the_replica_and_fails(start: Start) -> None:
    """A batch past its timeout fails `timeout`, its replica is killed and replaced."""
    running = await start(Script(runs=[hang, echo]))
    prediction_id = await running.submit(timeout_s=0.05)
    done = await running.until(prediction_id, Status.FAILED, Status.SUCCEEDED)
    assert (done.status, done.error_code) == (Status.FAILED, "timeout")
    assert running.script.replicas[0].dead.is_set()
    after = await running.submit()
    assert (await running.until(after, Status.SUCCEEDED)).status == Status.SUCCEEDED
    assert len(running.script.replicas) == 2


async def test_a_crash_requeues_and_counts_the_attempt(start: Start) -> None:
    """A replica dying mid-batch requeues the prediction, charging the attempt; a fresh
    replica then runs it."""
    running = await start(Script(runs=[crash, echo]))
    prediction_id = await running.submit()
    done = await running.until(prediction_id, Status.SUCCEEDED, Status.FAILED)
    assert (done.status, done.attempts) == (Status.SUCCEEDED, 2)
    assert len(running.script.replicas) == 2


async def ledger_of(store: MemoryStore) -> list[UsageLine]:
    """The ledger's lines of this hour, per status."""
    now = time.time()
    return await store.execute(
        lambda: usage.report(
            start=hour_of(now) - 3600, end=hour_of(now) + 3600, groups=("status",)
        ),
        write=False,
    )


async def test_a_batch_charges_its_wall_time_to_its_predictions(start: Start) -> None:
    """Three predictions run as one batch on a replica with 2 GPUs: each completion
    carries a third of the batch's wall time, the GPUs and its cold start, and the
    ledger line written with them sums to the batch's wall time."""
    running = await start(queued=3, gpus=2)
    recorded: list[Completion] = []
    complete = running.store.complete

    async def spy(completions: Any) -> list[str]:
        recorded.extend(completions)
        return await complete(completions)

    running.store.complete = spy  # type: ignore[method-assign]
    rows = [await running.until(i, Status.SUCCEEDED) for i in running.queued]
    assert [r.batch_size for r in rows] == [3, 3, 3]
    assert len(recorded) == 3
    shares = {c.compute_s for c in recorded}
    assert len(shares) == 1 and shares.pop() > 0  # the batch's wall time, 1/3 each
    assert {c.gpus for c in recorded} == {2}
    assert all(c.cold_start_s >= 0 for c in recorded)
    (line,) = await ledger_of(running.store)
    assert (line.status, line.count) == ("succeeded", 3)
    assert line.compute_s == pytest.approx(sum(c.compute_s for c in recorded))
    assert line.gpu_s == pytest.approx(2 * line.compute_s)
    assert line.cold_start_s == pytest.approx(sum(c.cold_start_s for c in recorded))
    assert line.queue_s == pytest.approx(
        sum((r.started_at or 0) - (r.queued_at or 0) for r in rows)
    )


async def test_a_crash_mid_batch_charges_only_the_rerun(start: Start) -> None:
    """A replica dying mid-batch writes no line (its predictions are requeued, not
    ended); the rerun that ends them writes one line each."""
    running = await start(Script(runs=[crash, echo]), queued=2)
    rows = [await running.until(i, Status.SUCCEEDED) for i in running.queued]
    assert [r.attempts for r in rows] == [2, 2]
    (line,) = await ledger_of(running.store)
    assert (line.status, line.count) == ("succeeded", 2)


async def test_crashes_exhaust_the_attempts(start: Start) -> None:
    """A prediction whose replica dies on every attempt fails attempts_exhausted."""
    running = await start(Script(runs=[crash]))
    prediction_id = await running.submit(max_attempts=2)
    done = await running.until(prediction_id, Status.FAILED)
    assert (done.error_code, done.attempts) == ("attempts_exhausted", 2)


async def test_cancel_interrupts_without_charging_neighbours(start: Start) -> None:
    """Canceling a running prediction kills its replica: it stays canceled, and its batch
    neighbour is requeued without an attempt charged, then succeeds."""
    running = await start(Script(runs=[hang, echo]), queued=2)
    canceled, neighbour = running.queued
    await asyncio.wait_for(running.script.running.wait(), DEADLINE_S)
    assert len(running.script.batches[0].items) == 2
    await running.store.cancel(canceled, now=time.time())
    await running.worker.interrupt({canceled})
    done = await running.until(neighbour, Status.SUCCEEDED)
    assert done.attempts == 1
    assert (await running.row(canceled)).status == Status.CANCELED
    assert running.script.replicas[0].dead.is_set()


async def test_drain_lets_running_work_finish_then_stops_claiming(start: Start) -> None:
    """A drain waits for the running batch within the grace, then claims nothing more
    and stops the replica."""
    gate = asyncio.Event()
    running = await start(Script(runs=[gated(gate)]))
    prediction_id = await running.submit()
    await asyncio.wait_for(running.script.running.wait(), DEADLINE_S)
    drain = asyncio.create_task(running.worker.drain(DEADLINE_S))
    await until(lambda: _true(running.worker.stopping))
    gate.set()
    await asyncio.wait_for(drain, DEADLINE_S)
    assert (await running.row(prediction_id)).status == Status.SUCCEEDED
    late = await running.submit()
    assert (await running.row(late)).status == Status.QUEUED
    assert running.script.replicas[0].stopped
    assert len(running.script.batches) == 1


async def test_drain_past_the_grace_requeues_without_charging(start: Start) -> None:
    """Work still running when the grace ends is killed and requeued, attempt given back."""
    running = await start(Script(runs=[hang]))
    prediction_id = await running.submit()
    await asyncio.wait_for(running.script.running.wait(), DEADLINE_S)
    await asyncio.wait_for(running.worker.drain(0), DEADLINE_S)
    row = await running.row(prediction_id)
    assert (row.status, row.attempts, row.worker_id) == (Status.QUEUED, 0, None)


async def test_load_failures_make_the_model_unavailable(start: Start) -> None:
    """After max_load_attempts failed loads, queued predictions and those queued later
    fail model_unavailable with the load error; a successful load ends it."""
    running = await start(Script(failing_loads=1_000_000), max_load_attempts=2)
    queued = await running.submit(1)
    done = await running.until(queued, Status.FAILED)
    assert done.error_code == "model_unavailable"
    assert "weights missing" in (done.error_message or "")
    assert done.batch_size is None
    detail = orjson.loads(done.error_detail or "{}")
    assert detail["load_error"]["message"] == "RuntimeError: weights missing"
    assert running.worker.unavailable and running.worker.load_error is not None
    assert running.worker.health.failures >= 2
    later = await running.submit(2)
    assert (await running.until(later, Status.FAILED)).error_code == "model_unavailable"
    running.script.failing_loads = 0
    await until(lambda: _true(not running.worker.unavailable))
    assert running.worker.load_error is None
    healthy = await running.submit(3)
    assert (await running.until(healthy, Status.SUCCEEDED)).output_json == '{"n":3}'


async def test_fewer_failed_loads_than_the_limit_keep_the_queue(start: Start) -> None:
    """Below max_load_attempts, queued predictions wait and run once a load succeeds."""
    running = await start(Script(failing_loads=3), max_load_attempts=5)
    prediction_id = await running.submit()
    done = await running.until(prediction_id, Status.SUCCEEDED, Status.FAILED)
    assert (done.status, done.attempts) == (Status.SUCCEEDED, 1)
    assert len(running.script.replicas) == 4


async def test_zero_never_gives_up_and_drain_interrupts_the_back_off(
    start: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With max_load_attempts 0 the queue waits however often loading fails, and a drain
    ends a slot's back-off sleep at once."""
    monkeypatch.setattr(worker_module, "BACKOFF_START_S", 3600.0)
    monkeypatch.setattr(worker_module, "LOAD_BACKOFF_MAX_S", 3600.0)
    running = await start(Script(failing_loads=1_000_000), max_load_attempts=0)
    prediction_id = await running.submit()
    await until(lambda: _true(running.worker.load_error is not None))
    await asyncio.wait_for(running.worker.drain(DEADLINE_S), DEADLINE_S)
    assert not running.worker.unavailable
    assert (await running.row(prediction_id)).status == Status.QUEUED


async def _true(value: bool) -> bool:
    return value


def counting_claims(
    harness: Harness, after: Callable[[], Awaitable[None]] | None = None
) -> list[int]:
    """Count the worker's claims (how many rows each took); ``after``: run right after
    each claim returns, before the worker goes on."""
    claims: list[int] = []
    claim = harness.store.claim

    async def counted(*args: Any, **kwargs: Any) -> list[Prediction]:
        rows = await claim(*args, **kwargs)
        claims.append(len(rows))
        if after is not None:
            await after()
        return rows

    harness.store.claim = counted  # type: ignore[method-assign]
    return claims


async def parked(harness: Harness) -> bool:
    return all(slot.parked for slot in harness.worker.slots)


async def test_no_claim_after_a_batch_that_took_the_last_queued_row(start: Start) -> None:
    """A slot whose claim left nothing queued waits for a notification after its batch
    instead of claiming again to find nothing (the poll is an hour away)."""
    running = await start(poll_s=3600.0)
    claims = counting_claims(running)
    await until(lambda: parked(running))
    first = await running.submit(1)
    await running.until(first, Status.SUCCEEDED)
    await until(lambda: parked(running))
    second = await running.submit(2)
    await running.until(second, Status.SUCCEEDED)
    await until(lambda: parked(running))
    assert claims == [0, 1, 1]  # the first, at start; then one per row, none after a batch


async def test_row_queued_while_the_worker_decides_not_to_claim_still_wakes_it(
    start: Start,
) -> None:
    """A row queued (and notified) after the claim that found the queue empty, before the
    slot waits, is claimed at once: the notification is counted, not lost."""
    running = await start(poll_s=3600.0)
    queued: list[str] = []

    async def queue_one_more() -> None:
        if not queued:
            queued.append(await running.submit(5))

    claims = counting_claims(running, after=queue_one_more)
    await until(lambda: parked(running))  # its first claim found nothing; one was queued
    done = await running.until(queued[0], Status.SUCCEEDED)
    assert done.output_json == '{"n":5}'
    assert claims[:2] == [0, 1]
