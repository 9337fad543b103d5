"""PostgreSQL under concurrent writers: no transaction of the store deadlocks another.

Workers complete their claimed steps in batches while renewing the leases of the
same ids in the other order; at the same time runs are canceled, single steps
canceled, and the reaper times runs out (their deadline is their lease) and
expires steps past their TTL. The first kind locks rows of a run's steps and then
the run; the second locks the run and then its steps. Each task has a store of its
own (its own pool), as separate processes would.

PostgreSQL counts the deadlocks it detects per database
(``pg_stat_database.deadlocks``); the counter is read once the stores' server
processes have ended, so that it holds everything they did (tests/fixtures/pg_stats.py).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from freight.errors import StoreUnavailableError
from freight.prediction import Completion, Prediction, Status
from freight.store import Store, open_store
from tests.fixtures.pg_stats import StatsReader
from tests.fixtures.pipeline_rows import T0, pipeline_run

# four steps that depend on the input only: all queued at once when the run starts
PARALLEL = {"steps": {f"s{i}": {"model": "m", "input": "$input"} for i in range(4)}}
RUNS = 60
WORKERS = 3
BATCH = 8
LEASE_S = 60.0  # the workers' leases outlive the test's clock: never requeued
REAP_AT = T0 + 5  # past the deadline of the runs timed out, the TTL of the steps expired
CANCEL_LAG = 4  # a run is canceled once this many newer runs exist (its steps are claimed)
DEADLINE_S = 15.0
RETRIES = 100

# what becomes of each run, by its index modulo 5
PLAIN, CANCEL_RUN, TIMED_OUT, STEPS_TTL, CANCEL_STEP = range(5)

T = TypeVar("T")


class Scenario:
    def __init__(self, stores: list[Store]) -> None:
        self.stores = stores
        self.runs: list[tuple[Prediction, list[Prediction]]] = []
        self.unavailable: list[str] = []  # every StoreUnavailableError raised, by call
        self.created = False
        self.stop = False

    async def retried(
        self, name: str, call: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any
    ) -> T:
        """Call until it goes through, as the agent does ("store unavailable;
        retrying"), recording each StoreUnavailableError."""
        for _ in range(RETRIES):
            try:
                return await call(*args, **kwargs)
            except StoreUnavailableError as exc:
                self.unavailable.append(f"{name}: {exc}")
        raise AssertionError(f"{name} never went through")

    async def create(self, store: Store) -> None:
        for i in range(RUNS):
            role = i % 5
            run, steps = pipeline_run(
                PARALLEL, value=i, expires_at=T0 + 1 if role == STEPS_TTL else None
            )
            if role == TIMED_OUT:
                run.lease_expires_at = T0 - 1  # its deadline has passed
            await self.retried("create_run", store.create_run, run, steps)
            self.runs.append((run, steps))
        self.created = True

    async def cancel(self, store: Store) -> None:
        done = 0
        while not self.stop:
            while done < len(self.runs) - (0 if self.created else CANCEL_LAG):
                run, steps = self.runs[done]
                if done % 5 == CANCEL_RUN:
                    await self.retried("cancel run", store.cancel, run.id, now=T0 + 2)
                elif done % 5 == CANCEL_STEP:
                    step = steps[done % len(steps)]
                    await self.retried("cancel step", store.cancel, step.id, now=T0 + 2)
                done += 1
            await asyncio.sleep(0.005)  # pace the poll for newly created runs

    async def reap(self, store: Store) -> None:
        while not self.stop:
            try:
                await store.reap(now=REAP_AT)
            except StoreUnavailableError as exc:
                self.unavailable.append(f"reap: {exc}")
            await asyncio.sleep(0.005)  # pace the sweeps

    async def work(self, store: Store, worker: str) -> None:
        rounds = 0
        while not self.stop:
            try:
                batch = await store.claim("m", BATCH, worker_id=worker, lease_s=LEASE_S, now=T0)
            except StoreUnavailableError as exc:
                self.unavailable.append(f"claim: {exc}")
                continue
            if not batch:
                await asyncio.sleep(0.005)  # pace the poll for queued steps
                continue
            rounds += 1
            order = sorted(batch, key=lambda r: r.id, reverse=rounds % 2 == 0)
            completions = [
                Completion(
                    id=r.id,
                    attempt=r.attempts,
                    worker_id=worker,
                    status=Status.SUCCEEDED,
                    finished_at=T0 + 1,
                    output_json="1",
                    batch_size=len(batch),
                )
                for r in order
            ]
            await asyncio.gather(
                self.retried("complete", store.complete, completions),
                self.heartbeat(store, worker, [r.id for r in reversed(order)]),
            )

    async def heartbeat(self, store: Store, worker: str, ids: list[str]) -> None:
        try:
            await store.heartbeat(worker, ids, lease_s=LEASE_S, now=T0)
        except StoreUnavailableError as exc:
            self.unavailable.append(f"heartbeat: {exc}")

    async def unfinished(self, store: Store) -> list[str]:
        """The ids of the runs not yet terminal."""
        rows = [(run.id, await store.get(run.id)) for run, _ in self.runs]
        return [i for i, r in rows if r is None or not r.status.terminal]


async def test_concurrent_completions_cancels_and_reaping_never_deadlock(
    postgres_url: str,
) -> None:
    """Workers completing batches while renewing the same leases in reverse order,
    run and step cancels, and the reaper's run timeouts and TTL expiries, all at
    once on separate stores: no deadlock, no StoreUnavailableError, and every run
    ends with all of its steps ended."""
    stats = StatsReader(postgres_url)
    try:
        deadlocks_before = stats.deadlocks()
        seen = await run_scenario(postgres_url, stats)
        stats.settle(seen)
        deadlocks = stats.deadlocks() - deadlocks_before
    finally:
        stats.close()
    assert deadlocks == 0, f"PostgreSQL detected {deadlocks} deadlocks"


async def run_scenario(url: str, stats: StatsReader) -> set[int]:
    """Run the scenario on stores of their own, check its outcome, and return the
    server processes of the stores' connections (closed on return)."""
    stores: list[Store] = [open_store(url) for _ in range(WORKERS + 3)]
    for store in stores:
        await store.open()
    scenario = Scenario(stores)
    try:
        creator, canceler, reaper, *workers = stores
        tasks = [
            asyncio.create_task(scenario.cancel(canceler)),
            asyncio.create_task(scenario.reap(reaper)),
            *(asyncio.create_task(scenario.work(s, f"w{i}")) for i, s in enumerate(workers)),
        ]
        try:
            await scenario.create(creator)
            deadline = time.monotonic() + DEADLINE_S
            while await scenario.unfinished(creator) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)  # poll the runs' outcome until the deadline
        finally:
            scenario.stop = True
            await asyncio.gather(*tasks)

        unfinished = await scenario.unfinished(creator)
        assert unfinished == [], f"{len(unfinished)} runs never ended"
        for run, _ in scenario.runs:
            rows = await creator.steps(run.id)
            assert len(rows) == len(PARALLEL["steps"])
            assert all(r.status.terminal for r in rows), (run.id, [r.status for r in rows])
        plain = [run for i, (run, _) in enumerate(scenario.runs) if i % 5 == PLAIN]
        for run in plain:  # never canceled nor timed out, no TTL: every step ran
            ended = await creator.get(run.id)
            assert ended is not None and ended.status == Status.SUCCEEDED, ended
        by_call = Counter(line.partition(":")[0] for line in scenario.unavailable)
        assert scenario.unavailable == [], (
            f"StoreUnavailableError raised by {dict(by_call)}; first: {scenario.unavailable[0]}"
        )
        return stats.backends()  # skips the rest where the server's processes are not visible
    finally:
        for store in stores:
            await store.close()
