"""The agent's duties: named loops, each given only the store role it needs, and the
supervisor that keeps them running.

A duty is anything with a ``name`` and a ``run()`` coroutine that works until it
is cancelled (or returns, when its work is over: the deliverer after its stop).
The periodic ones here do one sweep per :meth:`Periodic.tick`:

- :class:`Heartbeat` (``Queue``): renews the leases of what this node runs and
  interrupts what it no longer holds;
- :class:`Reaper` (``Queue``): requeues or fails rows whose lease expired, expires
  rows past their TTL, for every node;
- :class:`Purger` (``Records``): deletes predictions past their retention, rows
  first, then their objects.

Why a supervisor: a loop that raised used to be a dead task nobody looked at (no
heartbeat: every lease lost; no reaper: orphans never requeued). The
:class:`Supervisor` runs each duty as a task named ``duty:<name>``; one that
raises is logged with its traceback and restarted after a back-off that doubles
from 0.5 s to 30 s (and starts again at 0.5 s once a run lasted a minute).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from freight import metrics
from freight.errors import StoreUnavailableError
from freight.events import CompletionHub, WorkSignal
from freight.keys import is_own_input, is_own_output
from freight.prediction import RETRY_BACKOFF_S, Prediction
from freight.storage.base import Storage
from freight.store.base import Queue, Records

log = logging.getLogger("freight.agent")

#: back-off of a crashed duty: doubling from the first to the last
RESTART_FIRST_S = 0.5
RESTART_MAX_S = 30.0
#: a duty that ran this long before it crashed restarts after RESTART_FIRST_S again
HEALTHY_RUN_S = 60.0
#: one purge sweep stops after this long even with more rows due (the next goes on)
PURGE_BUDGET_S = 10.0
#: object deletions in flight at once during a purge
PURGE_DELETE_CONCURRENCY = 16


class Duty(Protocol):
    """A named loop the agent supervises."""

    @property
    def name(self) -> str: ...

    async def run(self) -> None:
        """Work until cancelled; returning ends the duty (it is not restarted)."""


@dataclass(frozen=True, slots=True)
class Loop:
    """A duty made of a name and a coroutine function (``deliverer.run``, ...)."""

    name: str
    body: Callable[[], Awaitable[None]]

    async def run(self) -> None:
        await self.body()


class StoreOutage:
    """What the duties learnt of store outages: while the store is down nobody can
    renew a lease, so the reaper gives every holder one lease after it is back
    before calling a lease lost."""

    def __init__(self, lease_s: float) -> None:
        self._lease_s = lease_s
        self._reap_after = 0.0  # monotonic

    def store_down(self) -> None:
        self._reap_after = time.monotonic() + self._lease_s

    @property
    def leases_trusted(self) -> bool:
        """Whether an expired lease now means a dead holder."""
        return time.monotonic() >= self._reap_after


class Periodic:
    """A duty that sweeps every ``interval_s``; the store being down is a warning (and
    noted in ``outage``), any other exception is its supervisor's to report."""

    name = "periodic"

    def __init__(self, interval_s: float, outage: StoreOutage) -> None:
        self.interval_s = interval_s
        self._outage = outage

    async def tick(self) -> None:
        """One sweep."""

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except StoreUnavailableError:
                log.warning("store unavailable during %s", self.name)
                self._outage.store_down()
            await asyncio.sleep(self.interval_s)


class Heartbeat(Periodic):
    """Renews the leases of what this node runs (every lease_s / 3: two renewals may
    fail before a lease lapses); interrupts the predictions it no longer holds."""

    name = "heartbeat"

    def __init__(
        self,
        queue: Queue,
        outage: StoreOutage,
        *,
        worker_id: str,
        lease_s: float,
        running: Callable[[], list[str]],
        interrupt: Callable[[set[str]], Awaitable[None]],
    ) -> None:
        super().__init__(lease_s / 3, outage)
        self._queue = queue
        self._worker_id = worker_id
        self._lease_s = lease_s
        self._running = running
        self._interrupt = interrupt

    async def tick(self) -> None:
        ids = self._running()
        if not ids:
            return
        lost = await self._queue.heartbeat(
            self._worker_id, ids, lease_s=self._lease_s, now=time.time()
        )
        if lost:
            log.info("interrupting %d predictions this worker no longer holds", len(lost))
            await self._interrupt(set(lost))


class Reaper(Periodic):
    """Enforces leases and TTLs for every node: expired leases requeued (or failed
    ``attempts_exhausted``), rows past their TTL expired; waiters told."""

    name = "reaper"

    def __init__(
        self,
        queue: Queue,
        outage: StoreOutage,
        *,
        interval_s: float,
        signal: WorkSignal,
        hub: CompletionHub,
        backoff_s: float = RETRY_BACKOFF_S,
    ) -> None:
        super().__init__(interval_s, outage)
        self._backoff_s = backoff_s
        self._queue = queue
        self._signal = signal
        self._hub = hub

    async def tick(self) -> None:
        if not self._outage.leases_trusted:
            return
        result = await self._queue.reap(now=time.time(), backoff_s=self._backoff_s)
        if result.requeued:
            log.warning("requeued %d predictions whose lease expired", len(result.requeued))
            self._signal.notify_all()
        finished = result.failed + result.expired
        if finished:
            self._hub.publish(finished)


