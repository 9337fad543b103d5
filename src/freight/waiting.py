"""Why a prediction waits: the reason every queued prediction carries.

An operator must tell *queued* from *stuck* without reading logs. Each worker node
reports its replicas to the store every few seconds (``agent/census.py``: a
:class:`NodeReport` per node); from the live reports, the prediction's row and two
facts of the queue, :func:`reason` says why a row that is not running yet waits:

- ``awaiting_input``: its input was not uploaded yet;
- ``retry_backoff``: a failed attempt is waiting out its back-off before the next;
- ``quota``: its tenant already runs as many as its ``max_in_flight`` allows;
- ``no_replica``: no live worker serves its model (none started, or none can: a GPU
  model on nodes without GPUs), or its replicas fail to load;
- ``cold_start``: replicas of its model are starting (or being scaled up from zero);
- ``lower_priority``: every replica is busy and rows of higher priority go first;
- ``at_capacity``: every replica is busy, and it waits its turn;
- ``awaiting_callback``: a callback step (running, holding nothing) waits for an
  outside answer to its token, until its deadline (``pipelines/callback.py``).

Pure: no I/O. The reports are a few seconds old by design, so a row queued the
instant a replica frees is shown ``at_capacity`` until it is claimed.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from freight.prediction import Kind, Prediction, Status


class Reason(enum.StrEnum):
    AWAITING_INPUT = "awaiting_input"
    RETRY_BACKOFF = "retry_backoff"
    QUOTA = "quota"
    NO_REPLICA = "no_replica"
    COLD_START = "cold_start"
    LOWER_PRIORITY = "lower_priority"
    AT_CAPACITY = "at_capacity"
    AWAITING_CALLBACK = "awaiting_callback"


@dataclass(frozen=True, slots=True)
class Waiting:
    """Why a row waits, and in words for a person."""

    reason: Reason
    message: str


@dataclass(frozen=True, slots=True)
class ModelReport:
    """One model's replicas on one node, as the node last reported them."""

    ready: int = 0
    starting: int = 0
    busy: int = 0  # ready replicas running a batch now
    replicas: int = 0
    desired: int | None = None
    decision: str | None = None  # the autoscaler's reason on its last tick
    served: bool = True
    not_served: str | None = None  # why this node cannot serve it
    load_error: str | None = None  # the last load failure's message, while failing


@dataclass(frozen=True, slots=True)
class NodeReport:
    """A worker node's last report (a row of the ``nodes`` table)."""

    id: str
    host: str
    started_at: float
    seen_at: float
    models: Mapping[str, ModelReport] = field(default_factory=dict)
    drivers: int = 0  # batch drivers: 1 when the node runs batch jobs

    def to_json(self) -> dict[str, Any]:
        return {
            "models": {name: _report_json(m) for name, m in self.models.items()},
            "drivers": self.drivers,
        }

    @classmethod
    def of_row(
        cls, id: str, host: str, started_at: float, seen_at: float, states: dict[str, Any]
    ) -> NodeReport:
        models = {
            name: ModelReport(**{k: v for k, v in entry.items() if k in _FIELDS})
            for name, entry in (states.get("models") or {}).items()
        }
        return cls(id, host, started_at, seen_at, models, int(states.get("drivers") or 0))


_FIELDS = frozenset(ModelReport.__slots__)


def _report_json(m: ModelReport) -> dict[str, Any]:
    return {name: getattr(m, name) for name in ModelReport.__slots__}


#: reports a node may miss before readers take it for gone
MISSED_REPORTS = 3


def live_since(now: float, interval_s: float) -> float:
    """The oldest report that still counts a node as alive."""
    return now - MISSED_REPORTS * interval_s - 1.0


@dataclass(frozen=True, slots=True)
class Capacity:
    """One model across the live nodes."""

    nodes: int = 0  # live nodes that serve it
    ready: int = 0
    starting: int = 0
    busy: int = 0
    replicas: int = 0
    desired: int = 0
    not_served: tuple[str, ...] = ()  # why nodes that could not serve it cannot
    load_error: str | None = None
    decision: str | None = None  # an autoscaler's reason on its last tick (one node's)


