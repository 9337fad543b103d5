"""Tenants' in-flight bounds applied to this node's claims (``freight/bounds.py``).

Before a claim, a model worker asks :class:`InFlightCaps` how many more rows of its
model each bounded tenant may run; the counts of running rows come from the store,
read at most every :data:`REFRESH_S` (and this node's own claims added to them
meanwhile). A bound, not a lock: nodes claiming at the same instant may each take
the last rooms. Without any ``max_in_flight`` configured it costs nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence

from freight import bounds
from freight.config import TenantQuota
from freight.prediction import Prediction
from freight.store import tenancy
from freight.store.base import Store

#: how long counts of running rows are reused
REFRESH_S = 0.25


class InFlightCaps:
    def __init__(self, store: Store, tenants: Mapping[str, TenantQuota]) -> None:
        self._store = store
        self._tenants = tenants
        self.active = bounds.bounded(tenants)
        self._running: dict[tuple[str, str], int] = {}
        self._read_at = -REFRESH_S
        self._lock = asyncio.Lock()

    async def caps(self, target: str) -> dict[str, int] | None:
        """Each bounded tenant's room for ``target`` now (None: nobody is bounded)."""
        if not self.active:
            return None
        async with self._lock:
            if time.monotonic() - self._read_at >= REFRESH_S:
                self._running = await self._store.execute(tenancy.running_counts, write=False)
                self._read_at = time.monotonic()
        return bounds.caps(self._tenants, self._running, target)

    def claimed(self, rows: Sequence[Prediction]) -> None:
        """Rows this node just claimed count until the next read."""
        if not self.active:
            return
        for row in rows:
            key = (row.tenant, row.target)
            self._running[key] = self._running.get(key, 0) + 1
