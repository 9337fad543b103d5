"""What an operator watches: each target's last hour (throughput, latency, errors),
its backlog, and the deliveries that fail across predictions — for the console.

Who sees what, as everywhere (:func:`freight.usage.tenant_for`): a key sees its own
tenant's rows (of its own models, for a key limited to some); an ``admin`` key
every tenant's. The hour is read from its most recent ``HOUR_CAP`` finished rows
(``store/insight.py``): on a busier hour the figures are those of its latest part,
and the summary says so (``sampled``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from freight.access import Principal
from freight.prediction import Status, TargetStats
from freight.store import insight
from freight.store.base import Lifecycle
from freight.subscriptions import DeliveryView
from freight.subscriptions import views as delivery_views
from freight.usage import tenant_for

HOUR_S = 3600.0
#: the finished rows an hour's summary reads at most (measured: 20,000 rows take
#: 40 ms on PostgreSQL through ix_predictions_finished)
HOUR_CAP = 20_000
#: the hour's charts: one bucket per this many seconds
BUCKET_S = 120.0
BUCKETS = int(HOUR_S // BUCKET_S)


@dataclass(slots=True)
class TargetHour:
    """One model's or pipeline's last hour and backlog."""

    target: str
    backlog: TargetStats = field(default_factory=TargetStats)
    finished: int = 0
    failed: int = 0
    latencies_ms: list[float] = field(default_factory=list)  # created -> finished, sorted
    counts: list[int] = field(default_factory=lambda: [0] * BUCKETS)  # oldest bucket first
    errors: list[int] = field(default_factory=lambda: [0] * BUCKETS)
    p99s_ms: list[float | None] = field(default_factory=lambda: [None] * BUCKETS)

    @property
    def per_minute(self) -> float:
        return self.finished / (HOUR_S / 60)

    @property
    def error_rate(self) -> float | None:
        return None if not self.finished else self.failed / self.finished

    def percentile_ms(self, q: float) -> float | None:
        """The ``q`` quantile (0..1) of the hour's latencies, nearest rank."""
        if not self.latencies_ms:
            return None
        rank = max(0, min(len(self.latencies_ms) - 1, round(q * len(self.latencies_ms)) - 1))
        return self.latencies_ms[rank]


@dataclass(frozen=True, slots=True)
class Hour:
    """Every target's hour, and whether it was read from its latest rows only."""

    targets: dict[str, TargetHour]
    sampled: bool
    since: float


@dataclass(frozen=True, slots=True)
class FailingDelivery:
    """A delivery that died, was stopped or waits for a retry, with its prediction."""

    prediction_id: str
    target: str
    tenant: str
    view: DeliveryView


class InsightService:
    def __init__(self, store: Lifecycle, *, hour_cap: int = HOUR_CAP) -> None:
        self._store = store
        self._cap = hour_cap

    async def hour(self, who: Principal, now: float | None = None) -> Hour:
        """Each target's backlog and last hour, as ``who`` may see them."""
        now = time.time() if now is None else now
        since = now - HOUR_S
        tenant = tenant_for(who, None)
        targets = who.targets
        rows = await self._store.execute(
            lambda: insight.finished(since=since, cap=self._cap, tenant=tenant, targets=targets),
            write=False,
        )
        backlog = await self._store.execute(
            lambda: insight.backlog(tenant=tenant, targets=targets), write=False
        )
        found: dict[str, TargetHour] = {
            name: TargetHour(name, backlog=stats) for name, stats in backlog.items()
        }
        per_bucket: dict[str, list[list[float]]] = {}
        for row in rows:
            entry = found.setdefault(row.target, TargetHour(row.target))
            bucket = min(BUCKETS - 1, max(0, int((row.finished_at - since) // BUCKET_S)))
            latency_ms = (row.finished_at - row.created_at) * 1000
            entry.finished += 1
            entry.counts[bucket] += 1
            if row.status != Status.SUCCEEDED:
                entry.failed += 1
                entry.errors[bucket] += 1
            entry.latencies_ms.append(latency_ms)
            per_bucket.setdefault(row.target, [[] for _ in range(BUCKETS)])[bucket].append(
                latency_ms
            )
        for name, buckets in per_bucket.items():
            entry = found[name]
            entry.latencies_ms.sort()
            entry.p99s_ms = [_p99(b) for b in buckets]
        return Hour(targets=found, sampled=len(rows) >= self._cap, since=since)

    async def failing_deliveries(
        self, who: Principal, *, before: str | None = None, limit: int = 50
    ) -> tuple[list[FailingDelivery], str | None]:
        """Deliveries that died, were stopped or wait for a retry, newest first, each
        with its attempts; and the cursor of the next page (None: the last page)."""
        tenant = tenant_for(who, None)
        found, after = await self._store.execute(
            lambda: insight.failing(before=before, limit=limit, tenant=tenant), write=False
        )
        out: list[FailingDelivery] = []
        for item in found:
            if who.targets is not None and item.target not in who.targets:
                continue
            views = delivery_views(item.notify, [item.row], item.attempts)
            if views:
                out.append(
                    FailingDelivery(item.row.prediction_id, item.target, item.tenant, views[0])
                )
        return out, after


def _p99(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, round(0.99 * len(ordered)) - 1)]


__all__ = ["HOUR_CAP", "FailingDelivery", "Hour", "InsightService", "TargetHour"]
