"""Claims are fair between tenants (``ops.claim``), on every backend.

A tenant's rows are claimed in its own order (priority desc, then oldest); between
tenants each claim is shared equally, the turn going round from claim to claim, so
that a tenant with a large backlog does not starve one that queues a few rows
later. Assertions are on the order of claims, never on time.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from freight.ids import new_id
from freight.prediction import Prediction, Status
from freight.store import Store, open_store, sql
from freight.store._migrate import sqlalchemy_url
from freight.store.rows import fair_shares

T0 = 1_000_000.0
LEASE_S = 30.0


def make(tenant: str, *, target: str = "m", priority: int = 0) -> Prediction:
    return Prediction(
        id=new_id(),
        target=target,
        status=Status.QUEUED,
        created_at=T0,
        queued_at=T0,
        priority=priority,
        tenant=tenant,
    )


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    s = open_store(store_url)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def add(store: Store, predictions: Iterable[Prediction]) -> list[Prediction]:
    """Create in order (ids are UUIDv7: created later is younger), 100 at a time."""
    rows = list(predictions)
    for i in range(0, len(rows), 100):
        await asyncio.gather(*(store.create(p) for p in rows[i : i + 100]))
    return rows


async def claim(store: Store, limit: int, target: str = "m") -> list[Prediction]:
    return await store.claim(target, limit, worker_id="w", lease_s=LEASE_S, now=T0 + 1)


async def test_a_late_small_tenant_is_not_starved_by_a_large_backlog(store: Store) -> None:
    """Tenant A queues 2,000, tenant B then 20: claimed in batches of 8, B's are all
    claimed within the first few batches (half of each), most of A's still queued."""
    a = await add(store, (make("a") for _ in range(2000)))
    b = await add(store, (make("b") for _ in range(20)))
    batches: list[list[Prediction]] = []
    wanted = {p.id for p in b}
    while wanted and len(batches) < 300:
        batch = await claim(store, 8)
        assert batch, "the backlog ran dry before B's rows were claimed"
        batches.append(batch)
        wanted -= {p.id for p in batch}
    assert not wanted
    assert len(batches) == 5  # 20 rows of B at 4 a batch
    for batch in batches:
        assert Counter(p.tenant for p in batch) == {"a": 4, "b": 4}
    claimed = [p.id for batch in batches for p in batch]
    # each tenant's rows in its own order: A's and B's oldest first
    assert [i for i in claimed if i in {p.id for p in b}] == [p.id for p in b]
    assert [i for i in claimed if i not in wanted and i in {p.id for p in a}] == [
        p.id for p in a[:20]
    ]
    queued = await store.list(target="m", status=Status.QUEUED, limit=2000)
    assert len(queued) == 1980 > 1900
    assert {p.tenant for p in queued} == {"a"}


async def test_one_tenant_claims_by_priority_then_age(store: Store) -> None:
    """A single tenant's rows are claimed exactly as before tenants: priority desc,
    then oldest, in batches that follow one another."""
    priorities = [0, 5, 0, 9, 5, 0, -3, 9, 0, 5]
    rows = await add(store, (make("solo", priority=pr) for pr in priorities))
    await add(store, [make("solo", target="other", priority=99)])
    claimed: list[Prediction] = []
    while batch := await claim(store, 3):
        assert [p.id for p in batch] == [
            p.id for p in sorted(batch, key=lambda p: (-p.priority, p.id))
        ]
        claimed += batch
    expected = sorted(rows, key=lambda p: (-p.priority, p.id))
    assert [p.id for p in claimed] == [p.id for p in expected]


async def test_priority_orders_within_a_tenant_and_not_between(store: Store) -> None:
    """Within a tenant a higher priority goes first; between tenants the share is
    equal whatever the priorities (a tenant cannot raise its way past another)."""
    a_low = await add(store, (make("a") for _ in range(3)))
    a_high = await add(store, (make("a", priority=100) for _ in range(3)))
    b_low = await add(store, (make("b", priority=-5) for _ in range(3)))
    first = await claim(store, 4)
    assert Counter(p.tenant for p in first) == {"a": 2, "b": 2}
    assert {p.id for p in first if p.tenant == "a"} == {p.id for p in a_high[:2]}
    assert {p.id for p in first if p.tenant == "b"} == {p.id for p in b_low[:2]}
    second = await claim(store, 4)  # B has one left: A tops the batch up
    assert [p.id for p in second if p.tenant == "a"] == [a_high[2].id, a_low[0].id, a_low[1].id]


async def test_turns_go_round_when_a_claim_is_smaller_than_the_tenants(store: Store) -> None:
    """Claims of one row (a batching worker's top-up) go round the tenants: each gets
    one per turn, whatever their names' order or backlog."""
    for tenant in ("c", "a", "b"):
        await add(store, (make(tenant) for _ in range(6)))
    turns = [(await claim(store, 1))[0].tenant for _ in range(9)]
    assert [Counter(turns[i : i + 3]) for i in (0, 3, 6)] == [Counter("abc")] * 3
    # and odd shares rotate: 2 rows for 3 tenants, the extra row goes round
    shares: Counter[str] = Counter()
    for _ in range(3):
        shares.update(p.tenant for p in await claim(store, 2))
    assert shares == Counter("aabbcc")


