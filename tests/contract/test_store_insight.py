"""The console's reads (store/insight.py, freight.insight) and PredictionService.retry's
store side, on every store: the hour's finished rows bounded and scoped to a tenant,
the backlog per tenant, failing deliveries across predictions with keyset pages."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from freight.access import ALL_SCOPES, Principal, Scope
from freight.ids import new_id
from freight.insight import InsightService
from freight.prediction import Prediction, Status
from freight.store import Store, insight, open_store
from freight.store._op import Op, Sql

NOW = 1_800_000_000.0


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    s = open_store(store_url)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def make(
    target: str, status: Status, *, tenant: str = "acme", ago_s: float = 60, **fields: Any
) -> Prediction:
    ended = status.terminal
    return Prediction(
        id=new_id(),
        target=target,
        status=status,
        created_at=NOW - ago_s - 2,
        queued_at=NOW - ago_s - 2,
        started_at=NOW - ago_s - 1 if ended else None,
        finished_at=NOW - ago_s if ended else None,
        tenant=tenant,
        **fields,
    )


async def add(store: Store, *rows: Prediction) -> None:
    for row in rows:
        await store.create(row)


def _outbox(rows: list[dict[str, Any]]) -> Op[None]:
    columns = (
        "id, event_id, subscription, prediction_id, event_type, seq, status, attempts, "
        "created_at, next_at"
    )
    values = ", ".join(":" + c.strip() for c in columns.split(","))
    yield Sql(f"INSERT INTO outbox ({columns}) VALUES ({values})", rows)


async def test_the_hour_is_bounded_and_scoped(store: Store) -> None:
    """Rows finished within the hour, newest first, at most ``cap``; another tenant's
    and older ones left out; the backlog counted per tenant."""
    await add(
        store,
        make("m", Status.SUCCEEDED, ago_s=30),
        make("m", Status.FAILED, ago_s=20),
        make("m", Status.SUCCEEDED, ago_s=7200),  # over an hour ago
        make("m", Status.SUCCEEDED, tenant="other", ago_s=10),
        make("m", Status.QUEUED),
        make("m", Status.QUEUED, tenant="other"),
    )
    rows = await store.execute(
        lambda: insight.finished(since=NOW - 3600, cap=10, tenant="acme"), write=False
    )
    assert [r.status for r in rows] == [Status.FAILED, Status.SUCCEEDED]
    capped = await store.execute(lambda: insight.finished(since=NOW - 3600, cap=2), write=False)
    assert len(capped) == 2 and capped[0].finished_at == NOW - 10
    backlog = await store.execute(lambda: insight.backlog(tenant="acme"), write=False)
    assert backlog["m"].queued == 1
    everyone = await store.execute(lambda: insight.backlog(), write=False)
    assert everyone["m"].queued == 2


async def test_the_service_summarises_each_target(store: Store) -> None:
    """Throughput, error rate and percentiles per target, a tenant's own only; an
    admin's over every tenant."""
    await add(
        store,
        *(make("m", Status.SUCCEEDED, ago_s=30 + i) for i in range(9)),
        make("m", Status.FAILED, ago_s=20),
        make("m", Status.FAILED, tenant="other", ago_s=20),
    )
    service = InsightService(store)
    acme = await service.hour(Principal(tenant="acme", scopes=frozenset({Scope.READ})), NOW)
    hour = acme.targets["m"]
    assert hour.finished == 10 and hour.failed == 1 and hour.error_rate == pytest.approx(0.1)
    assert hour.percentile_ms(0.5) == pytest.approx(2000.0) and not acme.sampled
    admin = await service.hour(Principal(tenant="ops", scopes=ALL_SCOPES), NOW)
    assert admin.targets["m"].finished == 11


async def test_failing_deliveries_across_predictions(store: Store) -> None:
    """Dead, stopped and retrying rows, newest first, a tenant's own only; keyset pages
    continue below the last id; delivered and first-try rows are left out."""
    ours = make("m", Status.SUCCEEDED, notify='[{"url": "http://127.0.0.1/hook"}]')
    theirs = make("m", Status.SUCCEEDED, tenant="other", notify='[{"url": "http://x/h"}]')
    await add(store, ours, theirs)

    def row(p: Prediction, n: int, status: str, attempts: int) -> dict[str, Any]:
        return {
            "id": f"{p.id}:completed:{n}#0",
            "event_id": f"{p.id}:completed:{n}",
            "subscription": 0,
            "prediction_id": p.id,
            "event_type": "completed",
            "seq": n,
            "status": status,
            "attempts": attempts,
            "created_at": NOW,
            "next_at": NOW,
        }

    rows = [
        row(ours, 1, "dead", 3),
        row(ours, 2, "stopped", 1),
        row(ours, 3, "pending", 2),
        row(ours, 4, "delivered", 1),
        row(ours, 5, "pending", 0),
        row(theirs, 1, "dead", 3),
    ]
    await store.execute(lambda: _outbox(rows))
    found, after = await store.execute(
        lambda: insight.failing(before=None, limit=2, tenant="acme"), write=False
    )
    assert [f.row.seq for f in found] == [3, 2] and after == found[-1].row.id
    rest, end = await store.execute(
        lambda: insight.failing(before=after, limit=2, tenant="acme"), write=False
    )
    assert [f.row.seq for f in rest] == [1] and end is None
    small, more = await store.execute(
        lambda: insight.failing(before=None, limit=10, tenant="acme", scan=2), write=False
    )
    assert [f.row.seq for f in small] == [] and more is not None  # 5 and 4: none failing
    service = InsightService(store)
    views, _ = await service.failing_deliveries(
        Principal(tenant="acme", scopes=frozenset({Scope.READ}))
    )
    assert [v.view.status for v in views] == ["pending", "stopped", "dead"]
    assert {v.prediction_id for v in views} == {ours.id}
