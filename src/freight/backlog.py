"""Queued counts per target, known without a query on the request path.

The bound behind ``429 queue_full`` and the ``freight_backlog`` metric (the
autoscaling signal). A bound, not an exact count: refreshed from the store in
the background at most every ``refresh_s`` and bumped locally in between, so no
create waits for a count (only the very first one, before any count is known).
"""

from __future__ import annotations

import asyncio
import time

from freight.errors import QueueFullError
from freight.prediction import TargetStats
from freight.store.base import Store


class BacklogGauge:
    def __init__(self, store: Store, refresh_s: float) -> None:
        self._store = store
        self._refresh_s = refresh_s
        self._counts: dict[str, int] | None = None
        self._stats: dict[str, TargetStats] = {}
        self._at = 0.0
        self._refreshing: asyncio.Task[None] | None = None

    def snapshot(self) -> dict[str, int]:
        """The counts as last known (never queries)."""
        return dict(self._counts or {})

    def stats(self) -> dict[str, TargetStats]:
        """The whole last count per target (queued, running, oldest queued): what the
        database says, so every API process of a cluster reports the same figures."""
        return dict(self._stats)

    async def fresh(self) -> dict[str, int]:
        """The counts, counted now (a metrics scrape, every few seconds at most, may
        wait for the partial-index counts)."""
        await self._refresh()
        return self.snapshot()

    def add(self, target: str) -> None:
        if self._counts is not None:
            self._counts[target] = self._counts.get(target, 0) + 1

    async def _refresh(self) -> None:
        stats = await self._store.stats()
        self._stats = stats
        self._counts = {t: s.queued + s.awaiting_input for t, s in stats.items()}
        self._at = time.monotonic()

    def _refresh_done(self, task: asyncio.Task[None]) -> None:
        self._refreshing = None
        if not task.cancelled() and task.exception() is not None:
            self._at = time.monotonic()  # store trouble: creates will say so; retry later

    async def check(self, target: str, limit: int) -> None:
        """Raise QueueFullError when ``target`` has ``limit`` or more waiting."""
        if self._counts is None:
            await self._refresh()
        elif time.monotonic() - self._at > self._refresh_s and self._refreshing is None:
            self._refreshing = asyncio.create_task(self._refresh(), name="backlog-refresh")
            self._refreshing.add_done_callback(self._refresh_done)
        count = (self._counts or {}).get(target, 0)
        if count >= limit:
            raise QueueFullError(
                f"model {target!r} has {count} predictions queued (limit {limit})",
                retry_after_s=max(1, int(self._refresh_s * 2)),
                target=target,
                limit=limit,
            )


__all__ = ["BacklogGauge"]