async def test_what_a_tenant_cannot_fill_is_topped_up_from_the_others(store: Store) -> None:
    """A tenant with fewer queued than its share leaves the rest to the others: a claim
    returns as many rows as before tenants while any are queued."""
    await add(store, [make("a")])
    await add(store, (make("b") for _ in range(10)))
    await add(store, (make("c") for _ in range(2)))
    batch = await claim(store, 9)
    assert len(batch) == 9
    assert Counter(p.tenant for p in batch) == {"a": 1, "b": 6, "c": 2}
    assert len(await claim(store, 9)) == 4
    assert await claim(store, 9) == []


async def test_tenants_past_the_scan_cap_get_their_turn(store: Store) -> None:
    """One claim looks at ``TENANTS_CAP`` tenants; the turn goes on from the last one
    served, so every tenant's row is claimed, each once, within the expected claims."""
    count = sql.TENANTS_CAP + 6
    rows = await add(store, (make(f"t{i:03d}") for i in range(count)))
    seen: list[str] = []
    for _ in range(-(-count // 8)):
        batch = await claim(store, 8)
        assert len({p.tenant for p in batch}) == len(batch)
        seen += [p.tenant for p in batch]
    assert sorted(seen) == sorted(p.tenant for p in rows)


async def test_concurrent_claims_of_several_tenants_never_overlap(store: Store) -> None:
    """Concurrent fair claims hand out each row at most once, and all of them."""
    created = await add(store, (make(t) for t in "abc" for _ in range(20)))
    results = await asyncio.gather(*(claim(store, 7) for _ in range(12)))
    ids = [p.id for batch in results for p in batch]
    assert len(ids) == len(set(ids))
    while rest := await claim(store, 7):
        ids += [p.id for p in rest]
    assert sorted(ids) == sorted(p.id for p in created)


def test_fair_shares_deal_one_row_at_a_time() -> None:
    assert fair_shares(8, 2) == [4, 4]
    assert fair_shares(8, 3) == [3, 3, 2]
    assert fair_shares(2, 5) == [1, 1, 0, 0, 0]
    assert fair_shares(8, 1) == [8]


# -- the plans: both statements read the claim index, with no sort and no full scan -------

PARAMS: dict[str, Any] = {
    "target": "m0",
    "after": "t1",
    "tenant": "t2",
    "limit": 8,
    "now": T0,
    "worker_id": "w",
    "lease_expires_at": T0 + LEASE_S,
}


def _fill(conn: sa.Connection) -> None:
    """A history far larger than the backlog, several targets and tenants."""
    rows = [
        {
            "id": f"{i:012d}",
            "target": f"m{i % 3}",
            "status": "queued" if i % 10 < 3 else "succeeded",
            "priority": 5 if i % 7 == 0 else 0,
            "tenant": f"t{(i // 7) % 5}",
        }
        for i in range(6000)
    ]
    conn.execute(
        sa.text(
            "INSERT INTO predictions (id, target, status, created_at, kind, priority, "
            "attempts, max_attempts, timeout_s, tenant) VALUES "
            "(:id, :target, :status, 0, 'model', :priority, 0, 1, 60, :tenant)"
        ),
        rows,
    )
    conn.execute(sa.text("ANALYZE" if conn.dialect.name == "sqlite" else "ANALYZE predictions"))


def _sqlite_plan(conn: sa.Connection, statement: str) -> list[str]:
    text = "EXPLAIN QUERY PLAN " + sql.render(statement, "sqlite")
    raw = conn.connection.driver_connection
    assert raw is not None
    return [row[3] for row in raw.execute(text, PARAMS).fetchall()]


def _postgres_plan(url: str, statement: str) -> list[str]:
    """The *generic* plan (what a prepared statement runs once it stops re-planning)."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    text = re.sub(r"(?<![:\w]):([A-Za-z_]\w*)", number, sql.render(statement, "sqlite"))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET plan_cache_mode = force_generic_plan")
        conn.execute(f"PREPARE probe AS {text}")
        values = ", ".join(f"'{PARAMS[name]}'" for name in names)
        return [row[0] for row in conn.execute(f"EXPLAIN EXECUTE probe({values})").fetchall()]


@pytest.mark.parametrize("statement", ["CLAIM_TENANTS", "CLAIM"])
def test_claim_statements_read_the_claim_index_without_sort_or_scan(
    sql_store_url: str, statement: str
) -> None:
    engine = sa.create_engine(sqlalchemy_url(sql_store_url), poolclass=sa.NullPool)
    try:
        with engine.begin() as conn:
            _fill(conn)
        with engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                plan = _sqlite_plan(conn, getattr(sql, statement))
                reads = [line for line in plan if re.match(r"(SEARCH|SCAN) (predictions|p) ", line)]
                assert any("USING INDEX ix_predictions_claim" in r for r in reads), plan
                # the claim index, else the primary key (the UPDATE's own rows by id)
                for read in reads:
                    assert re.search(r"INDEX (ix_predictions_claim|sqlite_autoindex_\w+) \(", read)
                assert not any("TEMP B-TREE" in line for line in plan), plan
                return
        plan = _postgres_plan(sql_store_url, getattr(sql, statement))
    finally:
        engine.dispose()
    text = "\n".join(plan)
    assert "ix_predictions_claim" in text and "Seq Scan" not in text and "Sort" not in text, text
    scans = [line for line in plan if "Scan using" in line]
    assert all("ix_predictions_claim" in s or "predictions_pkey" in s for s in scans), text
