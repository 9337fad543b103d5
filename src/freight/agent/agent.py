"""The agent of one worker node: model workers plus the periodic duties.

Duties besides claiming: renew the leases of what this node runs (heartbeat),
enforce leases and TTLs for everyone (reap), and interrupt predictions that
were canceled or lost. In the embedded shape the SQLite store is exclusive, so
at start-up every ``running`` row is an orphan of a crash and is requeued.
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

from freight.agent.replica import RunnerCommand
from freight.agent.worker import ModelWorker, Persist
from freight.config import Settings
from freight.errors import StoreUnavailableError
from freight.events import CompletionHub, WorkSignal
from freight.registry import ModelSpec
from freight.storage.base import Storage
from freight.store.base import Store

log = logging.getLogger("freight.agent")

Duty = Callable[[], Awaitable[None]]


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
    ) -> None:
        self._settings = settings
        self._store = store
        self._signal = signal
        self._hub = hub
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stopping = False
        self._persist = Persist(store, hub.publish, lambda: self._stopping)
        self._tasks: list[asyncio.Task[None]] = []
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
                ),
                store=store,
                storage=storage,
                signal=signal,
                worker_id=self.worker_id,
                lease_s=settings.lease_s,
                poll_interval_s=settings.poll_interval_s,
                replicas=max(1, spec.replicas.min),
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

    async def drain(self, grace_s: float | None = None) -> None:
        """Stop claiming, let running work finish within the grace, requeue the rest."""
        grace = self._settings.drain_grace_s if grace_s is None else grace_s
        self._stopping = True
        await asyncio.gather(*(w.drain(grace) for w in self.workers.values()))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

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
        result = await self._store.reap(now=time.time())
        if result.requeued:
            log.warning("requeued %d predictions whose lease expired", len(result.requeued))
            self._signal.notify_all()
        finished = result.failed + result.expired
        if finished:
            self._hub.publish(finished)
