"""The agent's autoscaler applied to real ModelWorkers: fake replicas, an in-memory store.

Every wait is a condition polled on a deadline; nothing sleeps to synchronise and
no assertion reads a duration. Replicas are fakes launched through the agent's
``launch`` seam, which also shows each one's runner command (its GPU environment).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest

from freight import metrics
from freight.agent import Agent
from freight.agent.replica import ReplicaError, RunnerCommand
from freight.agent.worker import ModelWorker, Persist
from freight.backlog import BacklogGauge
from freight.config import Settings
from freight.errors import ConfigError
from freight.events import CompletionHub, WorkSignal
from freight.model import Batching, Replicas, Resources
from freight.prediction import Prediction, Status
from freight.registry import ModelSpec
from freight.runner.protocol import Batch, Inline, Result
from freight.storage.memory import MemoryStorage
from freight.store.memory import MemoryStore
from freight.system import SystemService

DEADLINE_S = 10.0
T = TypeVar("T")
_ids = itertools.count()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No FREIGHT_* variable of the calling shell leaks into the settings."""
    import os

    for name in list(os.environ):
        if name.startswith("FREIGHT_"):
            monkeypatch.delenv(name)


class Fleet:
    """The fake replicas of one test: inputs ``{"hold": k}`` wait for ``release(k)``."""

    def __init__(self) -> None:
        self.replicas: list[FakeReplica] = []
        self.gates: dict[int, asyncio.Event] = {}
        self.peak_alive = 0  # the most replicas alive at once, over all models

    def gate(self, key: int) -> asyncio.Event:
        return self.gates.setdefault(key, asyncio.Event())

    def release(self, key: int) -> None:
        self.gate(key).set()

    def launch(self, name: str, command: RunnerCommand) -> FakeReplica:
        replica = FakeReplica(name, command, self)
        self.replicas.append(replica)
        return replica

    def alive(self, model: str | None = None) -> list[FakeReplica]:
        return [
            r
            for r in self.replicas
            if r.alive and (model is None or r.name.rpartition("-")[0] == model)
        ]


class FakeReplica:
    def __init__(self, name: str, command: RunnerCommand, fleet: Fleet) -> None:
        self.name = name
        self.command = command
        self.fleet = fleet
        self.load_ms: float | None = None
        self.dead = asyncio.Event()
        self.started = self.ready = self.stopped = False
        self.running = False

    @property
    def env(self) -> dict[str, str]:
        return self.command.env or {}

    @property
    def alive(self) -> bool:
        return self.started and not self.dead.is_set()

    @property
    def serving(self) -> bool:
        return self.ready and self.alive

    async def start(self) -> None:
        self.started = True
        self.fleet.peak_alive = max(self.fleet.peak_alive, len(self.fleet.alive()))
        self.ready, self.load_ms = True, 2.0

    async def run(self, batch: Batch) -> Result:
        self.running = True
        try:
            for item in batch.items:
                hold = orjson.loads(item.input_json or "{}").get("hold")
                if hold is not None:
                    gate = asyncio.ensure_future(self.fleet.gate(hold).wait())
                    death = asyncio.ensure_future(self.dead.wait())
                    await asyncio.wait({gate, death}, return_when=asyncio.FIRST_COMPLETED)
                    gate.cancel()
                    death.cancel()
                    if self.dead.is_set():
                        raise ReplicaError("killed")
            return Result(tuple(Inline(i.id, i.input_json or "null") for i in batch.items), 1.0)
        finally:
            self.running = False

    async def kill(self) -> None:
        self.dead.set()

    async def stop(self, grace_s: float = 5.0) -> None:
        self.stopped = True
        await self.kill()


def spec(
    name: str,
    *,
    min: int = 0,
    max: int = 3,
    target_backlog: int = 1,
    idle_s: float = 3600.0,
    gpus: int = 0,
) -> ModelSpec:
    return ModelSpec(
        name=name,
        ref=f"models:{name}",
        input_kind="json",
        batching=Batching(max_size=1),
        replicas=Replicas(min=min, max=max, target_backlog=target_backlog, idle_s=idle_s),
        timeout_s=None,
        max_attempts=None,
        resources=Resources(gpus=gpus),
    )


