"""The system service: what the served models look like, and whether this process
is ready — the probes, ``/v1/models`` and the state gauges of ``/metrics``.

Apart from :mod:`freight.service` (predictions) because it answers questions
about the deployment, not about one prediction, and because a worker process
(``freight worker --port``) serves these probes without the prediction routes.
"""

from __future__ import annotations

from dataclasses import dataclass

from freight.backlog import BacklogGauge
from freight.errors import NotFoundError, NotReadyError
from freight.fleet import Fleet, ModelState
from freight.pipelines import PipelineSpec
from freight.prediction import TargetStats
from freight.registry import ModelSpec
from freight.roster import Roster
from freight.store.base import Store
from freight.waiting import Capacity, NodeReport, capacity_of


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A served model: its declaration, its backlog, and its replicas here."""

    spec: ModelSpec
    backlog: TargetStats
    state: ModelState | None  # None: this process runs no replicas (an API process)


class SystemService:
    def __init__(
        self,
        specs: dict[str, ModelSpec],
        store: Store,
        backlog: BacklogGauge,
        fleet: Fleet | None = None,
        pipelines: dict[str, PipelineSpec] | None = None,
        roster: Roster | None = None,
    ) -> None:
        self._specs = specs
        self._pipelines = pipelines or {}
        self._store = store
        self._backlog = backlog
        self._fleet = fleet
        self._roster = roster

    async def check_ready(self) -> None:
        """Raise StoreUnavailableError when the database does not answer, NotReadyError
        when a model that should have a replica here has none loaded."""
        await self._store.ping()
        if self._fleet is None:
            return
        states = self._fleet.model_states()
        missing = [
            name
            for name, spec in sorted(self._specs.items())
            if spec.replicas.min > 0 and _waits_for_a_replica(states.get(name, ModelState()))
        ]
        if missing:
            raise NotReadyError(
                f"models without a ready replica: {', '.join(missing)}", models=missing
            )

    async def models(self) -> list[ModelInfo]:
        stats = await self._store.stats()
        states = await self._states()
        return [
            ModelInfo(
                spec=spec,
                backlog=stats.get(name, TargetStats()),
                state=states.get(name, ModelState()) if states is not None else None,
            )
            for name, spec in sorted(self._specs.items())
        ]

    async def _states(self) -> dict[str, ModelState] | None:
        """This process's replicas; a process without any (the API of the cluster
        shape), the replicas of every live worker node, from their census."""
        if self._fleet is not None:
            return self._fleet.model_states()
        if self._roster is None:
            return None
        nodes = await self._roster.nodes()
        return {name: _state_of(capacity_of(nodes, name)) for name in self._specs}

    async def nodes(self) -> list[NodeReport]:
        """The live worker nodes (none known without a roster)."""
        return await self._roster.nodes() if self._roster is not None else []

    async def model(self, name: str) -> ModelInfo:
        """One served model (NotFoundError naming it otherwise)."""
        spec = self._specs.get(name)
        if spec is None:
            raise NotFoundError(f"no model named {name!r}", code="unknown_target", target=name)
        stats = await self._store.stats()
        states = await self._states()
        state = states.get(name, ModelState()) if states is not None else None
        return ModelInfo(spec=spec, backlog=stats.get(name, TargetStats()), state=state)

    async def model_ready(self, name: str) -> bool:
        """Whether ``name`` takes predictions now (the Open Inference Protocol's model
        ready): a replica of it is loaded somewhere, or it scales from zero (``min: 0``)
        and its replicas do not fail to load. NotFoundError for an unknown model."""
        spec = self._specs.get(name)
        if spec is None:
            raise NotFoundError(f"no model named {name!r}", code="unknown_target", target=name)
        states = await self._states()
        state = (states or {}).get(name, ModelState())
        if state.ready_replicas > 0:
            return True
        return spec.replicas.min == 0 and state.load_error is None

    def pipelines(self) -> list[PipelineSpec]:
        return [self._pipelines[name] for name in sorted(self._pipelines)]

    def pipeline(self, name: str) -> PipelineSpec:
        spec = self._pipelines.get(name)
        if spec is None:
            raise NotFoundError(f"no pipeline named {name!r}", code="unknown_pipeline", name=name)
        return spec

    def backlog_snapshot(self) -> dict[str, int]:
        return self._backlog.snapshot()

    def queue_stats(self) -> dict[str, TargetStats]:
        """Running counts and the oldest queued prediction per target, as last counted."""
        return self._backlog.stats()

    async def refresh_backlog(self) -> dict[str, int]:
        return await self._backlog.fresh()

    def ready_replicas(self) -> dict[str, int]:
        if self._fleet is None:
            return {}
        return {name: s.ready_replicas for name, s in self._fleet.model_states().items()}


def _state_of(capacity: Capacity) -> ModelState:
    """Replicas summed over the live nodes, as one model state."""
    if capacity.nodes == 0 and capacity.not_served:
        return ModelState(served=False, not_served="; ".join(capacity.not_served))
    return ModelState(
        ready_replicas=capacity.ready,
        busy=capacity.busy,
        replicas=capacity.replicas,
        starting=capacity.starting,
        desired=capacity.desired if capacity.nodes else None,
        reason=capacity.decision,
        load_error={"message": capacity.load_error} if capacity.load_error else None,
    )


def _waits_for_a_replica(state: ModelState) -> bool:
    """No replica loaded of a model this node serves (one it cannot serve, such as a
    GPU model on a node without GPUs, does not hold readiness back)."""
    return state.served and state.ready_replicas == 0


__all__ = ["ModelInfo", "SystemService"]
