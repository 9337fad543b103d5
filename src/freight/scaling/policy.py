"""The autoscaler: how many replicas each model should have, as pure functions.

:func:`decide` looks at one model on one tick and returns the count it wants;
:func:`allocate` shares the node's capacity between the models that want more
than fits. Both are pure so that the rules can be tested on recorded traces and
the applier (the agent) only has to start or stop replicas to match.

The rules, for a model with ``Replicas(min, max, target_backlog, idle_s)`` and
``work = queued + in_flight``:

* **need** = ``ceil(work / target_backlog)`` clamped to ``[min, max]``; any work
  needs at least one replica (``max >= 1``), so a model scaled to zero starts one
  on its first request. That request waits in the queue; it is never refused.
* **Up at once**: when the need exceeds the current count, the count becomes the
  need on that tick (several replicas at once for a burst).
* **Down slowly** (the hysteresis band): the count drops by *one* only after the
  work has fitted on one replica fewer, ``work <= (count - 1) * target_backlog``,
  for ``idle_s`` seconds without a break, and ``idle_s`` after the last change.
  Scaling up happens above ``count * target_backlog``, scaling down needs
  ``(count - 1) * target_backlog`` or less, sustained: a backlog oscillating
  around a threshold raises the count once and then holds it, so the number of
  changes over a trace is bounded by about ``2 * duration / idle_s``.
* Never below ``min`` nor above ``max``; a count outside them (settings changed)
  is brought back at once.
* The policy says only the count. Which replica goes is the applier's choice,
  and it removes idle replicas only: a replica running a prediction is never
  stopped to scale down.

``now`` is any monotonic clock in seconds (the agent passes ``time.monotonic()``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

from freight.model import Replicas


@dataclass(frozen=True, slots=True)
class Observation:
    """One model on one tick, as the agent sees it."""

    now: float
    queued: int  # predictions waiting for a replica
    in_flight: int  # predictions running on a replica
    replicas: int  # replicas running or starting
    starting: int = 0  # of ``replicas``, those still loading the model

    @property
    def work(self) -> int:
        return self.queued + self.in_flight


@dataclass(frozen=True, slots=True)
class ModelScaleState:
    """What :func:`decide` remembers between ticks; returned updated, never mutated.

    Start with :meth:`initial` at agent start-up, so a fresh node waits ``idle_s``
    before its first scale-down instead of dropping replicas it just started.
    """

    last_busy_at: float  # last tick on which one replica fewer could not carry the work
    last_change_at: float  # last tick on which decide changed the count

    @classmethod
    def initial(cls, now: float) -> ModelScaleState:
        return cls(last_busy_at=now, last_change_at=now)


@dataclass(frozen=True, slots=True)
class Decision:
    """The replica count a model should have, with why, for logs and ``freight status``."""

    desired: int
    reason: str


def replicas_needed(replicas: Replicas, work: int) -> int:
    """``ceil(work / target_backlog)`` clamped to ``[min, max]``: at least 1 for any work."""
    need = -(-work // replicas.target_backlog)  # integer ceil, exact for big counts
    return min(max(need, replicas.min), replicas.max)


def _carries(count: int, work: int, replicas: Replicas) -> bool:
    """Whether ``count`` replicas can carry ``work`` at ``target_backlog`` each."""
    return work <= count * replicas.target_backlog


def decide(
    replicas: Replicas, obs: Observation, state: ModelScaleState
) -> tuple[Decision, ModelScaleState]:
    """The count this model should have now, and the state for the next tick."""
    current = obs.replicas
    if current > 0 and not _carries(current - 1, obs.work, replicas):
        state = replace(state, last_busy_at=obs.now)
    need = replicas_needed(replicas, obs.work)
    if need > current:
        changed = replace(state, last_busy_at=obs.now, last_change_at=obs.now)
        return Decision(need, _up_reason(replicas, obs, need)), changed
    if current > replicas.max:
        changed = replace(state, last_change_at=obs.now)
        return Decision(replicas.max, f"above max {replicas.max}"), changed
    if need == current:
        return Decision(current, _hold_reason(replicas, obs)), state
    return _scale_down(replicas, obs, state)


def _scale_down(
    replicas: Replicas, obs: Observation, state: ModelScaleState
) -> tuple[Decision, ModelScaleState]:
    """One replica fewer once the work has fitted on one fewer for ``idle_s``."""
    current = obs.replicas
    if obs.starting:
        # a loading replica has not had its chance to take work; removing another
        # now would be undone as soon as it is ready (a stuck load is the worker's:
        # load timeout and attempts end it)
        return Decision(current, f"hold: {obs.starting} starting"), state
    quiet_since = max(state.last_busy_at, state.last_change_at)
    quiet_for = obs.now - quiet_since
    if quiet_for < replicas.idle_s:
        left = replicas.idle_s - quiet_for
        return Decision(current, f"cooling down: scale-down in {left:.0f} s"), state
    reason = f"idle {quiet_for:.0f} s"
    if obs.work:
        reason += f": backlog {obs.work} fits {current - 1}"
    return Decision(current - 1, reason), replace(state, last_change_at=obs.now)


def _up_reason(replicas: Replicas, obs: Observation, need: int) -> str:
    if obs.replicas == 0 and obs.work:
        return "first request: scale from zero"
    if obs.replicas < replicas.min and need == replicas.min:
        return f"below min {replicas.min}"
    reason = f"backlog {obs.work} > {replicas.target_backlog} per replica x {obs.replicas}"
    if need == replicas.max:
        reason += f" (at max {replicas.max})"
    return reason


def _hold_reason(replicas: Replicas, obs: Observation) -> str:
    if obs.replicas == replicas.max and not _carries(replicas.max, obs.work, replicas):
        return f"at max {replicas.max}: backlog {obs.work}"
    return "steady"


def capped(decision: Decision, granted: int) -> Decision:
    """The decision as :func:`allocate` let it be: says so when the node was full."""
    if granted >= decision.desired:
        return decision
    return Decision(granted, f"capacity: node full ({granted} of {decision.desired})")


@dataclass(frozen=True, slots=True)
class Want:
    """One model's claim on the node, for :func:`allocate`.

    ``memory_mb`` and ``gpus`` are per replica; a bound that the caller leaves at
    ``None`` is not checked, so they may stay 0.
    """

    desired: int
    min: int = 0
    queued: int = 0
    in_flight: int = 0
    memory_mb: int = 0
    gpus: int = 0

    @classmethod
    def of(
        cls,
        decision: Decision,
        replicas: Replicas,
        obs: Observation,
        *,
        memory_mb: int = 0,
        gpus: int = 0,
    ) -> Want:
        return cls(
            desired=decision.desired,
            min=replicas.min,
            queued=obs.queued,
            in_flight=obs.in_flight,
            memory_mb=memory_mb,
            gpus=gpus,
        )

    @property
    def work(self) -> int:
        return self.queued + self.in_flight

    @property
    def ceiling(self) -> int:
        """At most what it asked for; at least 1 with any work (never starved to zero)."""
        return max(self.desired, 1 if self.work else 0)


@dataclass(slots=True)
class _Budget:
    """What is left of the node while :func:`allocate` hands replicas out."""

    replicas: int | None
    memory_mb: int | None
    gpus: int | None

    def fits(self, want: Want) -> bool:
        return (
            (self.replicas is None or self.replicas >= 1)
            and (self.memory_mb is None or self.memory_mb >= want.memory_mb)
            and (self.gpus is None or self.gpus >= want.gpus)
        )

    def take(self, want: Want) -> None:
        if self.replicas is not None:
            self.replicas -= 1
        if self.memory_mb is not None:
            self.memory_mb -= want.memory_mb
        if self.gpus is not None:
            self.gpus -= want.gpus


def allocate(
    wants: Mapping[str, Want],
    *,
    max_replicas_total: int | None,
    max_memory_mb: int | None = None,
    max_gpus: int | None = None,
) -> dict[str, int]:
    """Replicas per model within the node's bounds, handed out one at a time.

    Each round gives one replica to the most deserving model that still fits:
    first a model with work and no replica (so none starves), then one below its
    ``min(min, desired)``, then the one with the larger backlog per replica
    (recomputed after every grant); ties go to the name that sorts first. No
    model gets more than it asked for. A model whose replica does not fit the
    memory or GPUs left is skipped, so a smaller one can still use the rest.
    """
    granted = dict.fromkeys(wants, 0)
    budget = _Budget(max_replicas_total, max_memory_mb, max_gpus)
    while (name := _next_grant(wants, granted, budget)) is not None:
        granted[name] += 1
        budget.take(wants[name])
    return granted


def _next_grant(
    wants: Mapping[str, Want], granted: Mapping[str, int], budget: _Budget
) -> str | None:
    candidates = [
        name for name, want in wants.items() if granted[name] < want.ceiling and budget.fits(want)
    ]
    if not candidates:
        return None
    return min(candidates, key=lambda name: _priority(wants[name], granted[name], name))


def _priority(want: Want, granted: int, name: str) -> tuple[int, float, str]:
    """Sort key, smallest first: (tier, -backlog per replica, name)."""
    if granted == 0 and want.work:
        tier = 0  # work waiting and nothing to run it
    elif granted < min(want.min, want.desired):
        tier = 1  # below its floor
    else:
        tier = 2
    pressure = want.work / granted if granted else math.inf
    if not want.work:
        pressure = 0.0  # nothing waiting: no claim beyond its floor
    return tier, -pressure, name
