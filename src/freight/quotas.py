"""Tenants' quotas: how much each may have waiting and running, and how fast it may
create (``tenants:`` in freight.yaml; ``"*"`` holds the bounds of every tenant
without its own).

Past a bound of the queue, a create answers ``429`` with ``Retry-After`` and a code
naming it: ``quota_max_queued``, ``quota_rate``. Below every bound, nothing is
refused.

- ``max_queued`` is counted in the store when the tenant creates (only for tenants
  with such a bound; the count stops at the bound). Concurrent creates checked at
  the same instant may each pass: a bound, not a lock.
- ``max_in_flight`` refuses nothing: past it, the tenant's predictions stay queued
  (waiting reason ``quota``) while other tenants' run — the claims apply it
  (``freight/bounds.py``, ``agent/caps.py``); :meth:`Quotas.in_flight_full` tells.
- ``rate`` is a moving window of creates, kept by each API process (the ``limits``
  library, in memory): with N API processes a tenant may reach N times its rate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable

import limits
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from freight import bounds
from freight.bounds import ANY_TENANT
from freight.cached import Reads
from freight.config import Quota, TenantQuota
from freight.errors import QuotaExceededError
from freight.store import tenancy
from freight.store.base import Store

#: how long a caller refused for a bound of the queue waits before it retries (s)
QUEUE_RETRY_S = 1
#: how long the counts of rows in flight are reused to tell a ``quota`` wait (s)
RUNNING_CACHE_S = 0.5


class Quotas:
    def __init__(
        self,
        tenants: dict[str, TenantQuota],
        store: Store,
        targets: Callable[[], Iterable[str]],
    ) -> None:
        self._tenants = tenants
        self._store = store
        self._targets = targets  # every model and pipeline (a tenant-wide count's scope)
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._rates: dict[str, limits.RateLimitItem] = {}
        self._running: Reads[dict[tuple[str, str], int]] = Reads(RUNNING_CACHE_S)

    def bounds(self, tenant: str) -> TenantQuota | None:
        return bounds.bounds_of(self._tenants, tenant)

    async def check(self, tenant: str, target: str, idempotency_key: str | None = None) -> None:
        """Raise QuotaExceededError when ``tenant`` may not create one more ``target``
        prediction now; count the create against its rates otherwise. The replay of a
        create already made (same idempotency key) is never refused nor counted."""
        bounds = self.bounds(tenant)
        if bounds is None:
            return
        if idempotency_key is not None and await self._store.execute(
            lambda: tenancy.has_idempotency_key(tenant, idempotency_key), write=False
        ):
            return
        per_model = bounds.models.get(target)
        await self._check_load(tenant, None, bounds)
        if per_model is not None:
            await self._check_load(tenant, target, per_model)
        # the rates last: a create refused for another bound spends none of them
        self._hit(f"{tenant}", bounds)
        if per_model is not None:
            self._hit(f"{tenant}\x00{target}", per_model)

    async def in_flight_full(self, tenant: str, target: str) -> bool:
        """Whether ``tenant`` runs as many rows of ``target`` as its in-flight bounds
        allow (its queued ones wait for it)."""
        if not bounds.bounded(self._tenants):
            return False
        counts = await self._running.get(
            "running", lambda: self._store.execute(tenancy.running_counts, write=False)
        )
        caps = bounds.caps(self._tenants, counts, target)
        return bounds.cap_of(caps, tenant) == 0

    async def _check_load(self, tenant: str, target: str | None, quota: Quota) -> None:
        if quota.max_queued is None:
            return
        bound = quota.max_queued
        targets = [target] if target is not None else list(self._targets())
        load = await self._store.execute(
            lambda: tenancy.tenant_load(tenant, targets, bound), write=False
        )
        scope = {"tenant": tenant} | ({"target": target} if target else {})
        waiting = load.get("queued", 0) + load.get("awaiting_input", 0)
        if quota.max_queued is not None and waiting >= quota.max_queued:
            raise QuotaExceededError(
                f"tenant {tenant!r} has {quota.max_queued} predictions waiting"
                + (f" for {target!r}" if target else "")
                + ", its quota",
                code="quota_max_queued",
                retry_after_s=QUEUE_RETRY_S,
                limit=quota.max_queued,
                **scope,
            )

    def _hit(self, key: str, quota: Quota) -> None:
        if quota.rate is None:
            return
        item = self._rates.get(quota.rate)
        if item is None:
            item = self._rates[quota.rate] = limits.parse(quota.rate)
        if self._limiter.hit(item, key):
            return
        reset_at = self._limiter.get_window_stats(item, key).reset_time
        raise QuotaExceededError(
            f"over the rate of {quota.rate}",
            code="quota_rate",
            retry_after_s=max(1, math.ceil(reset_at - time.time())),
            rate=quota.rate,
        )


__all__ = ["ANY_TENANT", "Quotas"]
