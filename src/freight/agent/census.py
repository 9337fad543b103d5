"""The census: each worker node reports its replicas to the store every
``census_interval_s`` (a row of the ``nodes`` table), so that any process — the API
of the cluster shape above all, which runs no replicas — can tell why a queued
prediction waits (``freight/waiting.py``) and show the replicas of every node.

A node that stops says goodbye (its row deleted); one that dies is ignored once it
missed three reports (:func:`freight.waiting.live_since`) and forgotten after an hour.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable

from freight.agent.duties import Periodic, StoreOutage
from freight.fleet import ModelState
from freight.store import nodes
from freight.store.base import Store
from freight.waiting import ModelReport, NodeReport

log = logging.getLogger("freight.agent")


def model_report(state: ModelState) -> ModelReport:
    error = state.load_error or {}
    return ModelReport(
        ready=state.ready_replicas,
        starting=state.starting,
        busy=state.busy,
        replicas=state.replicas,
        desired=state.desired,
        decision=state.reason,
        served=state.served,
        not_served=state.not_served,
        load_error=str(error.get("message") or error.get("code") or "") or None,
    )


class Census(Periodic):
    """Writes this node's :class:`~freight.waiting.NodeReport` every interval."""

    name = "census"

    def __init__(
        self,
        store: Store,
        outage: StoreOutage,
        *,
        node_id: str,
        interval_s: float,
        states: Callable[[], dict[str, ModelState]],
        drivers: int = 1,
    ) -> None:
        super().__init__(interval_s, outage)
        self._store = store
        self._node_id = node_id
        self._states = states
        self._drivers = drivers
        self._host = socket.gethostname()
        self._started_at = time.time()

    def report(self) -> NodeReport:
        return NodeReport(
            id=self._node_id,
            host=self._host,
            started_at=self._started_at,
            seen_at=time.time(),
            models={name: model_report(s) for name, s in self._states().items()},
            drivers=self._drivers,
        )

    async def tick(self) -> None:
        node = self.report()
        await self._store.execute(lambda: nodes.report(node))

    async def goodbye(self) -> None:
        """The node stops: its row goes (best effort; readers time it out otherwise)."""
        try:
            await self._store.execute(lambda: nodes.forget(self._node_id))
        except Exception as exc:  # the store may be the reason we stop
            log.info("could not remove this node's census row: %s", exc)