@dataclass
class Node:
    """A store, the model workers over it and their fake replicas; ``agent`` runs them
    (``None``: a lone worker whose test scales it by hand)."""

    store: MemoryStore
    signal: WorkSignal
    fleet: Fleet
    workers: dict[str, ModelWorker]
    agent_: Agent | None = None
    queued: list[str] = field(default_factory=list)

    @property
    def agent(self) -> Agent:
        assert self.agent_ is not None
        return self.agent_

    def worker(self, name: str) -> ModelWorker:
        return self.workers[name]

    async def submit(self, target: str, **input: Any) -> str:
        now = time.time()
        prediction_id = f"s{next(_ids):06d}"
        await self.store.create(
            Prediction(
                id=prediction_id,
                target=target,
                status=Status.QUEUED,
                created_at=now,
                queued_at=now,
                input_json=orjson.dumps(input).decode(),
                input_content_type="application/json",
                timeout_s=60.0,
                max_attempts=3,
            )
        )
        self.signal.notify(target)
        return prediction_id

    async def status(self, prediction_id: str) -> Prediction:
        row = await self.store.get(prediction_id)
        assert row is not None
        return row

    async def done(self, prediction_id: str) -> Prediction:
        async def check() -> Prediction | None:
            row = await self.status(prediction_id)
            return row if row.status.terminal else None

        return await until(check)


