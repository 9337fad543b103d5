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
from freight.store.base import Store


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
    ) -> None:
        self._specs = specs
        self._pipelines = pipelines or {}
        self._store = store
        self._backlog = backlog
        self._fleet = fleet

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
        states = self._fleet.model_states() if self._fleet is not None else {}
        return [
            ModelInfo(
                spec=spec,
                backlog=stats.get(name, TargetStats()),
                state=states.get(name, ModelState()) if self._fleet is not None else None,
            )
            for name, spec in sorted(self._specs.items())
        ]

    async def model(self, name: str) -> ModelInfo:
        """One served model (NotFoundError naming it otherwise)."""
        spec = self._specs.get(name)
        if spec is None:
            raise NotFoundError(f"no model named {name!r}", code="unknown_target", target=name)
        stats = await self._store.stats()
        state = None
        if self._fleet is not None:
            state = self._fleet.model_states().get(name, ModelState())
        return ModelInfo(spec=spec, backlog=stats.get(name, TargetStats()), state=state)

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


def _waits_for_a_replica(state: ModelState) -> bool:
    """No replica loaded of a model this node serves (one it cannot serve, such as a
    GPU model on a node without GPUs, does not hold readiness back)."""
    return state.served and state.ready_replicas == 0


__all__ = ["ModelInfo", "SystemService"]
