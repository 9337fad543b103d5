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

The slots are not fixed: :meth:`ModelWorker.scale_to` adds slots (each loads
its replica at once) and asks slots to leave. A slot leaves only at an idle
point of its loop, between batches: a slot running a batch finishes it first
(and one asked to stay again before that simply goes on). A slot of a model
that asks for GPUs holds its devices (from the agent's
:class:`~freight.scaling.GpuPool`) for its lifetime, and its runners see only
those through ``CUDA_VISIBLE_DEVICES``.

The replica is a seam (:class:`~freight.agent.replica.ReplicaHandle` and a
factory): tests drive every branch of the loop with fakes, no processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from freight import logsetup, metrics, tracing
from freight.agent import batches
from freight.agent.caps import InFlightCaps
from freight.agent.logs import LogWriter
from freight.agent.persist import Persist
from freight.agent.replica import (
    Replica,
    ReplicaError,
    ReplicaHandle,
    ReplicaLoadError,
    RunnerCommand,
    Spawn,
    exec_runner,
)
from freight.agent.streamed import StreamWriter
from freight.agent.traces import BatchTrace
from freight.batch.job import CHUNK
from freight.errors import StoreUnavailableError
from freight.events import Claimed, Offer, WorkSignal
from freight.fleet import ColdStart, ScaleChange
from freight.logs import MAX_LOAD_LINES, Printed
from freight.prediction import RETRY_BACKOFF_S, Completion, ErrorCode, Prediction, Release
from freight.registry import ModelSpec
from freight.runner.protocol import Logs, Streamed
from freight.scaling import GpuPool, visible_devices_env
from freight.storage.base import Storage
from freight.store.base import Queue

log = logging.getLogger("freight.agent")

ReplicaFactory = Callable[[str], ReplicaHandle]
#: a replica from its name and its own command (its environment names its GPUs)
ReplicaLauncher = Callable[[str, RunnerCommand], ReplicaHandle]

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
#: cold starts (spawn -> ready) remembered per model for /v1/models
COLD_STARTS_KEPT = 5


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
    devices: tuple[str, ...] = ()  # GPUs this slot's runners get (held until it ends)
    task: asyncio.Task[None] | None = None
    loading: bool = False  # its replica is starting (spawn -> ready)
    loaded: tuple[float, float] | None = None  # its replica's spawn and ready (epoch s)
    retiring: bool = False  # asked to leave: its loop ends at its next idle point
    gone: bool = False  # its loop ended: it can no longer be asked to stay
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # ends its sleeps
    load_lines: tuple[Printed, ...] = ()  # its replica's load log, for its first batch
    streamed: set[str] = field(default_factory=set)  # running ids that streamed a chunk
    parked: bool = False  # waiting for work (a hand-off may reach it)
    promised: bool = False  # reserved for a transaction's hand-off (``Offer``)
    handed: list[Prediction] = field(default_factory=list)  # rows handed to it, to run

    @property
    def busy(self) -> bool:
        """Running a batch (or recording its outcome)."""
        return bool(self.running) or self.finishing


