"""The agent of one worker node: model workers plus the periodic duties.

Duties besides claiming: renew the leases of what this node runs (heartbeat),
enforce leases and TTLs for everyone (reap), interrupt predictions that were
canceled or lost, and delete finished predictions past their retention (purge:
rows first, then their objects). In the embedded shape the SQLite store is
exclusive, so at start-up every ``running`` row is an orphan of a crash and is
requeued.

Autoscale, every ``autoscale_interval_s``: each served model's backlog (from
``store.stats()``) and replicas are observed, :func:`~freight.scaling.decide`
says how many replicas each should have, :func:`~freight.scaling.allocate`
shares the node (``max_replicas``, the GPUs) between them, and the workers grow
or shrink to that. A model at zero replicas wakes the duty at once when work
for it is signalled in this process, so its first request starts a replica
without waiting for the next tick.

GPUs are detected once, at construction (``gpus`` setting, else ``nvidia-smi``).
A deployment this node cannot run fails the start (ConfigError); a model that
needs GPUs on a node without any is not served here (logged, and shown on
``/v1/models``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from freight import metrics
from freight.agent.delivery import Deliverer, RetryPolicy, SinkFor
from freight.agent.replica import RunnerCommand
from freight.agent.worker import ModelWorker, Persist, ReplicaLauncher
from freight.batch.driver import BatchDriver
from freight.config import Settings
from freight.errors import ConfigError, StoreUnavailableError
from freight.events import CompletionHub, WorkSignal
from freight.fleet import ModelState
from freight.keys import is_own_input, is_own_output
from freight.prediction import Prediction, TargetStats
from freight.project import Pipelines
from freight.registry import ModelSpec
from freight.scaling import (
    Decision,
    GpuPool,
    ModelScaleState,
    Observation,
    Want,
    allocate,
    capped,
    check_deployable,
    decide,
    detect_devices,
)
from freight.scaling.gpus import GPUS_ENV, NVIDIA_SMI_QUERY
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
        devices: Sequence[str] | None = None,
        launch: ReplicaLauncher | None = None,
        pipelines: Pipelines | None = None,
    ) -> None:
        """``devices``: the node's GPUs (default: detected); ``launch``: replaces the
        runner processes (tests)."""
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
        self.driver = BatchDriver(
            store,
            storage,
            signal=signal,
            hub=hub,
            worker_id=self.worker_id,
            lease_s=settings.lease_s,
            poll_s=settings.poll_interval_s,
            pipelines=pipelines,
        )
        self._driving: asyncio.Task[None] | None = None
        wake = self.deliverer.wake if self.deliverer is not None else None
        self._persist = Persist(store, hub.publish, lambda: self._stopping, on_outbox=wake)
        self._tasks: list[asyncio.Task[None]] = []
        self._reap_after = 0.0  # monotonic; lease reaping waits past a store outage
        self._delivering: asyncio.Task[None] | None = None
        # runners' temporary files (S3 inputs, File outputs) live beside the state, on
        # disk rather than a tmpfs, and on the local store's filesystem: moved, not copied
        scratch = (settings.state_dir / "tmp").resolve()
        scratch.mkdir(parents=True, exist_ok=True)
        self.devices = list(devices) if devices is not None else _detect_devices(settings)
        self.gpu_pool = GpuPool(self.devices)
        self.not_served = _deployable(specs, self.devices)
        served = {name: spec for name, spec in specs.items() if name not in self.not_served}
        _warn_about_the_cap(served, settings.max_replicas)
        self._claiming = True
        self._scale_states: dict[str, ModelScaleState] = {}
        self._stats: dict[str, TargetStats] = {}  # the last backlog read (kept over an outage)
        self._stats_stale = False
        self._capped: set[str] = set()  # models the node's capacity holds below their need
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
                replicas=0,  # the first autoscale tick (at start) brings each to its min
                max_load_attempts=settings.max_load_attempts,
                on_finished=self._persist,
                launch=launch,
                gpu_pool=self.gpu_pool,
            )
            for name, spec in served.items()
        }

    async def start(self) -> None:
        if self._store.exclusive:
            orphans = await self._store.recover_orphans(now=time.time())
            if orphans:
                log.warning("requeued %d predictions left running by a previous run", len(orphans))
        for worker in self.workers.values():
            worker.start()
        now = time.monotonic()
        self._scale_states = {name: ModelScaleState.initial(now) for name in self.workers}
        try:
            await self._autoscale()  # the min replicas (and whatever is queued) start now
        except Exception:
            log.exception("autoscale failed (the next tick tries again)")
        self._tasks = [
            asyncio.create_task(self._scale_loop(), name="agent:autoscale"),
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
        self._driving = asyncio.create_task(self.driver.run(), name="agent:batch")

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
        if self._driving is not None:
            self._driving.cancel()
            await asyncio.gather(self._driving, return_exceptions=True)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def stop_claiming(self) -> None:
        """Claim nothing more (called the moment SIGTERM arrives, before the HTTP
        server finishes its open requests); running work goes on until :meth:`drain`."""
        self._claiming = False
        for worker in self.workers.values():
            worker.stop_claiming()
        self.driver.stop()

    def model_states(self) -> dict[str, ModelState]:
        """The :class:`~freight.fleet.Fleet` view of this node's replicas."""
        states = {
            name: ModelState(
                ready_replicas=w.ready_replicas,
                load_error=w.load_error,
                replicas=w.replicas,
                starting=w.starting,
                desired=w.scaling.desired,
                reason=w.scaling.reason,
                last_change=w.scaling.last_change,
                cold_starts=w.cold_starts,
            )
            for name, w in self.workers.items()
        }
        for name, message in self.not_served.items():
            states[name] = ModelState(served=False, not_served=message)
        return states

    async def interrupt(self, prediction_id: str) -> None:
        """A running prediction was canceled: kill the runner that holds it."""
        for worker in self.workers.values():
            await worker.interrupt({prediction_id})

    # -- autoscaling -----------------------------------------------------------------
    async def _scale_loop(self) -> None:
        interval_s = self._settings.autoscale_interval_s
        while not self._stopping and self._claiming:
            await self._until_scaling_is_due(interval_s)
            try:
                await self._autoscale()
            except Exception:
                log.exception("autoscale failed")

    async def _until_scaling_is_due(self, interval_s: float) -> None:
        """One interval, or less when work is signalled for a model with no replica."""
        idle = [name for name, w in self.workers.items() if w.replicas == 0 and not w.stopping]
        if not idle:
            await asyncio.sleep(interval_s)
            return
        # nothing else waits on these models' signals (they have no slot), so taking
        # the wake-up here steals it from nobody; the new slot claims without one
        waits = [asyncio.ensure_future(self._signal.wait(name, interval_s)) for name in idle]
        try:
            await asyncio.wait(waits, timeout=interval_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()

    async def _autoscale(self) -> None:
        """One tick: observe every served model, decide, share the node, apply."""
        if not self._claiming or not self.workers:
            return
        try:
            self._stats = await self._store.stats()
            self._stats_stale = False
        except StoreUnavailableError:
            if not self._stats_stale:
                log.warning("store unavailable: scaling on the last backlog seen")
            self._stats_stale = True
        now = time.monotonic()
        seen: dict[str, tuple[Observation, Decision]] = {}
        wants: dict[str, Want] = {}
        for name, worker in self.workers.items():
            spec = worker.spec
            obs = Observation(
                now,
                queued=self._stats.get(name, TargetStats()).queued,
                in_flight=worker.in_flight,
                replicas=worker.replicas,
                starting=worker.starting,
            )
            state = self._scale_states.get(name) or ModelScaleState.initial(now)
            decision, self._scale_states[name] = decide(spec.replicas, obs, state)
            seen[name] = obs, decision
            wants[name] = Want.of(decision, spec.replicas, obs, gpus=spec.resources.gpus)
        granted = allocate(
            wants, max_replicas_total=self._settings.max_replicas, max_gpus=len(self.devices)
        )
        for name, (obs, decision) in seen.items():
            self._apply(self.workers[name], obs, decision, granted[name])
        for name in self.not_served:
            queued = self._stats.get(name, TargetStats()).queued
            metrics.model_scale(name, replicas=0, desired=0, queued=queued)

    def _apply(self, worker: ModelWorker, obs: Observation, decision: Decision, grant: int) -> None:
        name = worker.spec.name
        final = capped(decision, grant)
        before = worker.replicas
        after = worker.scale_to(grant)
        reason = final.reason
        if after < grant:
            reason = f"{reason}; waiting for GPUs ({after} of {grant})"
        worker.scaling.desired, worker.scaling.reason = decision.desired, reason
        if grant < decision.desired:
            if name not in self._capped:
                self._capped.add(name)
                metrics.scale_decisions.labels(name, "clamp").inc()
                log.info("model %s: held at %d replicas: %s", name, grant, final.reason)
        else:
            self._capped.discard(name)
        if after != before:
            kind = "down" if after < before else "from_zero" if before == 0 and obs.work else "up"
            metrics.scale_decisions.labels(name, kind).inc()
            worker.record_change(before, after, reason)
            log.info(
                "model %s: %d -> %d replicas (%s; queued %d, running %d)",
                name,
                before,
                after,
                reason,
                obs.queued,
                obs.in_flight,
            )
        metrics.model_scale(name, replicas=after, desired=decision.desired, queued=obs.queued)

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


def _detect_devices(settings: Settings) -> list[str]:
    """The node's GPUs: the ``gpus`` setting, else what ``nvidia-smi`` lists (none
    without it)."""
    output: str | None = None
    if not settings.gpus.strip() and shutil.which(NVIDIA_SMI_QUERY[0]):
        try:
            output = subprocess.run(
                NVIDIA_SMI_QUERY, capture_output=True, text=True, timeout=30, check=True
            ).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("nvidia-smi failed (%s): no GPU is used on this node", exc)
    devices = detect_devices({GPUS_ENV: settings.gpus}, output)
    if devices:
        log.info("GPUs of this node: %s", ", ".join(devices))
    return devices


def _deployable(specs: dict[str, ModelSpec], devices: Sequence[str]) -> dict[str, str]:
    """The models this node cannot serve, with why; raises ConfigError when the
    deployment cannot run here at all."""
    problems = check_deployable(specs.values(), devices)
    fatal = [p.message for p in problems if p.fatal]
    if fatal:
        raise ConfigError("; ".join(fatal), problems=fatal)
    skipped = {p.model: p.message for p in problems if p.model is not None}
    for message in skipped.values():
        log.warning("%s", message)
    return skipped


def _warn_about_the_cap(specs: dict[str, ModelSpec], cap: int | None) -> None:
    floor = sum(spec.replicas.min for spec in specs.values())
    if cap is not None and floor > cap:
        log.warning(
            "max_replicas %d is below the models' minimum replicas together (%d): "
            "some models stay below their min",
            cap,
            floor,
        )