def capacity_of(nodes: Iterable[NodeReport], model: str) -> Capacity:
    served = [n.models[model] for n in nodes if model in n.models and n.models[model].served]
    refusals = tuple(
        sorted(
            {
                n.models[model].not_served or "not served"
                for n in nodes
                if model in n.models and not n.models[model].served
            }
        )
    )
    errors = [m.load_error for m in served if m.load_error]
    decisions = [m.decision for m in served if m.decision]
    return Capacity(
        nodes=len(served),
        ready=sum(m.ready for m in served),
        starting=sum(m.starting for m in served),
        busy=min(sum(m.busy for m in served), sum(m.ready for m in served)),
        replicas=sum(m.replicas for m in served),
        desired=sum(m.desired or 0 for m in served),
        not_served=refusals,
        load_error=errors[0] if errors else None,
        decision=decisions[0] if decisions else None,
    )


def reason(
    row: Prediction,
    nodes: Iterable[NodeReport],
    *,
    now: float,
    higher_queued: bool = False,
    quota_full: bool = False,
) -> Waiting | None:
    """Why ``row`` waits (None when it does not: it runs, ended, or is a pipeline step
    pending on the steps before it). ``higher_queued``: rows of its target with a
    higher priority are queued; ``quota_full``: its tenant is at its in-flight bound."""
    if row.status == Status.AWAITING_INPUT:
        return Waiting(Reason.AWAITING_INPUT, "waiting for its input to be uploaded")
    if row.kind == Kind.CALLBACK and row.status == Status.RUNNING:
        left = max(0.0, (row.lease_expires_at or now) - now)
        return Waiting(
            Reason.AWAITING_CALLBACK,
            f"waiting for the answer to its callback (attempt {row.attempts}; "
            f"{left:.0f} s left before it times out)",
        )
    if row.status != Status.QUEUED:
        return None
    not_before = row.not_before
    if not_before is not None and not_before > now:
        return Waiting(
            Reason.RETRY_BACKOFF,
            f"attempt {row.attempts + 1} waits out its back-off ({not_before - now:.1f} s left)",
        )
    if quota_full:
        return Waiting(Reason.QUOTA, f"tenant {row.tenant!r} runs as many as its quota allows")
    live = list(nodes)
    if row.kind == Kind.BATCH:
        if not any(n.drivers for n in live):
            return Waiting(Reason.NO_REPLICA, "no live worker runs batch jobs")
        return Waiting(Reason.AT_CAPACITY, "waiting for a batch driver")
    if row.kind == Kind.HTTP:  # every worker node makes http steps' calls
        if not live:
            return Waiting(Reason.NO_REPLICA, "no live worker makes http steps' calls")
        return Waiting(Reason.AT_CAPACITY, "every worker's http calls are in flight")
    return _model_reason(capacity_of(live, row.target), row.target, higher_queued)


def _model_reason(cap: Capacity, model: str, higher_queued: bool) -> Waiting:
    if cap.nodes == 0:
        why = f": {'; '.join(cap.not_served)}" if cap.not_served else ""
        return Waiting(Reason.NO_REPLICA, f"no live worker serves model {model!r}{why}")
    if cap.ready == 0:
        if cap.load_error and cap.starting == 0:
            return Waiting(
                Reason.NO_REPLICA, f"replicas of {model!r} fail to load: {cap.load_error}"
            )
        if cap.starting:
            return Waiting(Reason.COLD_START, f"{cap.starting} replica(s) of {model!r} loading")
        return Waiting(Reason.COLD_START, f"{model!r} is being scaled up from zero")
    if higher_queued:
        return Waiting(
            Reason.LOWER_PRIORITY,
            f"all {cap.ready} replica(s) of {model!r} busy; higher priorities go first",
        )
    return Waiting(Reason.AT_CAPACITY, f"all {cap.ready} replica(s) of {model!r} busy")


__all__ = [
    "Capacity",
    "ModelReport",
    "NodeReport",
    "Reason",
    "Waiting",
    "capacity_of",
    "live_since",
    "reason",
]
