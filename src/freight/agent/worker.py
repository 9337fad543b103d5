"""One model's share of the agent: its replicas and their claim loops.

Each replica slot loops: claim up to ``batching.max_size`` queued predictions
of the model (waiting at most ``max_wait_ms`` for more — this *is* dynamic
batching), hand them to its runner, record the outcome. The slot owns its
runner process; a dead or killed runner is replaced before the next claim.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from freight import metrics
from freight.agent import batches
from freight.agent.replica import Replica, ReplicaError, ReplicaLoadError, RunnerCommand
from freight.errors import StoreUnavailableError
from freight.events import WorkSignal
from freight.prediction import Completion, ErrorCode, Prediction, Release
from freight.registry import ModelSpec
from freight.storage.base import Storage
from freight.store.base import Store

log = logging.getLogger("freight.agent")

Callback = Callable[[list[str]], None]
StopFlag = Callable[[], bool]
Op = Callable[[], Awaitable[None]]


@dataclass
class Slot:
    """A replica position: the runner in it and what it is running now."""

    index: int
    replica: Replica | None = None
    running: list[Prediction] = field(default_factory=list)
    interrupted: set[str] = field(default_factory=set)  # canceled / lost while running
    draining_kill: bool = False


class ModelWorker:
    def __init__(
        self,
        spec: ModelSpec,
        command: RunnerCommand,
        *,
        store: Store,
        storage: Storage,
        signal: WorkSignal,
        worker_id: str,
        lease_s: float,
        poll_interval_s: float,
        replicas: int,
        on_finished: Persist,
    ) -> None:
        self.spec = spec
        self._command = command
        self._store = store
        self._storage = storage
        self._signal = signal
        self._worker_id = worker_id
        self._lease_s = lease_s
        self._poll_s = poll_interval_s
        self._persist = on_finished
        self.slots = [Slot(i) for i in range(replicas)]
        self._tasks: list[asyncio.Task[None]] = []
        self.stopping = False
        self.load_error: dict[str, object] | None = None

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        for slot in self.slots:
            name = f"{self.spec.name}-{slot.index}"
            self._tasks.append(asyncio.create_task(self._slot_loop(slot), name=f"slot:{name}"))

    async def drain(self, grace_s: float) -> None:
        """Stop claiming; let running batches finish within the grace; kill the rest."""
        self.stopping = True
        self._signal.notify(self.spec.name)
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=grace_s)
            for slot in self.slots:
                if slot.running and slot.replica is not None:
                    slot.draining_kill = True
                    await slot.replica.kill()
            if pending:
                await asyncio.wait(pending, timeout=10)
        for slot in self.slots:
            if slot.replica is not None:
                await slot.replica.stop()

    @property
    def ready_replicas(self) -> int:
        return sum(1 for s in self.slots if s.replica is not None and s.replica.serving)

    def running_ids(self) -> list[str]:
        return [row.id for slot in self.slots for row in slot.running]

    async def interrupt(self, ids: set[str]) -> None:
        """Kill the runners holding any of ``ids`` (canceled or lease lost)."""
        for slot in self.slots:
            hit = ids & {row.id for row in slot.running}
            if hit and slot.replica is not None:
                slot.interrupted |= hit
                await slot.replica.kill()

    # -- the loop ------------------------------------------------------------------
    async def _slot_loop(self, slot: Slot) -> None:
        backoff_s = 0.5
        while not self.stopping:
            try:
                if slot.replica is None or not slot.replica.alive:
                    await self._spawn(slot)
                    backoff_s = 0.5
                rows = await self._claim()
                if rows:
                    await self._run(slot, rows)
            except ReplicaLoadError as exc:
                self.load_error = exc.error
                log.error("model %s failed to load: %s", self.spec.name, exc)
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, 30.0)
            except StoreUnavailableError:
                log.warning(
                    "store unavailable; model %s retries in %.1fs", self.spec.name, backoff_s
                )
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, 5.0)
            except Exception:
                log.exception("slot %s-%d failed; restarting it", self.spec.name, slot.index)
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, 30.0)

    async def _spawn(self, slot: Slot) -> None:
        if slot.replica is not None:
            await slot.replica.kill()
        slot.replica = Replica(f"{self.spec.name}-{slot.index}", self._command)
        await slot.replica.start()
        self.load_error = None

    async def _claim(self) -> list[Prediction]:
        batching = self.spec.batching
        rows = await self._claim_some(batching.max_size)
        if not rows:
            await self._signal.wait(self.spec.name, self._poll_s)
            return []
        if len(rows) < batching.max_size and batching.max_wait_ms > 0:
            deadline = time.monotonic() + batching.max_wait_ms / 1000
            while len(rows) < batching.max_size and not self.stopping:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                await self._signal.wait(self.spec.name, remaining)
                rows += await self._claim_some(batching.max_size - len(rows))
        return rows

    async def _claim_some(self, limit: int) -> list[Prediction]:
        if self.stopping:
            return []
        return await self._store.claim(
            self.spec.name,
            limit,
            worker_id=self._worker_id,
            lease_s=self._lease_s,
            now=time.time(),
        )

    async def _run(self, slot: Slot, rows: list[Prediction]) -> None:
        assert slot.replica is not None
        slot.running, slot.interrupted, slot.draining_kill = rows, set(), False
        timeout_s = min(row.timeout_s for row in rows)
        try:
            result = await asyncio.wait_for(
                slot.replica.run([batches.item_message(row) for row in rows]),
                timeout_s,
            )
        except TimeoutError:
            await slot.replica.kill()
            outcomes = batches.failed(
                rows,
                self._worker_id,
                time.time(),
                ErrorCode.TIMEOUT,
                f"the model did not finish within {timeout_s:g} s",
            )
            await self._persist.complete(outcomes)
            metrics.record_batch(self.spec.name, rows, outcomes)
        except ReplicaError as exc:
            await slot.replica.kill()
            await self._after_crash(slot, rows, exc)
        else:
            await self._storage.put_many(batches.handback_objects(result))
            outcomes = batches.completions_from_result(rows, result, self._worker_id, time.time())
            await self._persist.complete(outcomes)
            metrics.record_batch(self.spec.name, rows, outcomes)
        finally:
            slot.running = []

    async def _after_crash(self, slot: Slot, rows: list[Prediction], exc: Exception) -> None:
        """Requeue what the dead runner held: its fault counts as an attempt, unless
        we killed it ourselves (cancel of a neighbour, drain)."""
        ours = bool(slot.interrupted) or slot.draining_kill
        if not ours:
            log.warning(
                "replica of %s died running %d predictions: %s", self.spec.name, len(rows), exc
            )
        releases = [
            Release(
                id=row.id,
                attempt=row.attempts,
                worker_id=self._worker_id,
                count_attempt=not ours,
                error_message=f"the replica died {row.attempts} time(s) running it",
            )
            for row in rows
            if row.id not in slot.interrupted
        ]
        if releases:
            await self._persist.release(releases)
        self._signal.notify(self.spec.name)


class Persist:
    """Writes outcomes to the store, retrying through outages, then wakes waiters."""

    def __init__(self, store: Store, publish: Callback, stopping: StopFlag) -> None:
        self._store = store
        self._publish = publish
        self._stopping = stopping

    async def _retry(self, what: str, op: Op) -> None:
        backoff_s = 0.2
        while True:
            try:
                await op()
                return
            except StoreUnavailableError:
                if self._stopping():
                    log.error("store unavailable at shutdown; %s left to lease expiry", what)
                    return
                log.warning("store unavailable; retrying %s in %.1fs", what, backoff_s)
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, 5.0)

    async def complete(self, completions: list[Completion]) -> None:
        async def op() -> None:
            await self._store.complete(completions)

        await self._retry("completion", op)
        self._publish([c.id for c in completions])

    async def release(self, releases: list[Release]) -> None:
        async def op() -> None:
            await self._store.release(releases, now=time.time())

        await self._retry("release", op)
        self._publish([r.id for r in releases])
