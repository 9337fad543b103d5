"""A tenant's in-flight bound, as claims apply it (``tenants:`` in freight.yaml).

``max_in_flight`` bounds how many of a tenant's predictions run at once — on the
whole deployment (the tenant's bound) and per model (``models:`` under it). Past it,
a tenant's predictions stay queued (their waiting reason is ``quota``) while other
tenants' are claimed; they are not refused. In flight means rows that hold a
replica: predictions, pipeline steps and batch chunks that run (a pipeline run or a
batch job's own row holds none, and counting it would let a run starve its steps).

Pure: the counts come from the store (``store/tenancy.py`` ``running_counts``).
"""

from __future__ import annotations

from collections.abc import Mapping

from freight.config import Quota, TenantQuota

#: the bounds of every tenant without bounds of its own
ANY_TENANT = "*"

Running = Mapping[tuple[str, str], int]  # (tenant, target) -> rows running


def bounded(tenants: Mapping[str, TenantQuota]) -> bool:
    """Whether any tenant has an in-flight bound (else claims need no counts)."""
    return any(
        q.max_in_flight is not None or any(m.max_in_flight is not None for m in q.models.values())
        for q in tenants.values()
    )


def bounds_of(tenants: Mapping[str, TenantQuota], tenant: str) -> TenantQuota | None:
    return tenants.get(tenant) or tenants.get(ANY_TENANT)


def _left(quota: TenantQuota | None, total: int, of_target: int, target: str) -> int | None:
    """How many more the tenant may run of ``target`` (None: no bound applies)."""
    if quota is None:
        return None
    lefts: list[int] = []
    if quota.max_in_flight is not None:
        lefts.append(quota.max_in_flight - total)
    per_model: Quota | None = quota.models.get(target)
    if per_model is not None and per_model.max_in_flight is not None:
        lefts.append(per_model.max_in_flight - of_target)
    return max(0, min(lefts)) if lefts else None


def caps(tenants: Mapping[str, TenantQuota], running: Running, target: str) -> dict[str, int]:
    """How many more rows of ``target`` each bounded tenant may run now; the key
    :data:`ANY_TENANT` holds what a tenant running nothing may (when ``"*"`` bounds
    it). A tenant absent (and no ``"*"``) is unbounded."""
    totals: dict[str, int] = {}
    of_target: dict[str, int] = {}
    for (tenant, row_target), n in running.items():
        totals[tenant] = totals.get(tenant, 0) + n
        if row_target == target:
            of_target[tenant] = of_target.get(tenant, 0) + n
    found: dict[str, int] = {}
    for tenant in set(totals) | (set(tenants) - {ANY_TENANT}):
        quota = bounds_of(tenants, tenant)
        left = _left(quota, totals.get(tenant, 0), of_target.get(tenant, 0), target)
        if left is not None:
            found[tenant] = left
    fresh = _left(tenants.get(ANY_TENANT), 0, 0, target)
    if fresh is not None:
        found[ANY_TENANT] = fresh
    return found


def cap_of(caps: Mapping[str, int], tenant: str) -> int | None:
    """A tenant's room under :func:`caps` (None: unbounded)."""
    return caps.get(tenant, caps.get(ANY_TENANT))


__all__ = ["ANY_TENANT", "bounded", "bounds_of", "cap_of", "caps"]
