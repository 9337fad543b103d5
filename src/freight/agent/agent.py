"""The agent of one worker node: model workers plus the periodic duties.

Duties besides claiming: renew the leases of what this node runs (heartbeat),
enforce leases and TTLs for everyone (reap), interrupt predictions that were
canceled or lost, and delete finished predictions past their retention (purge:
rows first, then their objects). In the embedded shape the SQLite store is
exclusive, so at start-up every ``running`` row is an orphan of a crash and is
requeued.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from freight.agent.delivery import Deliverer, RetryPolicy, SinkFor
from freight.agent.replica import RunnerCommand
from freight.agent.worker import ModelWorker, Persist
from freight.config import Settings
from freight.errors import StoreUnavailableError
from freight.events import CompletionHub, WorkSignal
from freight.fleet import ModelState
from freight.keys import is_own_input, is_own_output
from freight.prediction import Prediction
from freight.registry import ModelSpec
from freight.storage.base import Storage
from freight.store.base import Store

log = logging.getLogger("freight.agent")

Duty = Callable[[], Awaitable[None]]

#: one purge run stops after this long even with more rows due (the next run goes on)
PURGE_BUDGET_S = 10.0
#: object deletions in flight at once during a purge
PURGE_DELETE_CONCURRENCY = 16


class Agent:
    def __init__(
        self,
        settings: Settings,
        specs: dict[str, ModelSpec],
        store: Store,
        storage: Storage,
        *,
        signal: WorkSignal,
        hub: CompletionHub,
        storage_url: str,
        sink_for: SinkFor | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._storage = storage
        self._signal = signal
        self._hub = hub
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stopping = False
        self.deliverer = (
            Deliverer(
                store,
                sink_for,
                worker_id=self.worker_id,
                policy=RetryPolicy(
                    base_s=settings.delivery_backoff_s,
                    max_delay_s=settings.delivery_backoff_max_s,
                    max_age_s=settings.delivery_max_age_s,
                ),
                concurrency=settings.delivery_concurrency,
                timeout_s=settings.delivery_timeout_s,
                poll_s=settings.poll_interval_s,
                secrets_overlap_s=settings.webhook_secret_overlap_s,
            )
            if sink_for is not None
            else None
        )
        wake = self.deliverer.wake if self.deliverer is not None else None
        self._persist = Persist(store, hub.publish, lambda: self._stopping, on_outbox=wake)
        self._tasks: list[asyncio.Task[None]] = []
        self._reap_after = 0.0  # monotonic; lease reaping waits past a store outage
        self._delivering: asyncio.Task[None] | None = None
        # runners' temporary files (S3 inputs, File outputs) live beside the state, on
        # disk rather than a tmpfs, and on the local store's filesystem: moved, not copied
        scratch = (settings.state_dir / "tmp").resolve()
        scratch.mkdir(parents=True, exist_ok=True)
        self.workers = {
            name: ModelWorker(
                spec,
                RunnerCommand(
                    spec.ref,
                    Path(settings.project_dir).resolve(),
                    storage_url,
                    settings.inline_output_max_bytes,
                    env={"TMPDIR": str(scratch)},
                    load_timeout_s=settings.load_timeout_s,
                ),
                store=store,
                storage=storage,
                signal=signal,
                worker_id=self.worker_id,
                lease_s=settings.lease_s,
                poll_interval_s=settings.poll_interval_s,
                replicas=max(1, spec.replicas.min),
                max_load_attempts=settings.max_load_attempts,
                on_finished=self._persist,
            )
            for name, spec in specs.items()
        }

    async def start(self) -> None:
        if self._store.exclusive:
            orphans = await self._store.recover_orphans(now=time.time())
            if orphans:
                log.warning("requeued %d predictions left running by a previous run", len(orphans))
        for worker in self.workers.values():
            worker.start()
        self._tasks = [
            asyncio.create_task(
                self._every(self._settings.lease_s / 3, self._heartbeat), name="agent:heartbeat"
            ),
            asyncio.create_task(
                self._every(self._settings.reap_interval_s, self._reap), name="agent:reap"
            ),
        ]
        if self._settings.retention_s:
            self._tasks.append(
                asyncio.create_task(
                    self._every(self._settings.retention_interval_s, self._purge),
                    name="agent:purge",
                )
            )
        if self.deliverer is not None:
            self._delivering = asyncio.create_task(self.deliverer.run(), name="agent:deliver")

    async def drain(self, grace_s: float | None = None) -> None:
        """Stop claiming, let running work finish within the grace, requeue the rest."""
        grace = self._settings.drain_grace_s if grace_s is None else grace_s
        self.stop_claiming()
        # heartbeats go on while running work finishes: a lease lapsing mid-drain would
        # let another worker take the prediction over and run it a second time
        await asyncio.gather(*(w.drain(grace) for w in self.workers.values()))
        if self.deliverer is not None and self._delivering is not None:
            await self.deliverer.stop()  # the last completions' events, within a grace
            await asyncio.gather(self._delivering, return_exceptions=True)
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def stop_claiming(self) -> None:
        """Claim nothing more (called the moment SIGTERM arrives, before the HTTP
        server finishes its open requests); running work goes on until :meth:`drain`."""
        for worker in self.workers.values():
            worker.stop_claiming()

    def model_states(self) -> dict[str, ModelState]:
        """The :class:`~freight.fleet.Fleet` view of this node's replicas."""
        return {
            name: ModelState(ready_replicas=w.ready_replicas, load_error=w.load_error)
            for name, w in self.workers.items()
        }

    async def interrupt(self, prediction_id: str) -> None:
        """A running prediction was canceled: kill the runner that holds it."""
        for worker in self.workers.values():
            await worker.interrupt({prediction_id})

    async def _every(self, interval_s: float, duty: Duty) -> None:
        while not self._stopping:
            try:
                await duty()
            except StoreUnavailableError:
                log.warning("store unavailable during %s", duty.__name__)
                # nobody could renew a lease meanwhile: give every holder one lease
                # after the store is back before calling a lease lost
                self._reap_after = time.monotonic() + self._settings.lease_s
            except Exception:
                log.exception("%s failed", duty.__name__)
            await asyncio.sleep(interval_s)

    async def _heartbeat(self) -> None:
        ids = [i for w in self.workers.values() for i in w.running_ids()]
        if not ids:
            return
        lost = await self._store.heartbeat(
            self.worker_id,
            ids,
            lease_s=self._settings.lease_s,
            now=time.time(),
        )
        if lost:
            log.info("interrupting %d predictions this worker no longer holds", len(lost))
            for worker in self.workers.values():
                await worker.interrupt(set(lost))

    async def _reap(self) -> None:
        if time.monotonic() < self._reap_after:
            return
        result = await self._store.reap(now=time.time())
        if result.requeued:
            log.warning("requeued %d predictions whose lease expired", len(result.requeued))
            self._signal.notify_all()
        finished = result.failed + result.expired
        if finished:
            self._hub.publish(finished)

    async def _purge(self) -> None:
        """Delete predictions finished more than ``retention_s`` ago, batch by batch,
        then their objects. Rows go first: a leftover object is harmless, a row
        pointing at a deleted object is not."""
        retention_s = self._settings.retention_s
        if not retention_s:
            return
        batch = self._settings.retention_batch
        deadline = time.monotonic() + PURGE_BUDGET_S
        total = 0
        while not self._stopping:
            rows = await self._store.purge(before=time.time() - retention_s, limit=batch)
            total += len(rows)
            await self._delete_objects(rows)
            if len(rows) < batch or time.monotonic() >= deadline:
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
