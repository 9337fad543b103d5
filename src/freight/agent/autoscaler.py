"""The autoscaler duty: how many replicas each model this node serves runs.

Every ``interval_s``: each served model's backlog (``Records.stats()``) and
replicas are observed, :func:`~freight.scaling.decide` says how many replicas
each should have, :func:`~freight.scaling.allocate` shares the node
(``max_replicas``, the GPUs) between them, and the workers grow or shrink to
that. A model at zero replicas wakes the duty at once when work for it is
signalled in this process, so its first request starts a replica without
waiting for the next tick. With the store down it scales on the last backlog
it read.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

from freight import metrics
from freight.agent.worker import ModelWorker
from freight.errors import StoreUnavailableError
from freight.events import WorkSignal
from freight.prediction import TargetStats
from freight.scaling import (
    Decision,
    ModelScaleState,
    Observation,
    Want,
    allocate,
    capped,
    decide,
)
from freight.store.base import Records

log = logging.getLogger("freight.agent")


class Autoscaler:
    """Scales ``workers`` (and reports the models ``not_served`` here at zero)."""

    name = "autoscaler"

    def __init__(
        self,
        records: Records,
        workers: Mapping[str, ModelWorker],
        *,
        signal: WorkSignal,
        interval_s: float,
        max_replicas: int | None,
        gpus: int,
        not_served: Mapping[str, str],
    ) -> None:
        self._records = records
        self._workers = workers
        self._signal = signal
        self._interval_s = interval_s
        self._max_replicas = max_replicas
        self._gpus = gpus
        self._not_served = not_served
        self._states: dict[str, ModelScaleState] = {}
        self._stats: dict[str, TargetStats] = {}  # the last backlog read (kept over an outage)
        self._stats_stale = False
        self._capped: set[str] = set()  # models the node's capacity holds below their need
        self.stopped = False

    def begin(self) -> None:
        """Every model starts from its initial state (the agent's start)."""
        now = time.monotonic()
        self._states = {name: ModelScaleState.initial(now) for name in self._workers}

    def stop(self) -> None:
        """No more ticks: the loop ends and the workers keep what they have."""
        self.stopped = True

    async def run(self) -> None:
        while not self.stopped:
            await self._until_due()
            await self.tick()

    async def _until_due(self) -> None:
        """One interval, or less when work is signalled for a model with no replica."""
        interval_s = self._interval_s
        idle = [name for name, w in self._workers.items() if w.replicas == 0 and not w.stopping]
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

    async def tick(self) -> None:
        """One tick: observe every served model, decide, share the node, apply."""
        if self.stopped or not self._workers:
            return
        try:
            self._stats = await self._records.stats()
            self._stats_stale = False
        except StoreUnavailableError:
            if not self._stats_stale:
                log.warning("store unavailable: scaling on the last backlog seen")
            self._stats_stale = True
        now = time.monotonic()
        seen: dict[str, tuple[Observation, Decision]] = {}
        wants: dict[str, Want] = {}
        for name, worker in self._workers.items():
            spec = worker.spec
            obs = Observation(
                now,
                queued=self._stats.get(name, TargetStats()).queued,
                in_flight=worker.in_flight,
                replicas=worker.replicas,
                starting=worker.starting,
            )
            state = self._states.get(name) or ModelScaleState.initial(now)
            decision, self._states[name] = decide(spec.replicas, obs, state)
            seen[name] = obs, decision
            wants[name] = Want.of(decision, spec.replicas, obs, gpus=spec.resources.gpus)
        granted = allocate(wants, max_replicas_total=self._max_replicas, max_gpus=self._gpus)
        for name, (obs, decision) in seen.items():
            self._apply(self._workers[name], obs, decision, granted[name])
        for name in self._not_served:
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


__all__ = ["Autoscaler"]
