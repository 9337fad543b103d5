"""The agent of one worker node: the composition root of its duties.

The agent builds and supervises named duties (:mod:`freight.agent.duties`), each
given only the store role it needs:

- the model workers (``Queue``): each replica slot claims, runs and records its
  batches, and restarts itself after a failure (:mod:`freight.agent.worker`);
- ``autoscaler`` (``Records``): replicas per model (:mod:`freight.agent.autoscaler`);
- ``heartbeat`` and ``reaper`` (``Queue``): this node's leases renewed, everyone's
  expired leases and TTLs enforced;
- ``purger`` (``Records``): retention;
- ``deliverer`` (``Outbox``, and the records it renders): notifications, in a
  process of its own (:mod:`freight.agent.delivery_process`) or a thread
  (:mod:`freight.agent.delivery_thread`), with its own store handle; started and
  stopped with the agent, woken by it;
- ``http-steps`` (``Queue``): the calls of pipelines' http steps
  (:mod:`freight.agent.http_steps`), beside the deliverer, on every node;
- ``batch-driver``: batch jobs (:mod:`freight.batch.driver`).

A duty that crashes is logged with its traceback and restarted with back-off
(:class:`~freight.agent.duties.Supervisor`). In the embedded shape the SQLite
store is exclusive, so at start-up every ``running`` row is an orphan of a
crash and is requeued.

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
from collections.abc import Sequence
from pathlib import Path

from freight.agent.autoscaler import Autoscaler
from freight.agent.caps import InFlightCaps
from freight.agent.census import Census
from freight.agent.delivery import DeliveryHost
from freight.agent.duties import (
    Duty,
    Heartbeat,
    Loop,
    Purger,
    Reaper,
    StoreOutage,
    Supervisor,
)
from freight.agent.forks import Forkserver
from freight.agent.http_steps import HttpCaller, warn_missing_secrets
from freight.agent.logs import LogWriter
from freight.agent.replica import RunnerCommand, exec_runner
from freight.agent.streamed import StreamWriter
from freight.agent.worker import ModelWorker, Persist, ReplicaLauncher
from freight.batch.driver import BatchDriver
from freight.config import Settings
from freight.errors import ConfigError
from freight.events import CompletionHub, Offer, WorkSignal
from freight.fleet import ModelState
from freight.prediction import Prediction
from freight.project import Pipelines
from freight.registry import ModelSpec
from freight.scaling import GpuPool, check_deployable, detect_devices
from freight.scaling.gpus import GPUS_ENV, NVIDIA_SMI_QUERY
from freight.storage.base import Storage
from freight.store.base import Store

log = logging.getLogger("freight.agent")


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
        deliverer: DeliveryHost | None = None,
        devices: Sequence[str] | None = None,
        launch: ReplicaLauncher | None = None,
        pipelines: Pipelines | None = None,
        allow_private: bool | None = None,
    ) -> None:
        """``deliverer``: where the node's notifications are delivered (its own thread
        or process; without it, nothing is delivered); ``devices``: the node's GPUs
        (default: detected); ``launch``: replaces the
        runner processes (tests); ``allow_private``: whether http steps may call private
        addresses (default: the ``webhook_allow_private`` setting)."""
        self._settings = settings
        self._store = store
        self._storage = storage
        self._signal = signal
        self._hub = hub
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stopping = False
        self.deliverer = deliverer
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
        wake = self.deliverer.wake if self.deliverer is not None else None
        self._persist = Persist(store, hub.publish, lambda: self._stopping, on_outbox=wake)
        private = settings.webhook_allow_private if allow_private is None else allow_private
        self.http = HttpCaller(
            store,
            storage,
            self._persist,
            signal=signal,
            worker_id=self.worker_id,
            lease_s=settings.lease_s,
            poll_s=settings.poll_interval_s,
            concurrency=settings.http_step_concurrency,
            allow_private=private,
            inline_max_bytes=settings.inline_output_max_bytes,
        )
        warn_missing_secrets(pipelines.specs.values() if pipelines else (), os.environ)
        # runners' temporary files (S3 inputs, File outputs) live beside the state, on
        # disk rather than a tmpfs, and on the local store's filesystem: moved, not copied
        scratch = (settings.state_dir / "tmp").resolve()
        scratch.mkdir(parents=True, exist_ok=True)
        self.devices = list(devices) if devices is not None else _detect_devices(settings)
        self.gpu_pool = GpuPool(self.devices)
        self.caps = InFlightCaps(store, settings.tenants)
        self.logs = LogWriter(store, hub.publish, settings.max_log_bytes)
        self.streamed = StreamWriter(store, hub.publish)
        self.not_served = _deployable(specs, self.devices)
        served = {name: spec for name, spec in specs.items() if name not in self.not_served}
        _warn_about_the_cap(served, settings.max_replicas)
        # a template per agent: replicas fork from it (started at the first replica start)
        self.forks = (
            Forkserver(Path(settings.project_dir).resolve(), [spec.ref for spec in served.values()])
            if settings.runner_start == "fork"
            else None
        )
        self.workers = {
            name: self._worker(spec, scratch, storage_url, launch) for name, spec in served.items()
        }
        self._build_duties(store, storage)

    def _worker(
        self,
        spec: ModelSpec,
        scratch: Path,
        storage_url: str,
        launch: ReplicaLauncher | None,
    ) -> ModelWorker:
        settings, store = self._settings, self._store
        return ModelWorker(
            spec,
            RunnerCommand(
                spec.ref,
                Path(settings.project_dir).resolve(),
                storage_url,
                settings.inline_output_max_bytes,
                env={"TMPDIR": str(scratch)},
                load_timeout_s=settings.load_timeout_s,
                max_log_bytes=settings.max_log_bytes,
            ),
            store=store,
            storage=self._storage,
            signal=self._signal,
            worker_id=self.worker_id,
            lease_s=settings.lease_s,
            poll_interval_s=settings.poll_interval_s,
            replicas=0,  # the first autoscale tick (at start) brings each to its min
            max_load_attempts=settings.max_load_attempts,
            on_finished=self._persist,
            launch=launch,
            gpu_pool=self.gpu_pool,
            caps=self.caps,
            retry_backoff_s=settings.retry_backoff_s,
            logs=self.logs,
            streamed=self.streamed,
            spawn=self.forks.spawn if self.forks is not None else exec_runner,
        )

    def _build_duties(self, store: Store, storage: Storage) -> None:
        settings = self._settings
        outage = StoreOutage(settings.lease_s)
        self.autoscaler = Autoscaler(
            store,
            self.workers,
            signal=self._signal,
            interval_s=settings.autoscale_interval_s,
            max_replicas=settings.max_replicas,
            gpus=len(self.devices),
            not_served=self.not_served,
        )
        self.heartbeat = Heartbeat(
            store,
            outage,
            worker_id=self.worker_id,
            lease_s=settings.lease_s,
            running=lambda: [
                *(i for w in self.workers.values() for i in w.running_ids()),
                *self.http.running_ids(),
            ],
            interrupt=self._interrupt,
        )
        self.reaper = Reaper(
            store,
            outage,
            interval_s=settings.reap_interval_s,
            signal=self._signal,
            hub=self._hub,
            backoff_s=settings.retry_backoff_s,
        )
        self.purger = Purger(
            store,
            storage,
            outage,
            interval_s=settings.retention_interval_s,
            retention_s=settings.retention_s,
            batch=settings.retention_batch,
        )
        self.census = Census(
            store,
            outage,
            node_id=self.worker_id,
            interval_s=settings.census_interval_s,
            states=self.model_states,
        )
        duties: list[Duty] = [self.autoscaler, self.heartbeat, self.reaper, self.census]
        if settings.retention_s:
            duties.append(self.purger)
        duties.append(Loop("batch-driver", self.driver.run))
        duties.append(Loop("http-steps", self.http.run))
        self.duties = duties
        self.supervisor = Supervisor()

    async def start(self) -> None:
        if self._store.exclusive:
            orphans = await self._store.recover_orphans(
                now=time.time(), backoff_s=self._settings.retry_backoff_s
            )
            if orphans:
                log.warning("requeued %d predictions left running by a previous run", len(orphans))
        for worker in self.workers.values():
            worker.start()
        self._store.hand_off_to(self)
        self.autoscaler.begin()
        try:
            await self.autoscaler.tick()  # the min replicas (and whatever is queued) start now
        except Exception:
            log.exception("autoscale failed (the next tick tries again)")
        try:
            await self.census.tick()  # known to the API before its first interval
        except Exception:
            log.exception("census report failed (the next tick tries again)")
        for duty in self.duties:
            self.supervisor.start(duty)
        if self.deliverer is not None:
            self.deliverer.start()

    async def drain(self, grace_s: float | None = None) -> None:
        """Stop claiming, let running work finish within the grace, requeue the rest."""
        grace = self._settings.drain_grace_s if grace_s is None else grace_s
        self.stop_claiming()
        # heartbeats go on while running work finishes: a lease lapsing mid-drain would
        # let another worker take the prediction over and run it a second time
        await asyncio.gather(
            *(w.drain(grace) for w in self.workers.values()), self.http.drain(grace)
        )
        if self.deliverer is not None:
            await self.deliverer.stop()  # the last completions' events, within a grace
        self._stopping = True
        await self.supervisor.stop()
        await self.logs.close()
        await self.streamed.close()
        if self.forks is not None:
            await self.forks.aclose()
        await self.census.goodbye()

    def stop_claiming(self) -> None:
        """Claim nothing more (called the moment SIGTERM arrives, before the HTTP
        server finishes its open requests); running work goes on until :meth:`drain`."""
        self.autoscaler.stop()
        self._store.hand_off_to(None)
        for worker in self.workers.values():
            worker.stop_claiming()
        self.driver.stop()
        self.http.stop_claiming()

    # -- freight.events.Hands: steps handed to idle replicas by the store ------------
    def offer(self, target: str) -> Offer | None:
        worker = self.workers.get(target)
        return worker.offer() if worker is not None else None

    def take(self, offer: Offer, rows: list[Prediction]) -> None:
        self.workers[offer.target].take(offer, rows)

    def model_states(self) -> dict[str, ModelState]:
        """The :class:`~freight.fleet.Fleet` view of this node's replicas."""
        states = {
            name: ModelState(
                ready_replicas=w.ready_replicas,
                busy=w.busy_replicas,
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
        await self._interrupt({prediction_id})

    async def _interrupt(self, ids: set[str]) -> None:
        """Predictions this node no longer holds: kill the runners running them, stop
        the calls of http steps."""
        for worker in self.workers.values():
            await worker.interrupt(ids)
        await self.http.interrupt(ids)


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
