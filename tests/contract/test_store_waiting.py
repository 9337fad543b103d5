"""What the reasons of waiting rest on, on every backend: tenants' in-flight bounds
applied by the claim (``caps``), the rows in flight counted per tenant and target,
and the worker nodes' census rows."""

from __future__ import annotations

from collections import Counter

from freight import bounds
from freight.config import TenantQuota
from freight.store import Store, nodes, tenancy
from freight.waiting import ModelReport, NodeReport
from tests.contract.test_store_fairness import LEASE_S, T0, add, make, store

__all__ = ["store"]


async def claim(store: Store, limit: int, caps: dict[str, int] | None) -> Counter[str]:
    rows = await store.claim("m", limit, worker_id="w", lease_s=LEASE_S, now=T0 + 1, caps=caps)
    return Counter(row.tenant for row in rows)


async def test_a_tenant_at_its_bound_is_passed_over(store: Store) -> None:
    await add(store, [make("a") for _ in range(4)] + [make("b") for _ in range(4)])
    assert await claim(store, 4, {"a": 0}) == Counter(b=4)
    # room for one: a's share and the top-up both stop at it
    assert await claim(store, 4, {"a": 1}) == Counter(a=1)
    # "*" bounds every tenant without its own entry
    assert await claim(store, 8, {"*": 2}) == Counter(a=2)


async def test_running_counts_are_rows_holding_a_replica(store: Store) -> None:
    await add(store, [make("a"), make("a"), make("b"), make("a", target="n")])
    await store.claim("m", 3, worker_id="w", lease_s=LEASE_S, now=T0 + 1)
    await store.claim("n", 3, worker_id="w", lease_s=LEASE_S, now=T0 + 1)
    counts = await store.execute(tenancy.running_counts, write=False)
    assert counts == {("a", "m"): 2, ("b", "m"): 1, ("a", "n"): 1}
    quotas = {"a": TenantQuota(max_in_flight=4, models={"m": {"max_in_flight": 2}})}
    assert bounds.caps(quotas, counts, "m") == {"a": 0}
    assert bounds.caps(quotas, counts, "n") == {"a": 1}


async def test_nodes_report_live_and_forget(store: Store) -> None:
    one = NodeReport("n1", "h", T0, T0 + 5, {"m": ModelReport(ready=1, busy=1)}, drivers=1)
    two = NodeReport("n2", "h", T0, T0 + 1, {"m": ModelReport(served=False, not_served="gpu")})
    for node in (one, two):
        await store.execute(lambda node=node: nodes.report(node))
    assert [n.id for n in await store.execute(lambda: nodes.live(T0 + 2), write=False)] == ["n1"]
    # a second report replaces the first
    later = NodeReport("n1", "h", T0, T0 + 9, {"m": ModelReport(ready=2)})
    await store.execute(lambda: nodes.report(later))
    (found,) = await store.execute(lambda: nodes.live(T0 + 2), write=False)
    assert found == later
    await store.execute(lambda: nodes.forget("n1"))
    assert await store.execute(lambda: nodes.live(0), write=False) == [two]