async def until(check: Callable[[], Awaitable[T | None]]) -> T:
    """Poll an async condition until it gives a value; fail past the deadline."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.005)
    raise AssertionError(f"condition not met within {DEADLINE_S}s")


def holds(condition: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return condition()

    return check


Start = Callable[..., Awaitable[Node]]


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Start]:
    """An agent over the given specs, started; drained at teardown."""
    nodes: list[Node] = []

    async def make(
        *specs: ModelSpec,
        devices: list[str] | None = None,
        queued: Sequence[tuple[str, dict[str, Any]]] = (),
        **settings: Any,
    ) -> Node:
        """``queued``: (model, input) predictions queued before the agent starts, so
        that its first autoscale tick sees them all (``Node.queued``: their ids)."""
        values: dict[str, Any] = {
            "project_dir": tmp_path,
            "state_dir": tmp_path / "state",
            "poll_interval_s": 0.02,
            "autoscale_interval_s": 0.01,
            "retention_s": None,
        }
        store, signal, fleet = MemoryStore(), WorkSignal(), Fleet()
        await store.open()
        agent = Agent(
            Settings(**(values | settings)),
            {s.name: s for s in specs},
            store,
            MemoryStorage(),
            signal=signal,
            hub=CompletionHub(),
            storage_url="memory://",
            devices=devices if devices is not None else [],
            launch=fleet.launch,
        )
        node = Node(store, signal, fleet, agent.workers, agent)
        node.queued = [await node.submit(target, **input) for target, input in queued]
        await agent.start()
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        for gate in node.fleet.gates.values():
            gate.set()
        await node.agent.drain(0)


def _sample(name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return value or 0.0


async def test_min_zero_starts_nothing_and_the_first_request_scales_from_zero(
    start: Start,
) -> None:
    """A min-0 model has no replica until work is queued; its first request then starts
    one (no error), recorded as a scale from zero."""
    before = _sample("freight_scale_decisions_total", model="zero", reason="from_zero")
    node = await start(spec("zero", min=0, max=2))
    assert node.worker("zero").replicas == 0 and node.fleet.replicas == []
    prediction_id = await node.submit("zero", n=1)
    done = await node.done(prediction_id)
    assert (done.status, done.output_json) == (Status.SUCCEEDED, '{"n":1}')
    assert len(node.fleet.replicas) == 1
    state = node.agent.model_states()["zero"]
    assert state.last_change is not None
    assert (state.last_change.before, state.last_change.after) == (0, 1)
    assert state.last_change.reason == "first request: scale from zero"
    assert len(state.cold_starts) == 1 and state.cold_starts[0].load_s == 0.002
    after = _sample("freight_scale_decisions_total", model="zero", reason="from_zero")
    assert after == before + 1


async def test_a_signal_wakes_the_autoscaler_before_its_interval(start: Start) -> None:
    """With an hour between ticks, work signalled for a model at zero still starts a
    replica: the signal wakes the autoscaler."""
    node = await start(spec("zero", min=0), autoscale_interval_s=3600.0)
    prediction_id = await node.submit("zero", n=2)
    assert (await node.done(prediction_id)).status == Status.SUCCEEDED


async def test_back_to_zero_after_idle(start: Start) -> None:
    """Once idle for idle_s the replica is stopped gracefully and the model is at zero."""
    node = await start(spec("zero", min=0, idle_s=0.05))
    assert (await node.done(await node.submit("zero"))).status == Status.SUCCEEDED
    await until(holds(lambda: node.worker("zero").replicas == 0))
    await until(holds(lambda: node.worker("zero").slots == []))
    (replica,) = node.fleet.replicas
    assert replica.stopped
    state = node.agent.model_states()["zero"]
    assert (state.replicas, state.ready_replicas, state.desired) == (0, 0, 0)
    assert state.last_change is not None and state.last_change.after == 0
    assert state.last_change.reason.startswith("idle")
    # and up again on the next request
    assert (await node.done(await node.submit("zero"))).status == Status.SUCCEEDED
    assert len(node.fleet.replicas) == 2


async def test_min_replicas_start_with_the_agent(start: Start) -> None:
    node = await start(spec("warm", min=2, max=3))
    await until(holds(lambda: node.worker("warm").ready_replicas == 2))
    assert node.agent.model_states()["warm"].replicas == 2


async def test_a_backlog_scales_out_to_max(start: Start) -> None:
    """Three held predictions at target_backlog 1: three replicas, each running one."""
    node = await start(spec("wide", min=1, max=3, target_backlog=1))
    ids = [await node.submit("wide", hold=k) for k in range(3)]
    await until(holds(lambda: sum(r.running for r in node.fleet.replicas) == 3))
    assert node.worker("wide").replicas == 3
    for k in range(3):
        node.fleet.release(k)
    rows = [await node.done(i) for i in ids]
    assert {r.status for r in rows} == {Status.SUCCEEDED}
    assert {r.attempts for r in rows} == {1}


async def test_scale_down_never_removes_a_busy_slot(start: Start) -> None:
    """Two replicas, one busy: scaling down to one stops the idle one; the busy one
    finishes its prediction (never interrupted), then leaves too."""
    node = await start(spec("pair", min=0, max=2, target_backlog=1, idle_s=0.05))
    first, second = await node.submit("pair", hold=1), await node.submit("pair", hold=2)
    await until(holds(lambda: sum(r.running for r in node.fleet.replicas) == 2))
    node.fleet.release(1)
    assert (await node.done(first)).status == Status.SUCCEEDED
    busy = next(r for r in node.fleet.replicas if r.running)
    await until(holds(lambda: node.worker("pair").replicas == 1))
    await until(holds(lambda: len(node.fleet.alive()) == 1))
    assert node.fleet.alive() == [busy] and not busy.stopped
    assert (await node.status(second)).status == Status.RUNNING
    node.fleet.release(2)
    done = await node.done(second)
    assert (done.status, done.attempts) == (Status.SUCCEEDED, 1)
    await until(holds(lambda: node.worker("pair").slots == []))
    assert busy.stopped


@pytest.fixture
async def alone(tmp_path: Path) -> AsyncIterator[Node]:
    """A ModelWorker of its own (no autoscaler: the test calls scale_to), one slot."""
    store, signal, fleet = MemoryStore(), WorkSignal(), Fleet()
    await store.open()
    worker = ModelWorker(
        spec("one"),
        RunnerCommand("models:one", tmp_path, "memory://", 1024),
        store=store,
        storage=MemoryStorage(),
        signal=signal,
        worker_id="w",
        lease_s=30.0,
        poll_interval_s=0.02,
        replicas=1,
        on_finished=Persist(store, lambda ids: None, lambda: False),
        launch=fleet.launch,
    )
    worker.start()
    yield Node(store, signal, fleet, {"one": worker})
    for gate in fleet.gates.values():
        gate.set()
    await worker.drain(0)


async def test_a_busy_slot_asked_to_leave_finishes_its_batch_first(alone: Node) -> None:
    """scale_to(0) with a prediction running: the slot leaves only after it succeeded."""
    node, worker = alone, alone.worker("one")
    prediction_id = await node.submit("one", hold=7)
    await until(holds(lambda: any(r.running for r in node.fleet.replicas)))
    assert worker.scale_to(0) == 0
    (replica,) = node.fleet.replicas
    assert not replica.stopped and len(worker.slots) == 1
    node.fleet.release(7)
    done = await node.done(prediction_id)
    assert (done.status, done.attempts) == (Status.SUCCEEDED, 1)
    await until(holds(lambda: worker.slots == []))
    assert replica.stopped


async def test_an_idle_slot_leaves_at_once(alone: Node) -> None:
    worker = alone.worker("one")
    await until(holds(lambda: worker.ready_replicas == 1))
    worker.scale_to(0)
    await until(holds(lambda: worker.slots == []))
    assert alone.fleet.replicas[0].stopped
    # queued work now waits: nothing claims it
    prediction_id = await alone.submit("one")
    assert (await alone.status(prediction_id)).status == Status.QUEUED
    worker.scale_to(1)
    assert (await alone.done(prediction_id)).status == Status.SUCCEEDED


async def test_a_slot_asked_to_stay_again_keeps_its_replica(alone: Node) -> None:
    """Scaling up while a busy slot is on its way out keeps that slot (no new load)."""
    node, worker = alone, alone.worker("one")
    prediction_id = await node.submit("one", hold=3)
    await until(holds(lambda: any(r.running for r in node.fleet.replicas)))
    worker.scale_to(0)
    assert worker.scale_to(1) == 1
    node.fleet.release(3)
    assert (await node.done(prediction_id)).status == Status.SUCCEEDED
    assert (await node.done(await node.submit("one"))).status == Status.SUCCEEDED
    assert len(node.fleet.replicas) == 1 and not node.fleet.replicas[0].stopped


async def test_the_node_cap_holds_across_models(start: Start) -> None:
    """max_replicas 2 over two models with backlogs of 3: one replica each, never more
    than two alive, and the decision says the node is full."""
    before = _sample("freight_scale_decisions_total", model="a", reason="clamp")
    backlog = [(m, {"hold": k}) for m in ("a", "b") for k in range(3)]
    node = await start(spec("a", max=3), spec("b", max=3), max_replicas=2, queued=backlog)
    ids = node.queued
    await until(holds(lambda: sum(r.running for r in node.fleet.replicas) == 2))
    assert (node.worker("a").replicas, node.worker("b").replicas) == (1, 1)
    state = node.agent.model_states()["a"]
    assert state.desired == 3 and (state.reason or "").startswith("capacity: node full")
    assert _sample("freight_scale_decisions_total", model="a", reason="clamp") == before + 1
    for k in range(3):
        node.fleet.release(k)
    rows = [await node.done(i) for i in ids]
    assert {r.status for r in rows} == {Status.SUCCEEDED}
    assert node.fleet.peak_alive <= 2


async def test_each_replica_gets_its_own_gpus(start: Start) -> None:
    """gpus=1 on a three-GPU node: three replicas, one device each, none shared; a
    model without GPUs sees none; devices are free again once the replicas stop."""
    node = await start(
        spec("gpu", max=4, gpus=1, idle_s=0.05),
        spec("cpu", min=1, max=1),
        devices=["0", "1", "2"],
    )
    ids = [await node.submit("gpu", hold=k) for k in range(4)]
    await until(holds(lambda: len([r for r in node.fleet.alive("gpu") if r.running]) == 3))
    assert node.worker("gpu").replicas == 3  # the fourth has no GPU left
    seen = sorted(r.env["CUDA_VISIBLE_DEVICES"] for r in node.fleet.alive("gpu"))
    assert seen == ["0", "1", "2"]
    (cpu,) = node.fleet.alive("cpu")
    assert cpu.env["CUDA_VISIBLE_DEVICES"] == ""
    assert "TMPDIR" in cpu.env  # the worker's own environment is kept
    assert not node.agent.gpu_pool.free
    for k in range(4):
        node.fleet.release(k)
    assert {(await node.done(i)).status for i in ids} == {Status.SUCCEEDED}
    await until(holds(lambda: node.worker("gpu").slots == []))
    assert list(node.agent.gpu_pool.free) == ["0", "1", "2"]


async def test_gpu_models_on_a_node_without_gpus_are_not_served(start: Start) -> None:
    """Not fatal: the other models are served; the GPU one is listed as not served
    and does not hold readiness back (nor does a min-0 model at zero)."""
    specs = [spec("gpu", min=1, gpus=1), spec("cpu", min=1), spec("zero", min=0)]
    node = await start(*specs, devices=[])
    assert set(node.agent.workers) == {"cpu", "zero"}
    state = node.agent.model_states()["gpu"]
    assert not state.served and "has none" in (state.not_served or "")
    await until(holds(lambda: node.worker("cpu").ready_replicas == 1))
    system = SystemService(
        {s.name: s for s in specs}, node.store, BacklogGauge(node.store, 1.0), fleet=node.agent
    )
    await system.check_ready()
    info = await system.model("gpu")
    assert info.state is not None and not info.state.served
    assert (await node.done(await node.submit("cpu"))).status == Status.SUCCEEDED


def test_a_deployment_the_node_cannot_run_fails_the_start(tmp_path: Path) -> None:
    values: dict[str, Any] = {"project_dir": tmp_path, "state_dir": tmp_path / "state"}
    settings = Settings(**values)
    with pytest.raises(ConfigError, match="asks for 2 GPUs; this node has 1"):
        Agent(
            settings,
            {"big": spec("big", gpus=2)},
            MemoryStore(),
            MemoryStorage(),
            signal=WorkSignal(),
            hub=CompletionHub(),
            storage_url="memory://",
            devices=["0"],
        )


async def test_a_worker_without_a_pool_leaves_the_gpu_environment_alone(
    tmp_path: Path,
) -> None:
    """ModelWorker used alone (as the worker tests do): the command is unchanged."""
    store = MemoryStore()
    command = RunnerCommand("models:m", tmp_path, "memory://", 1024, env={"A": "1"})
    worker = ModelWorker(
        spec("m"),
        command,
        store=store,
        storage=MemoryStorage(),
        signal=WorkSignal(),
        worker_id="w",
        lease_s=30.0,
        poll_interval_s=0.02,
        replicas=1,
        on_finished=Persist(store, lambda ids: None, lambda: False),
    )
    assert worker.command_for(worker.slots[0]) is command
