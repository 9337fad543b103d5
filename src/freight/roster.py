"""The roster: the live worker nodes as their census rows say (``agent/census.py``),
read by the API — the one process that can answer for the whole deployment in the
cluster shape — and why each waiting prediction waits (``freight/waiting.py``).

Reads are cached for a second: a page of a hundred queued predictions costs one
query of the nodes, and one of the queue per target and priority.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from freight.cached import Reads
from freight.prediction import Kind, Prediction, Status
from freight.quotas import Quotas
from freight.store import nodes as node_rows
from freight.store._op import Op, Sql
from freight.store.base import Store
from freight.waiting import NodeReport, Waiting, live_since, reason

#: how long a read of the nodes (or of the queue's priorities) is reused
CACHE_S = 1.0

HIGHER_QUEUED = """
SELECT 1 FROM predictions
WHERE status = 'queued' AND target = :target AND priority > :priority LIMIT 1"""


def _higher_queued(target: str, priority: int) -> Op[bool]:
    rows = yield Sql(HIGHER_QUEUED, {"target": target, "priority": priority})
    return bool(rows)


class Roster:
    def __init__(
        self, store: Store, *, census_interval_s: float, quotas: Quotas | None = None
    ) -> None:
        self._store = store
        self._interval_s = census_interval_s
        self._quotas = quotas
        self._nodes: Reads[list[NodeReport]] = Reads(CACHE_S)
        self._higher: Reads[bool] = Reads(CACHE_S)

    async def nodes(self) -> list[NodeReport]:
        """The nodes that reported lately (cached for :data:`CACHE_S`)."""
        return await self._nodes.get("nodes", self._read_nodes)

    async def _read_nodes(self) -> list[NodeReport]:
        since = live_since(time.time(), self._interval_s)
        return await self._store.execute(lambda: node_rows.live(since), write=False)

    async def why(self, row: Prediction) -> Waiting | None:
        """Why ``row`` waits (None: it does not)."""
        if row.status == Status.AWAITING_INPUT or row.kind == Kind.CALLBACK:
            return reason(row, (), now=time.time())
        if row.status != Status.QUEUED:
            return None
        return reason(
            row,
            await self.nodes(),
            now=time.time(),
            higher_queued=await self._higher_queued(row.target, row.priority),
            quota_full=await self._quota_full(row),
        )

    async def why_each(self, rows: Iterable[Prediction]) -> dict[str, Waiting]:
        found: dict[str, Waiting] = {}
        for row in rows:
            waiting = await self.why(row)
            if waiting is not None:
                found[row.id] = waiting
        return found

    async def _higher_queued(self, target: str, priority: int) -> bool:
        return await self._higher.get(
            (target, priority),
            lambda: self._store.execute(lambda: _higher_queued(target, priority), write=False),
        )

    async def _quota_full(self, row: Prediction) -> bool:
        if self._quotas is None:
            return False
        return await self._quotas.in_flight_full(row.tenant, row.target)
