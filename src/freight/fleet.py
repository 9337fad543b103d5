"""What the services may know of the replicas this process runs: the ``Fleet`` seam.

The agent implements it; the services (and through them the API's readiness
probe, ``/v1/models`` and the replica metrics) read it. A process without an
agent (``freight api`` in the cluster shape) has no fleet: it knows the models
from their specs and the backlog from the store, not their replicas.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class ScaleChange:
    """A decision of the autoscaler that changed a model's replica count."""

    before: int
    after: int
    reason: str
    at: float  # wall-clock seconds


@dataclass(frozen=True, slots=True)
class ColdStart:
    """One replica's start: spawn to ready, and how much of it the model's own load() took."""

    seconds: float
    load_s: float | None  # as the runner reported it (None: not reported)
    at: float  # wall-clock seconds, when it became ready


@dataclass(frozen=True, slots=True)
class ModelState:
    """One model's replicas as this process sees them."""

    ready_replicas: int = 0
    busy: int = 0  # of the ready replicas, those running a batch now
    load_error: dict[str, Any] | None = None
    replicas: int = 0  # alive or starting (those asked to leave are not counted)
    starting: int = 0  # of ``replicas``, those still loading the model
    desired: int | None = None  # the autoscaler's count on its last tick (None: none yet)
    reason: str | None = None  # why, on that tick
    last_change: ScaleChange | None = None
    cold_starts: tuple[ColdStart, ...] = ()  # the last few, oldest first
    served: bool = True  # False: this node cannot serve it (``not_served`` says why)
    not_served: str | None = None


class Fleet(Protocol):
    def model_states(self) -> dict[str, ModelState]:
        """Per model name, its replicas now (never blocks)."""

    async def interrupt(self, prediction_id: str) -> None:
        """A running prediction was canceled: stop the replica that holds it."""


__all__ = ["ColdStart", "Fleet", "ModelState", "ScaleChange"]
