"""The agent's duties run as named, supervised tasks: a crashed duty is logged with its
traceback and restarted, never silently dead; a duty that returns stays ended."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from freight import metrics
from freight.agent import Agent, duties
from freight.agent.duties import Loop, Periodic, Reaper, StoreOutage, Supervisor
from freight.batch.job import QUEUE
from freight.config import Settings
from freight.errors import StoreUnavailableError
from freight.events import CompletionHub, WorkSignal
from freight.ids import new_id
from freight.prediction import Prediction, ReapResult, Status
from freight.storage.memory import MemoryStorage
from freight.store.memory import MemoryStore

DEADLINE_S = 10.0
T = TypeVar("T")


@pytest.fixture(autouse=True)
def quick_restarts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Restarts after 10 ms, so that a test waits on them without a long back-off; no
    FREIGHT_* variable of the calling shell leaks into the settings."""
    monkeypatch.setattr(duties, "RESTART_FIRST_S", 0.01)
    for name in [n for n in os.environ if n.startswith("FREIGHT_")]:
        monkeypatch.delenv(name)


async def until(check: Callable[[], T | None]) -> T:
    """Poll a condition until it gives a value; fail past the deadline."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        await asyncio.sleep(0.005)
    raise AssertionError(f"condition not met within {DEADLINE_S}s")


class CrashingClaims(MemoryStore):
    """A store whose first claims of the batch-job queue raise a bug (not an outage)."""

    def __init__(self, crashes: int) -> None:
        super().__init__()
        self.crashes = crashes
        self.batch_claims = 0

    async def claim(self, target: str, limit: int, **kwargs: object) -> list[Prediction]:
        if target == QUEUE:
            self.batch_claims += 1
            if self.batch_claims <= self.crashes:
                raise RuntimeError("a bug in the claim")
        return await super().claim(target, limit, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
async def agent_on(tmp_path: Path) -> AsyncIterator[Callable[[MemoryStore], Awaitable[Agent]]]:
    """A started agent with no models over the given (open) store; drained at teardown."""
    agents: list[Agent] = []

    async def make(store: MemoryStore) -> Agent:
        values: dict[str, Any] = {
            "project_dir": tmp_path,
            "state_dir": tmp_path / "state",
            "poll_interval_s": 0.01,
        }
        settings = Settings(**values)
        agent = Agent(
            settings,
            {},
            store,
            MemoryStorage(),
            signal=WorkSignal(),
            hub=CompletionHub(),
            storage_url="memory://",
            devices=[],
        )
        await agent.start()
        agents.append(agent)
        return agent

    yield make
    for agent in agents:
        await agent.drain(0)


def duty_tasks() -> set[str]:
    return {t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("duty:")}


def crashes_counted(duty: str) -> float:
    """freight_duty_crashes_total of ``duty``, as /metrics shows it."""
    value = metrics.registry.get_sample_value("freight_duty_crashes_total", {"duty": duty})
    return value or 0.0


async def test_a_crashed_duty_is_logged_and_restarted(
    agent_on: Callable[[MemoryStore], Awaitable[Agent]], caplog: pytest.LogCaptureFixture
) -> None:
    """The batch driver raising a bug is logged with its traceback, counted in
    freight_duty_crashes, and runs again (it claims again), instead of staying dead
    until the process exits."""
    store = CrashingClaims(crashes=2)
    await store.open()
    before = crashes_counted("batch-driver")
    with caplog.at_level(logging.ERROR, logger="freight.agent"):
        await agent_on(store)
        await until(lambda: store.batch_claims > 2)
    crashed = [r for r in caplog.records if "batch-driver crashed" in r.getMessage()]
    assert len(crashed) == 2
    assert all(r.exc_info is not None and r.exc_info[0] is RuntimeError for r in crashed)
    assert crashes_counted("batch-driver") - before == 2


async def test_duties_run_as_named_tasks_until_the_drain(
    agent_on: Callable[[MemoryStore], Awaitable[Agent]],
) -> None:
    """Each duty is a task named after it; a drain ends them all."""
    store = MemoryStore()
    await store.open()
    agent = await agent_on(store)
    expected = {"duty:autoscaler", "duty:heartbeat", "duty:reaper", "duty:batch-driver"}
    assert expected <= duty_tasks()
    assert agent.supervisor.names == [d.name for d in agent.duties]
    await agent.drain(0)
    assert duty_tasks() == set()


async def test_a_duty_that_returns_is_not_restarted() -> None:
    """A duty whose run returns has finished its work: it stays ended, uncounted."""
    runs: list[int] = []

    async def once() -> None:
        runs.append(1)

    supervisor = Supervisor()
    supervisor.start(Loop("once", once))
    await until(lambda: not supervisor.running("once"))
    assert (runs, supervisor.crashes("once")) == ([1], 0)


async def test_finish_ends_a_duty_in_its_back_off() -> None:
    """A duty asked to finish while it waits to be restarted is not restarted."""
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(duties, "RESTART_FIRST_S", 3600.0)
    runs: list[int] = []

    async def crash() -> None:
        runs.append(1)
        raise RuntimeError("boom")

    supervisor = Supervisor()
    try:
        supervisor.start(Loop("crash", crash))
        await until(lambda: supervisor.crashes("crash") == 1)
        await asyncio.wait_for(supervisor.finish("crash"), DEADLINE_S)
    finally:
        monkeypatch.undo()
        await supervisor.stop()
    assert runs == [1] and not supervisor.running("crash")


async def test_two_duties_of_one_name_are_refused() -> None:
    """Names identify duties (tasks, logs): a second of the same name is an error."""

    async def forever() -> None:
        await asyncio.Event().wait()

    supervisor = Supervisor()
    supervisor.start(Loop("x", forever))
    try:
        with pytest.raises(ValueError, match="'x'"):
            supervisor.start(Loop("x", forever))
    finally:
        await supervisor.stop()


class CountingStore(MemoryStore):
    """A store that counts its reaps."""

    def __init__(self) -> None:
        super().__init__()
        self.reaps = 0

    async def reap(self, *, now: float, backoff_s: float = 0.0) -> ReapResult:
        self.reaps += 1
        return await super().reap(now=now)


class Failing(Periodic):
    """A periodic duty whose sweep finds the store down."""

    name = "failing"

    async def tick(self) -> None:
        raise StoreUnavailableError("database down")


async def test_a_store_outage_holds_the_reaper_back_one_lease() -> None:
    """Once any duty found the store down, the reaper skips its sweeps for one lease:
    nobody could renew a lease meanwhile, so an expired one proves no death."""
    outage, store = StoreOutage(lease_s=3600.0), CountingStore()
    await store.open()
    reaper = Reaper(store, outage, interval_s=0.01, signal=WorkSignal(), hub=CompletionHub())
    await reaper.tick()
    assert store.reaps == 1
    failing = asyncio.create_task(Failing(3600.0, outage).run())
    await until(lambda: not outage.leases_trusted)
    failing.cancel()
    await asyncio.gather(failing, return_exceptions=True)
    await reaper.tick()
    assert store.reaps == 1


async def test_the_reaper_duty_sweeps_by_itself(
    agent_on: Callable[[MemoryStore], Awaitable[Agent]],
) -> None:
    """Started by the agent, the reaper sweeps on its own: a queued prediction past its
    TTL is expired without anyone calling tick()."""
    store = MemoryStore()
    await store.open()
    row = Prediction(
        id=new_id(), target="m", status=Status.QUEUED, created_at=0.0, queued_at=0.0, expires_at=1.0
    )
    await store.create(row)
    await agent_on(store)

    async def expired() -> bool:
        got = await store.get(row.id)
        return got is not None and got.status is Status.EXPIRED

    deadline = time.monotonic() + DEADLINE_S
    while not await expired():
        assert time.monotonic() < deadline, "the reaper never expired the row"
        await asyncio.sleep(0.01)
