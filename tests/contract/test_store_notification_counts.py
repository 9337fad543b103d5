"""A prediction's notification summary from one grouped count of its outbox rows, on
every store backend: pending, failing (a failed attempt, being sent again), delivered,
dead and stopped rows each counted once, and the state the worst of them."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from freight.config import Settings
from freight.deliveries import DeliveryStatus, NotificationState, summarize
from freight.events import CompletionHub, WorkSignal
from freight.prediction import Release, Status
from freight.service import PredictionService
from freight.storage.memory import MemoryStorage
from freight.store import Store, open_store
from tests.contract.test_store_outbox import BOTH, T0, make, ok, run_once


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    s = open_store(store_url)
    await s.open()
    yield s
    await s.close()


async def counts(store: Store, prediction_id: str) -> list[tuple[str, int, int]]:
    return sorted(await store.delivery_counts(prediction_id))


async def test_counts_group_rows_by_status_and_attempts(store: Store) -> None:
    """Three rows written pending; one failing then claimed again (sending, attempt 2),
    one dead, one delivered: each group counted, the state dead; another prediction's
    rows are not counted."""
    p = make(notify=[*BOTH, {"sink": "c", "events": ["completed"]}])
    other = make()
    for row in (p, other):
        await store.create(row)
    await run_once(store, p)
    assert await counts(store, p.id) == [("pending", 0, 4)]
    assert summarize(await counts(store, p.id), ended=True).state == NotificationState.PENDING

    claimed = await store.claim_deliveries(10, worker_id="d", lease_s=30, now=T0 + 2)
    by_sub = {r.subscription: r for r in claimed}
    failed: dict[str, Any] = {"status": DeliveryStatus.PENDING, "status_code": 503}
    await store.finish_deliveries(
        [
            ok(by_sub[0].id, **failed, next_at=T0 + 3),  # the started event, retried
            ok(by_sub[1].id, status=DeliveryStatus.DEAD, status_code=500),
            ok(by_sub[2].id),
        ]
    )
    assert await counts(store, p.id) == [
        ("dead", 1, 1),
        ("delivered", 1, 1),
        ("pending", 0, 1),
        ("pending", 1, 1),
    ]
    (again,) = await store.claim_deliveries(10, worker_id="d", lease_s=30, now=T0 + 4)
    assert again.attempts == 2
    found = await counts(store, p.id)
    assert ("sending", 2, 1) in found
    summary = summarize(found, ended=True)
    assert (summary.deliveries, summary.pending, summary.failing) == (4, 1, 1)
    assert (summary.delivered, summary.dead, summary.stopped) == (1, 1, 0)
    assert summary.state == NotificationState.DEAD
    assert await counts(store, make().id) == []


async def test_a_stopped_subscription_counts_stopped(store: Store) -> None:
    """A 410 to the started event stops the completed one too: two stopped rows."""
    p = make(notify=[{"url": "http://a", "events": ["started", "completed"]}])
    await store.create(p)
    await run_once(store, p)
    (started,) = await store.claim_deliveries(10, worker_id="d", lease_s=30, now=T0 + 2)
    await store.finish_deliveries([ok(started.id, status=DeliveryStatus.STOPPED, status_code=410)])
    summary = summarize(await counts(store, p.id), ended=True)
    assert (summary.state, summary.stopped, summary.deliveries) == (NotificationState.STOPPED, 2, 2)


async def test_deliveries_open_while_a_row_is_pending_or_being_sent(store: Store) -> None:
    """What starts a node's deliverer: no rows (or only finished ones) is False; a
    pending row, then the same row leased (sending), is True."""
    assert not await store.deliveries_open()
    p = make(notify=[{"url": "http://a", "events": ["started"]}])
    await store.create(p)
    assert not await store.deliveries_open()  # subscribed, nothing happened yet
    await run_once(store, p)
    assert await store.deliveries_open()  # pending
    (row,) = await store.claim_deliveries(10, worker_id="d", lease_s=30, now=T0 + 2)
    assert await store.deliveries_open()  # sending
    await store.finish_deliveries([ok(row.id)])
    assert not await store.deliveries_open()  # delivered


async def test_a_claim_given_back_keeps_its_started_event_in_the_summary(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service skips the count for a prediction never claimed (nothing can be owed
    yet); one claimed, then given back without counting the attempt (queued again, no
    attempt spent), still shows its started event."""
    for name in list(os.environ):
        if name.startswith("FREIGHT_"):
            monkeypatch.delenv(name)
    settings = Settings(project_dir=tmp_path, state_dir=tmp_path / "state")
    svc = PredictionService(
        settings, {}, store, MemoryStorage(), signal=WorkSignal(), hub=CompletionHub()
    )
    p = make(notify=[{"url": "http://a", "events": ["started", "completed"]}])
    await store.create(p)
    fresh = await svc.notifications(await store.get(p.id))
    assert (fresh["deliveries"], fresh["state"]) == (0, "pending")
    (claimed,) = await store.claim("m", 1, worker_id="w", lease_s=30, now=T0)
    back = Release(id=p.id, attempt=claimed.attempts, worker_id="w", count_attempt=False)
    await store.release([back], now=T0 + 1)
    again = await store.get(p.id)
    assert again.status == Status.QUEUED and again.attempts == 0
    summary = await svc.notifications(again)
    assert (summary["deliveries"], summary["pending"]) == (1, 1)
