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
class ModelState:
    """One model's replicas as this process sees them."""

    ready_replicas: int = 0
    load_error: dict[str, Any] | None = None


class Fleet(Protocol):
    def model_states(self) -> dict[str, ModelState]:
        """Per model name, its replicas now (never blocks)."""

    async def interrupt(self, prediction_id: str) -> None:
        """A running prediction was canceled: stop the replica that holds it."""


__all__ = ["Fleet", "ModelState"]