class Scaling:
    """What the autoscaler last said of one model, and its replicas' cold starts."""

    def __init__(self) -> None:
        self.desired: int | None = None
        self.reason: str | None = None
        self.last_change: ScaleChange | None = None
        self.cold_starts: deque[ColdStart] = deque(maxlen=COLD_STARTS_KEPT)


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
        launch: ReplicaLauncher | None = None,
        gpu_pool: GpuPool | None = None,
        caps: InFlightCaps | None = None,
        retry_backoff_s: float = RETRY_BACKOFF_S,
        logs: LogWriter | None = None,
        streamed: StreamWriter | None = None,
        spawn: Spawn = exec_runner,
    ) -> None:
        """``logs``: where what the runners print goes (None: their stderr only);
        ``streamed``: where a streaming model's chunks go (None: nowhere).
        ``replicas``: the slots it starts with (:meth:`scale_to` changes them).
        ``make_replica`` (a replica from its name) or ``launch`` (from its name and
        command) replace the runner process; ``gpu_pool``: the node's GPUs, of which
        each slot holds ``spec.resources.gpus`` (without a pool the runners' GPU
        environment is left alone); ``spawn``: how its runner processes start (a fresh
        interpreter, or a fork of the agent's template: :mod:`freight.agent.forks`)."""
        self.spec = spec
        self._command = command
        if make_replica is not None:
            self._launch: ReplicaLauncher = lambda name, _command: make_replica(name)
        else:
            self._launch = launch or self._replica
        self._logs = logs
        self._streamed = streamed
        self._spawn_runner = spawn
        self._gpu_pool = gpu_pool
        self._caps = caps
        self._retry_backoff_s = retry_backoff_s
        self._store = store
        self._storage = storage
        self._signal = signal
        self._worker_id = worker_id
        self._lease_s = lease_s
        self._poll_s = poll_interval_s
        self._persist = on_finished
        self.slots: list[Slot] = []
        self._started = False
        self.stopping = False
        self._stopped = asyncio.Event()
        self.health = LoadHealth(max_load_attempts)
        self.scaling = Scaling()
        #: the signal's count read before the last claim that left nothing queued: while
        #: the count is unchanged there is nothing to claim (no empty re-claims)
        self._drained: int | None = None
        #: idle slots claim in turn: one wake-up of a model's idle replicas costs one
        #: claim, not one per slot (on PostgreSQL, sequential predictions of a 2-replica
        #: model made 3 claims each, 2 of them empty, when every woken slot claimed)
        self._turn = asyncio.Lock()
        #: rows handed off to a slot that had stopped waiting meanwhile: the next to claim
        self._handed: deque[list[Prediction]] = deque()
        for _ in range(replicas):
            self._add_slot()

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        self._started = True
        for slot in self.slots:
            self._start_slot(slot)

    def _start_slot(self, slot: Slot) -> None:
        name = f"{self.spec.name}-{slot.index}"
        slot.task = asyncio.create_task(self._slot_loop(slot), name=f"slot:{name}")

    async def drain(self, grace_s: float) -> None:
        """Stop claiming; let running batches finish within the grace; past it kill their
        replicas (what they held is requeued without counting an attempt)."""
        self.stop_claiming()
        tasks = [slot.task for slot in self.slots if slot.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace_s)
            if pending:
                await self._kill_busy()
                _, pending = await asyncio.wait(pending, timeout=DRAIN_KILL_WAIT_S)
                for task in pending:
                    task.cancel()
        for slot in list(self.slots):
            if slot.replica is not None:
                await slot.replica.stop()
            self._release(slot)
        await self._give_back()

    def stop_claiming(self) -> None:
        """Claim nothing more from now on (the first thing a SIGTERM does); what runs
        goes on until :meth:`drain`."""
        self.stopping = True
        self._stopped.set()
        for slot in self.slots:
            slot.wake.set()
        self._signal.notify(self.spec.name)

    # -- scaling -------------------------------------------------------------------
    @property
    def replicas(self) -> int:
        """Slots alive or starting, not counting those asked to leave."""
        return sum(1 for s in self.slots if not s.retiring)

    @property
    def starting(self) -> int:
        """Of :attr:`replicas`, those whose replica is loading."""
        return sum(1 for s in self.slots if s.loading and not s.retiring)

    @property
    def in_flight(self) -> int:
        """Predictions this worker's replicas are running now."""
        return sum(len(s.running) for s in self.slots)

    def scale_to(self, count: int) -> int:
        """Grow or shrink to ``count`` slots; returns :attr:`replicas` after it.

        Growing keeps slots that were asked to leave but are still there, then adds
        new ones (each loads its replica at once); short of GPUs it adds what fits
        (the next call tries again). Shrinking asks slots to leave, the least useful
        first: one without a live replica, then an idle one, then one loading, and a
        busy one last; none is interrupted, a busy one leaves after its batch.
        """
        if self.stopping:
            return self.replicas
        active = [s for s in self.slots if not s.retiring]
        if count > len(active):
            for slot in [s for s in self.slots if s.retiring and not s.gone]:
                if self.replicas >= count:
                    break
                slot.retiring = False
                slot.wake.clear()
            while self.replicas < count and self._add_slot() is not None:
                pass
        elif count < len(active):
            for slot in sorted(active, key=_leave_order)[: len(active) - count]:
                self._ask_to_leave(slot)
        return self.replicas

    def _add_slot(self) -> Slot | None:
        """A new slot (started if the worker is); None when its GPUs are not free."""
        devices: tuple[str, ...] = ()
        if self._gpu_pool is not None:
            got = self._gpu_pool.acquire(self.spec.resources.gpus)
            if got is None:
                return None
            devices = got
        used = {s.index for s in self.slots}
        index = next(i for i in itertools.count() if i not in used)
        slot = Slot(index, devices=devices)
        self.slots.append(slot)
        self._drained = None  # a slot added for queued work claims it without a signal
        if self._started:
            self._start_slot(slot)
        return slot

    def _ask_to_leave(self, slot: Slot) -> None:
        slot.retiring = True
        if slot.task is None:  # never started: nothing runs in it
            self.slots.remove(slot)
            self._release(slot)
            return
        slot.wake.set()  # out of a back-off sleep
        self._signal.notify(self.spec.name)  # out of its wait for work

    async def _leave(self, slot: Slot) -> None:
        """The end of a slot that was asked to leave: its replica stopped, its GPUs freed."""
        if slot.replica is not None:
            await slot.replica.stop()
        if slot in self.slots:
            self.slots.remove(slot)
        self._release(slot)
        log.info("replica %s-%d stopped (scaled down)", self.spec.name, slot.index)

    def _release(self, slot: Slot) -> None:
        if slot.devices and self._gpu_pool is not None:
            self._gpu_pool.release(slot.devices)
        slot.devices = ()

    def _replica(self, name: str, command: RunnerCommand) -> Replica:
        return Replica(
            name,
            command,
            lambda frame: self._printed(name, frame),
            lambda frame: self._yielded(name, frame),
            spawn=self._spawn_runner,
        )

    def _yielded(self, name: str, frame: Streamed) -> None:
        """A streaming model's chunks: stored under the attempt its slot runs."""
        slot = next((s for s in self.slots if f"{self.spec.name}-{s.index}" == name), None)
        row = next((r for r in slot.running if r.id == frame.id), None) if slot else None
        if slot is None or row is None or self._streamed is None:
            return
        slot.streamed.add(row.id)
        self._streamed.add(row.id, row.attempts, frame.parts)

    def _printed(self, name: str, frame: Logs) -> None:
        """A runner's lines: its batch's, each prediction's; before its first batch (its
        load), kept for that batch, marked ``load``."""
        slot = next((s for s in self.slots if f"{self.spec.name}-{s.index}" == name), None)
        if slot is None or self._logs is None:
            return
        if slot.running:
            self._logs.add(slot.running, frame.lines, frame.dropped)
        else:
            slot.load_lines = (*slot.load_lines, *frame.lines)[-MAX_LOAD_LINES:]

    def command_for(self, slot: Slot) -> RunnerCommand:
        """The slot's runner command: the worker's, confined to the slot's GPUs."""
        if self._gpu_pool is None:
            return self._command
        env = {**(self._command.env or {}), **visible_devices_env(slot.devices)}
        return replace(self._command, env=env)

    def record_change(self, before: int, after: int, reason: str) -> None:
        self.scaling.last_change = ScaleChange(before, after, reason, time.time())

    @property
    def cold_starts(self) -> tuple[ColdStart, ...]:
        return tuple(self.scaling.cold_starts)

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
    def busy_replicas(self) -> int:
        """Ready replicas running a batch now (``ready - busy`` could take one more)."""
        return sum(1 for s in self.slots if s.busy and s.replica is not None)

    @property
    def load_error(self) -> dict[str, Any] | None:
        """The last load failure, until a load succeeds (shown on /v1/models)."""
        return self.health.error

    @property
    def unavailable(self) -> bool:
        """Failed to load ``max_load_attempts`` times in a row: its queue is failed."""
        return self.health.unavailable

    def running_ids(self) -> list[str]:
        """What this worker holds: running, or handed off and about to run."""
        held = [row.id for slot in self.slots for row in (*slot.running, *slot.handed)]
        return held + [row.id for rows in self._handed for row in rows]

    # -- hand-offs (freight.events.Hands, through the agent) ------------------------
    def offer(self) -> Offer | None:
        """Reserve a slot waiting for work, for a transaction that queued rows of this
        model (``ops.handing_off`` claims them for it); None when none waits, or when
        a claim of its own must decide (tenants' in-flight bounds apply)."""
        if self.stopping or self._handed or (self._caps is not None and self._caps.active):
            return None
        slot = next((s for s in self.slots if s.parked and not s.promised), None)
        if slot is None or slot.retiring:
            return None
        slot.promised = True
        limit = self.spec.batching.max_size
        return Offer(self.spec.name, limit, self._worker_id, self._lease_s, slot.index)

    def take(self, offer: Offer, rows: list[Prediction]) -> None:
        """The rows claimed under ``offer`` once committed: to its slot if it still
        waits, else to the next slot to claim."""
        slot = next((s for s in self.slots if s.index == offer.slot), None)
        if slot is not None:
            slot.promised = False
        if not rows:
            return
        if slot is not None and slot.parked and not slot.handed:
            slot.handed = list(rows)
        else:
            self._handed.append(list(rows))
        self._signal.nudge(self.spec.name)

    async def _give_back(self) -> None:
        """Rows handed off that no slot ran (a drain): queued again, no attempt counted."""
        rows = [row for slot in self.slots for row in slot.handed]
        rows += [row for batch in self._handed for row in batch]
        self._handed.clear()
        for slot in self.slots:
            slot.handed = []
        if rows:
            back = [
                Release(
                    id=row.id, attempt=row.attempts, worker_id=self._worker_id, count_attempt=False
                )
                for row in rows
            ]
            await self._persist.release(back)

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
        try:
            while not self.stopping and not slot.retiring:
                try:
                    await self._step(slot)
                    backoff_s = BACKOFF_START_S
                except StoreUnavailableError:
                    log.warning(
                        "store unavailable; model %s retries in %.1fs", self.spec.name, backoff_s
                    )
                    await self._sleep(backoff_s, slot)
                    backoff_s = min(backoff_s * 2, STORE_BACKOFF_MAX_S)
                except Exception:
                    log.exception("slot %s-%d failed; restarting it", self.spec.name, slot.index)
                    await self._sleep(backoff_s, slot)
                    backoff_s = min(backoff_s * 2, LOAD_BACKOFF_MAX_S)
        finally:
            slot.gone = True
            if not self.stopping:  # asked to leave (a drain stops what is left itself)
                await self._leave(slot)

    async def _step(self, slot: Slot) -> None:
        """One turn of a slot: (re)load its replica when due, else claim and run."""
        if slot.replica is None or not slot.replica.alive:
            if time.monotonic() < slot.retry_load_at:
                await self._between_loads(slot)
                return
            if not await self._spawn(slot):
                return
        if slot.retiring:
            return
        rows = await self._alone(await self._claim(slot))
        if rows:
            await self._run(slot, rows)

    async def _sleep(self, seconds: float, slot: Slot | None = None) -> None:
        """Sleep, but wake at once when the worker drains (or the slot is asked to leave)."""
        event = slot.wake if slot is not None else self._stopped
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), max(0.0, seconds))

    async def _spawn(self, slot: Slot) -> bool:
        """A fresh replica in the slot; False (and the next try scheduled) when it did
        not load."""
        if slot.replica is not None:
            await slot.replica.kill()
        slot.replica = self._launch(f"{self.spec.name}-{slot.index}", self.command_for(slot))
        slot.loading, slot.loaded = True, None
        began, spawned = time.monotonic(), time.time()
        try:
            await slot.replica.start()
        except ReplicaLoadError as exc:
            self._load_failed(slot, exc)
            return False
        finally:
            slot.loading = False
        slot.loaded = (spawned, time.time())
        self._started_one(slot.replica, time.monotonic() - began)
        self.health.loaded()
        slot.load_backoff_s = 0.0
        return True

    def _started_one(self, replica: ReplicaHandle, seconds: float) -> None:
        load_s = replica.load_ms / 1000 if replica.load_ms is not None else None
        self.scaling.cold_starts.append(ColdStart(seconds, load_s, time.time()))
        metrics.cold_start_seconds.labels(self.spec.name).observe(seconds)

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
            await self._sleep(remaining, slot)
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

    async def _claim(self, slot: Slot) -> list[Prediction]:
        batching = self.spec.batching
        rows = await self._next(slot)
        if not rows:
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

    async def _next(self, slot: Slot) -> list[Prediction]:
        """The rows a slot runs next: those handed to it, else a claim, unless the last
        claim left nothing queued and nothing was notified since; else it waits for a
        notification, a hand-off or the poll interval (then it claims)."""
        name = self.spec.name
        async with self._turn:  # the slot before this one may have drained the queue
            mark = self._signal.seen(name)
            if not slot.handed and not self._handed and self._drained != mark:
                rows = await self._claim_some(self.spec.batching.max_size)
                if rows:
                    return rows
        if not slot.handed and not self._handed and not self.stopping:
            slot.parked = True
            try:
                woken = await self._signal.wait(name, self._poll_s, since=mark)
            finally:
                slot.parked = slot.promised = False
            if not woken:  # the poll: claim next time, whatever the count says
                self._drained = None
        if slot.handed:
            rows, slot.handed = slot.handed, []
            return rows
        return self._handed.popleft() if self._handed else []

    async def _alone(self, rows: list[Prediction]) -> list[Prediction]:
        """A batch job's chunk runs alone: never batched with interactive predictions
        (they would wait for its records) nor with another chunk (the other replicas
        take it). What is given back is requeued without counting an attempt."""
        chunks = [row for row in rows if row.kind == CHUNK]
        if not chunks or len(rows) == 1:
            return rows
        keep = [row for row in rows if row.kind != CHUNK] or chunks[:1]
        kept = {row.id for row in keep}
        back = [
            Release(id=row.id, attempt=row.attempts, worker_id=self._worker_id, count_attempt=False)
            for row in rows
            if row.id not in kept
        ]
        await self._persist.release(back)
        self._signal.notify(self.spec.name)
        return keep

    async def _claim_some(self, limit: int) -> list[Prediction]:
        if self.stopping:
            return []
        caps = await self._caps.caps(self.spec.name) if self._caps is not None else None
        mark = self._signal.seen(self.spec.name)
        rows = await self._store.claim(
            self.spec.name,
            limit,
            worker_id=self._worker_id,
            lease_s=self._lease_s,
            now=time.time(),
            caps=caps,
        )
        if caps is not None and self._caps is not None:
            self._caps.claimed(rows)
        # a store that does not say (a fake) is taken to have left more
        self._drained = mark if isinstance(rows, Claimed) and not rows.more else None
        return rows

    async def _run(self, slot: Slot, rows: list[Prediction]) -> None:
        trace = BatchTrace(rows) if tracing.ENABLED else None
        with _named(rows, trace):
            await self._run_batch(slot, rows, trace)

    async def _run_batch(
        self, slot: Slot, rows: list[Prediction], trace: BatchTrace | None
    ) -> None:
        replica = slot.replica
        assert replica is not None
        slot.running, slot.interrupted, slot.draining_kill = rows, set(), False
        slot.finishing, slot.streamed = False, set()
        timeout_s = min(row.timeout_s for row in rows)
        batch = batches.batch(rows, deadline=time.time() + timeout_s)
        if slot.load_lines and self._logs is not None:  # the batch that waited for the load
            self._logs.add(rows, slot.load_lines)
        slot.load_lines = ()
        began, sent_at = time.monotonic(), time.time()
        try:
            result = await asyncio.wait_for(replica.run(batch), timeout_s)
        except TimeoutError:
            await replica.kill()
            message = f"the model did not finish within {timeout_s:g} s"
            now = time.time()
            outcomes = batches.failed(rows, self._worker_id, now, ErrorCode.TIMEOUT, message)
            self._charge(slot, rows, outcomes, time.monotonic() - began)
            await self._finish(rows, outcomes)
            if trace is not None:
                trace.end(outcomes)
        except ReplicaError as exc:
            await replica.kill()
            await self._after_crash(slot, rows, exc)
        else:
            wall_s = time.monotonic() - began
            slot.finishing = True
            outcomes, objects = batches.outcome(rows, result, self._worker_id, time.time())
            log.debug("%s ran %d in %.1f ms", self.spec.name, len(rows), wall_s * 1000)
            if trace is not None:
                trace.ran(result.marks, sent_at, time.time())
            self._charge(slot, rows, outcomes, wall_s)
            if objects:
                await self._storage.put_many(objects)
            if trace is not None:
                trace.stored(time.time())
            await self._finish(rows, outcomes)
            if trace is not None:
                trace.end(outcomes)
        finally:
            slot.running, slot.finishing = [], False
            if trace is not None:  # requeued (the replica died), or not recorded
                trace.end(error="the attempt did not complete")

    def _charge(
        self, slot: Slot, rows: list[Prediction], outcomes: list[Completion], wall_s: float
    ) -> None:
        """The batch's cost on its completions (the usage ledger): the GPUs the slot
        holds (all the model asks for where the worker has no pool of them)."""
        gpus = len(slot.devices) if self._gpu_pool is not None else self.spec.resources.gpus
        batches.charge(rows, outcomes, wall_s=wall_s, gpus=gpus, loaded=slot.loaded)

    async def _finish(self, rows: list[Prediction], outcomes: list[Completion]) -> None:
        if self._logs is not None:  # whole when seen ended (nothing to wait for: no wait)
            await self._logs.drain()
        if self._streamed is not None:  # every chunk stored before the end is
            await self._streamed.drain()
        # a step's run, if it has subscriptions, is the store's to announce (Told.outbox):
        # waking the deliverer for every step made it claim nothing ~2.4 times a B4 run
        outbox = any(r.notify is not None for r in rows)
        await self._persist.complete(outcomes, outbox=outbox)
        metrics.record_batch(self.spec.name, rows, outcomes)

    async def _after_crash(self, slot: Slot, rows: list[Prediction], exc: Exception) -> None:
        """Requeue what the dead runner held: its fault counts as an attempt, unless
        we killed it ourselves (cancel of a neighbour, drain). A prediction that already
        streamed chunks fails ``replica_failed`` instead: run again, it would stream
        from its start a second time to clients that saw the first."""
        gone = slot.streamed - slot.interrupted
        streamed = [row for row in rows if row.id in gone]
        if streamed:
            rows = [row for row in rows if row not in streamed]
            message = "the replica died while the prediction streamed: a stream is not restarted"
            failed = batches.failed(
                streamed, self._worker_id, time.time(), ErrorCode.REPLICA_FAILED, message
            )
            await self._finish(streamed, failed)
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
                backoff_s=self._retry_backoff_s,
            )
            for row in rows
            if row.id not in slot.interrupted
        ]
        if self._logs is not None:
            await self._logs.drain()
        if releases:
            await self._persist.release(releases)
        self._signal.notify(self.spec.name)


def _named(rows: list[Prediction], trace: BatchTrace | None) -> contextlib.ExitStack:
    """A batch of one names its prediction in the worker's log lines (and makes its
    span current, for the trace ids); a larger batch is no one prediction's."""
    stack = contextlib.ExitStack()
    if len(rows) == 1:
        row = rows[0]
        named = logsetup.bound(prediction_id=row.id, run_id=row.run_id, tenant=row.tenant)
        stack.enter_context(named)
        if trace is not None:
            stack.enter_context(tracing.current(trace.spans[row.id]))
    return stack


def _leave_order(slot: Slot) -> tuple[int, int]:
    """Which slot leaves first when scaling down (smallest first); newest first on a tie."""
    if slot.busy:
        rank = 3
    elif slot.loading:
        rank = 2
    elif slot.replica is None or not slot.replica.alive:
        rank = 0  # nothing loaded (between failed loads): nothing lost
    else:
        rank = 1
    return rank, -slot.index


__all__ = [
    "LoadHealth",
    "ModelWorker",
    "Persist",
    "ReplicaFactory",
    "ReplicaLauncher",
    "Scaling",
    "Slot",
]