class Purger(Periodic):
    """Deletes predictions finished more than ``retention_s`` ago, ``batch`` rows at a
    time, then their objects. Rows go first: a leftover object is harmless, a row
    pointing at a deleted object is not."""

    name = "purger"

    def __init__(
        self,
        records: Records,
        storage: Storage,
        outage: StoreOutage,
        *,
        interval_s: float,
        retention_s: float | None,
        batch: int,
    ) -> None:
        super().__init__(interval_s, outage)
        self._records = records
        self._storage = storage
        self._retention_s = retention_s
        self._batch = batch

    async def tick(self) -> None:
        retention_s = self._retention_s
        if not retention_s:
            return
        deadline = time.monotonic() + PURGE_BUDGET_S
        total = 0
        while True:
            rows = await self._records.purge(before=time.time() - retention_s, limit=self._batch)
            total += len(rows)
            await self._delete_objects(rows)
            if len(rows) < self._batch or time.monotonic() >= deadline:
                break
        if total:
            log.info("retention: deleted %d predictions finished over %ss ago", total, retention_s)

    async def _delete_objects(self, rows: list[Prediction]) -> None:
        keys: list[str] = []
        for row in rows:
            # an input named by input_uri is the caller's object: only ours is deleted
            if row.input_key is not None and is_own_input(row.id, row.input_key):
                keys.append(row.input_key)
            if row.output_key is not None and is_own_output(row.id, row.output_key):
                keys.append(row.output_key)
        limit = asyncio.Semaphore(PURGE_DELETE_CONCURRENCY)

        async def delete(key: str) -> None:
            async with limit:
                try:
                    await self._storage.delete(key)
                except Exception as exc:  # a leftover object is harmless
                    log.warning("retention: could not delete object %s: %s", key, exc)

        await asyncio.gather(*(delete(k) for k in keys))


@dataclass
class _Supervised:
    duty: Duty
    task: asyncio.Task[None] | None = None
    crashes: int = 0
    finishing: bool = False  # its end was asked for: a crash is not restarted
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # ends a back-off


class Supervisor:
    """Runs duties as named tasks; restarts a crashed one with back-off, logging its
    traceback each time, so that no duty is ever silently dead."""

    def __init__(self) -> None:
        self._duties: dict[str, _Supervised] = {}

    def start(self, duty: Duty) -> None:
        if duty.name in self._duties:
            raise ValueError(f"a duty named {duty.name!r} runs already")
        entry = _Supervised(duty)
        entry.task = asyncio.create_task(self._keep(entry), name=f"duty:{duty.name}")
        self._duties[duty.name] = entry

    @property
    def names(self) -> list[str]:
        return list(self._duties)

    def crashes(self, name: str) -> int:
        """How often the duty crashed (each one logged, then restarted)."""
        return self._duties[name].crashes

    def running(self, name: str) -> bool:
        task = self._duties[name].task
        return task is not None and not task.done()

    async def _keep(self, entry: _Supervised) -> None:
        name, backoff_s = entry.duty.name, RESTART_FIRST_S
        while True:
            began = time.monotonic()
            try:
                await entry.duty.run()
                return
            except Exception:
                entry.crashes += 1
                metrics.duty_crashes.labels(name).inc()
                if entry.finishing:
                    log.exception("duty %s crashed while finishing", name)
                    return
                if time.monotonic() - began >= HEALTHY_RUN_S:
                    backoff_s = RESTART_FIRST_S
                log.exception(
                    "duty %s crashed (%d so far); restarting it in %.1fs",
                    name,
                    entry.crashes,
                    backoff_s,
                )
            try:
                await asyncio.wait_for(entry.wake.wait(), backoff_s)
                return  # asked to finish during the back-off: nothing runs to wait for
            except TimeoutError:
                pass
            backoff_s = min(backoff_s * 2, RESTART_MAX_S)

    async def finish(self, name: str) -> None:
        """Wait for a duty told to end (``deliverer.stop()``) to return by itself; a
        crash now is not restarted."""
        entry = self._duties.get(name)
        if entry is None or entry.task is None:
            return
        entry.finishing = True
        entry.wake.set()
        await asyncio.gather(entry.task, return_exceptions=True)

    async def stop(self) -> None:
        """Cancel every duty still running and wait for them."""
        tasks = [e.task for e in self._duties.values() if e.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


__all__ = [
    "Duty",
    "Heartbeat",
    "Loop",
    "Periodic",
    "Purger",
    "Reaper",
    "StoreOutage",
    "Supervisor",
]
