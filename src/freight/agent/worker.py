"""One model's share of the agent: its replicas and their claim loops.

Each replica slot loops: claim up to ``batching.max_size`` queued predictions
of the model (waiting at most ``max_wait_ms`` for more — this *is* dynamic
batching), hand them to its runner, record the outcome. The slot owns its
runner; a dead or killed runner is replaced before the next claim.

A model whose load keeps failing must not leave its queue waiting forever:
after ``max_load_attempts`` failed loads in a row (all slots together) the
model is *unavailable* and its slots, between load retries, claim what is
queued for it and fail it ``model_unavailable``. Claiming first keeps this
fenced like any other outcome (and correct with several workers); the next
successful load ends it.

The replica is a seam (:class:`~freight.agent.replica.ReplicaHandle` and a
factory): tests drive every branch of the loop with fakes, no processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from freight import metrics
from freight.agent import batches
from freight.agent.persist import Persist
from freight.agent.replica import (
    Replica,
    ReplicaError,
    ReplicaHandle,
    ReplicaLoadError,
    RunnerCommand,
)
from freight.errors import StoreUnavailableError
from freight.events import WorkSignal
from freight.prediction import Completion, ErrorCode, Prediction, Release
from freight.registry import ModelSpec
from freight.storage.base import Storage
from freight.store.base import Queue

log = logging.getLogger("freight.agent")

ReplicaFactory = Callable[[str], ReplicaHandle]

#: the default of the ``max_load_attempts`` setting
DEFAULT_MAX_LOAD_ATTEMPTS = 5
#: back-off of a slot after a failure (doubling up to the maxima below)
BACKOFF_START_S = 0.5
LOAD_BACKOFF_MAX_S = 30.0
STORE_BACKOFF_MAX_S = 5.0
#: queued predictions of an unavailable model failed per claim
UNAVAILABLE_CLAIM = 100
#: how long a drain waits for slots after killing their replicas
DRAIN_KILL_WAIT_S = 10.0


@dataclass
class Slot:
    """A replica position: the runner in it and what it is running now."""

    index: int
    replica: ReplicaHandle | None = None
    running: list[Prediction] = field(default_factory=list)
    interrupted: set[str] = field(default_factory=set)  # canceled / lost while running
    draining_kill: bool = False
    finishing: bool = False  # the runner answered: only its outcome is left to record
    load_backoff_s: float = 0.0  # the last wait between failed loads (0: none failed)
    retry_load_at: float = 0.0  # monotonic time of the next load after a failed one


class LoadHealth:
    """Consecutive failed loads of one model, and whether it is unavailable."""

    def __init__(self, max_attempts: int) -> None:
        self.max_attempts = max_attempts  # 0: never give up
        self.failures = 0
        self.error: dict[str, Any] | None = None

    @property
    def unavailable(self) -> bool:
        return self.max_attempts > 0 and self.failures >= self.max_attempts

    def failed(self, error: dict[str, Any]) -> bool:
        """Count a failed load; True when it just made the model unavailable."""
        was = self.unavailable
        self.failures += 1
        self.error = error
        return self.unavailable and not was

    def loaded(self) -> None:
        self.failures = 0
        self.error = None


class ModelWorker:
    def __init__(
        self,
        spec: ModelSpec,
        command: RunnerCommand,
        *,
        store: Queue,
        storage: Storage,
        signal: WorkSignal,
        worker_id: str,
        lease_s: float,
        poll_interval_s: float,
        replicas: int,
        on_finished: Persist,
        max_load_attempts: int = DEFAULT_MAX_LOAD_ATTEMPTS,
        make_replica: ReplicaFactory | None = None,
    ) -> None:
        self.spec = spec
        self._make_replica: ReplicaFactory = make_replica or (lambda n: Replica(n, command))
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
        self._stopped = asyncio.Event()
        self.health = LoadHealth(max_load_attempts)

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        for slot in self.slots:
            name = f"{self.spec.name}-{slot.index}"
            self._tasks.append(asyncio.create_task(self._slot_loop(slot), name=f"slot:{name}"))

    async def drain(self, grace_s: float) -> None:
        """Stop claiming; let running batches finish within the grace; past it kill their
        replicas (what they held is requeued without counting an attempt)."""
        self.stop_claiming()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=grace_s)
            if pending:
                await self._kill_busy()
                _, pending = await asyncio.wait(pending, timeout=DRAIN_KILL_WAIT_S)
                for task in pending:
                    task.cancel()
        for slot in self.slots:
            if slot.replica is not None:
                await slot.replica.stop()

    def stop_claiming(self) -> None:
        """Claim nothing more from now on (the first thing a SIGTERM does); what runs
        goes on until :meth:`drain`."""
        self.stopping = True
        self._stopped.set()
        self._signal.notify(self.spec.name)

    async def _kill_busy(self) -> None:
        """Kill the replicas still running a batch, or still loading."""
        for slot in self.slots:
            if slot.replica is not None and (slot.running or not slot.replica.serving):
                slot.draining_kill = bool(slot.running)
                await slot.replica.kill()

    @property
    def ready_replicas(self) -> int:
        return sum(1 for s in self.slots if s.replica is not None and s.replica.serving)

    @property
    def load_error(self) -> dict[str, Any] | None:
        """The last load failure, until a load succeeds (shown on /v1/models)."""
        return self.health.error

    @property
    def unavailable(self) -> bool:
        """Failed to load ``max_load_attempts`` times in a row: its queue is failed."""
        return self.health.unavailable

    def running_ids(self) -> list[str]:
        return [row.id for slot in self.slots for row in slot.running]

    async def interrupt(self, ids: set[str]) -> None:
        """Kill the runners holding any of ``ids`` (canceled or lease lost)."""
        for slot in self.slots:
            hit = ids & {row.id for row in slot.running}
            # a slot whose runner already answered has nothing to kill: its ids read as
            # "no longer held" only because their completion just landed
            if hit and slot.replica is not None and not slot.finishing:
                slot.interrupted |= hit
                await slot.replica.kill()

    # -- the loop ------------------------------------------------------------------
    async def _slot_loop(self, slot: Slot) -> None:
        backoff_s = BACKOFF_START_S
        while not self.stopping:
            try:
                await self._step(slot)
                backoff_s = BACKOFF_START_S
            except StoreUnavailableError:
                log.warning(
                    "store unavailable; model %s retries in %.1fs", self.spec.name, backoff_s
                )
                await self._sleep(backoff_s)
                backoff_s = min(backoff_s * 2, STORE_BACKOFF_MAX_S)
            except Exception:
                log.exception("slot %s-%d failed; restarting it", self.spec.name, slot.index)
                await self._sleep(backoff_s)
                backoff_s = min(backoff_s * 2, LOAD_BACKOFF_MAX_S)

    async def _step(self, slot: Slot) -> None:
        """One turn of a slot: (re)load its replica when due, else claim and run."""
        if slot.replica is None or not slot.replica.alive:
            if time.monotonic() < slot.retry_load_at:
                await self._between_loads(slot)
                return
            if not await self._spawn(slot):
                return
        rows = await self._claim()
        if rows:
            await self._run(slot, rows)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake at once when the worker drains."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopped.wait(), max(0.0, seconds))

    async def _spawn(self, slot: Slot) -> bool:
        """A fresh replica in the slot; False (and the next try scheduled) when it did
        not load."""
        if slot.replica is not None:
            await slot.replica.kill()
        slot.replica = self._make_replica(f"{self.spec.name}-{slot.index}")
        try:
            await slot.replica.start()
        except ReplicaLoadError as exc:
            self._load_failed(slot, exc)
            return False
        self.health.loaded()
        slot.load_backoff_s = 0.0
        return True

    def _load_failed(self, slot: Slot, exc: ReplicaLoadError) -> None:
        slot.load_backoff_s = min(max(slot.load_backoff_s * 2, BACKOFF_START_S), LOAD_BACKOFF_MAX_S)
        slot.retry_load_at = time.monotonic() + slot.load_backoff_s
        if self.stopping:  # killed while loading by the drain
            return
        became_unavailable = self.health.failed(exc.error)
        log.error(
            "model %s failed to load (%d in a row): %s", self.spec.name, self.health.failures, exc
        )
        if became_unavailable:
            log.error(
                "model %s is unavailable: its queued predictions fail until it loads",
                self.spec.name,
            )

    async def _between_loads(self, slot: Slot) -> None:
        """Wait for the slot's next load; an unavailable model's queue fails meanwhile."""
        remaining = slot.retry_load_at - time.monotonic()
        if not self.health.unavailable:
            await self._sleep(remaining)
            return
        rows = await self._claim_some(UNAVAILABLE_CLAIM)
        if rows:
            await self._fail_unavailable(rows)
        else:
            await self._signal.wait(self.spec.name, min(remaining, self._poll_s))

    async def _fail_unavailable(self, rows: list[Prediction]) -> None:
        error = self.health.error or {}
        message = (
            f"model {self.spec.name} is unavailable: it failed to load "
            f"{self.health.failures} times in a row (last: {error.get('message', '?')})"
        )
        outcomes = batches.failed(
            rows,
            self._worker_id,
            time.time(),
            ErrorCode.MODEL_UNAVAILABLE,
            message,
            {"load_error": error},
            ran=False,
        )
        await self._persist.complete(outcomes)
        for outcome in outcomes:  # counted as finished, but no batch ran
            metrics.finished.labels(
                self.spec.name, str(outcome.status), outcome.error_code or ""
            ).inc()

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
        replica = slot.replica
        assert replica is not None
        slot.running, slot.interrupted, slot.draining_kill = rows, set(), False
        slot.finishing = False
        timeout_s = min(row.timeout_s for row in rows)
        try:
            result = await asyncio.wait_for(replica.run(batches.batch(rows)), timeout_s)
        except TimeoutError:
            await replica.kill()
            message = f"the model did not finish within {timeout_s:g} s"
            now = time.time()
            await self._finish(
                rows, batches.failed(rows, self._worker_id, now, ErrorCode.TIMEOUT, message)
            )
        except ReplicaError as exc:
            await replica.kill()
            await self._after_crash(slot, rows, exc)
        else:
            slot.finishing = True
            outcomes, objects = batches.outcome(rows, result, self._worker_id, time.time())
            if objects:
                await self._storage.put_many(objects)
            await self._finish(rows, outcomes)
        finally:
            slot.running, slot.finishing = [], False

    async def _finish(self, rows: list[Prediction], outcomes: list[Completion]) -> None:
        outbox = any(r.notify is not None or r.run_id is not None for r in rows)
        await self._persist.complete(outcomes, outbox=outbox)
        metrics.record_batch(self.spec.name, rows, outcomes)

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


__all__ = ["LoadHealth", "ModelWorker", "Persist", "ReplicaFactory", "Slot"]
