"""The outbox contract on every store backend: the database writes one row per event
and subscription with the status change itself; rows are claimed in event order per
prediction and subscription, leased, fenced, retried, stopped by a 410, purged."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from freight.deliveries import DeliveryResult, DeliveryStatus
from freight.ids import new_id
from freight.prediction import Completion, Prediction, Status
from freight.store import Store, open_store

# the database stamps outbox rows with its own clock: test time runs ahead of it
T0 = time.time() + 1000
BOTH = [
    {"url": "http://a", "events": ["started", "completed"]},
    {"sink": "b", "events": ["completed"]},
]


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    s = open_store(store_url)
    await s.open()
    yield s
    await s.close()


def make(notify: Any = BOTH, **fields: Any) -> Prediction:
    return Prediction(
        id=new_id(),
        target="m",
        status=Status.QUEUED,
        created_at=T0,
        queued_at=T0,
        notify=None if notify is None else orjson.dumps(notify).decode(),
        **fields,
    )


async def run_once(store: Store, p: Prediction) -> Prediction:
    claimed = await store.claim("m", 1, worker_id="w", lease_s=30, now=T0)
    assert [c.id for c in claimed] == [p.id]
    done = Completion(
        id=p.id, attempt=1, worker_id="w", status=Status.SUCCEEDED, finished_at=T0 + 1
    )
    assert await store.complete([done]) == [p.id]
    return claimed[0]


def ok(row_id: str, attempt: int = 1, **fields: Any) -> DeliveryResult:
    values: dict[str, Any] = {"status": DeliveryStatus.DELIVERED, "status_code": 200}
    return DeliveryResult(id=row_id, worker_id="d", attempt=attempt, at=T0 + 5, **(values | fields))


async def test_status_changes_write_one_row_per_event_and_subscription(store: Store) -> None:
    """Claim (started) and completion (completed) write rows for the subscriptions that
    asked for those events; a prediction without subscriptions writes none."""
    p = make()
    plain = make(notify=None)
    await store.create(p)
    await store.create(plain)
    await run_once(store, p)
    rows, attempts = await store.deliveries(p.id)
    assert [(r.event_type, r.subscription, r.status) for r in rows] == [
        ("started", 0, DeliveryStatus.PENDING),
        ("completed", 0, DeliveryStatus.PENDING),
        ("completed", 1, DeliveryStatus.PENDING),
    ]
    assert rows[0].event_id == f"{p.id}:started:1" and attempts == []
    assert await store.deliveries(plain.id) == ([], [])


async def test_claims_follow_event_order_per_subscription(store: Store) -> None:
    """Only the oldest unfinished event of a prediction and subscription is claimable:
    completed waits for started on subscription 0, not on subscription 1."""
    p = make()
    await store.create(p)
    await run_once(store, p)
    first = await store.claim_deliveries(10, worker_id="d", lease_s=30, now=T0 + 2)
    assert sorted((r.event_type, r.subscription) for r in first) == [
        ("completed", 1),
        ("started", 0),
    ]
    assert await store.claim_deliveries(10, worker_id="d2", lease_s=30, now=T0 + 2) == []
    await store.finish_deliveries([ok(r.id) for r in first])
    second = await store.claim_deliveries(10, worker_id="d", lease_s=30, now=T0 + 3)
    assert [(r.event_type, r.subscription) for r in second] == [("completed", 0)]


async def test_a_retry_is_due_at_next_at_and_each_attempt_is_recorded(store: Store) -> None:
    """A failed attempt makes the row due again at next_at; both attempts are listed."""
    p = make(notify=[{"url": "http://a", "events": ["completed"]}])
    await store.create(p)
    await run_once(store, p)
    (row,) = await store.claim_deliveries(10, worker_id="d", lease_s=30, now=T0 + 2)
    retry = ok(
        row.id,
        status=DeliveryStatus.PENDING,
        status_code=500,
        error="HTTP 500",
        next_at=T0 + 60,
        latency_ms=12.5,
        response="busy, try later",
    )
    await store.finish_deliveries([retry])
    assert await store.claim_deliveries(10, worker_id="d", lease_s=30, now=T0 + 59) == []
    (again,) = await store.claim_deliveries(10, worker_id="d", lease_s=30, now=T0 + 61)
    assert again.attempts == 2
    await store.finish_deliveries([ok(again.id, attempt=2)])
    rows, attempts = await store.deliveries(p.id)
    assert rows[0].status == DeliveryStatus.DELIVERED and rows[0].last_code == 200
    assert [(a.attempt, a.status_code, a.next_at) for a in attempts] == [
        (1, 500, T0 + 60),
        (2, 200, None),
    ]
    # each attempt keeps its latency and the start of the receiver's answer
    assert (attempts[0].latency_ms, attempts[0].response) == (12.5, "busy, try later")


async def test_a_dead_senders_rows_are_due_again_and_its_late_result_is_fenced(
    store: Store,
) -> None:
    """Past its lease a sending row is claimable by another worker; the first worker's
    late result then applies to nothing."""
    p = make(notify=[{"url": "http://a", "events": ["completed"]}])
    await store.create(p)
    await run_once(store, p)
    (row,) = await store.claim_deliveries(10, worker_id="d", lease_s=5, now=T0 + 2)
    (taken,) = await store.claim_deliveries(10, worker_id="e", lease_s=5, now=T0 + 10)
    assert (taken.id, taken.attempts, taken.worker_id) == (row.id, 2, "e")
    await store.finish_deliveries([ok(row.id)])  # d's, attempt 1: fenced off
    rows, attempts = await store.deliveries(p.id)
    assert rows[0].status == DeliveryStatus.SENDING and attempts == []


async def test_410_stops_the_subscriptions_later_events(store: Store) -> None:
    """A stopped row stops the pending events after it for the same subscription only."""
    p = make()
    await store.create(p)
    await run_once(store, p)
    claimed = await store.claim_deliveries(10, worker_id="d", lease_s=30, now=T0 + 2)
    started = next(r for r in claimed if r.event_type == "started")
    other = next(r for r in claimed if r.subscription == 1)
    await store.finish_deliveries(
        [ok(started.id, status=DeliveryStatus.STOPPED, status_code=410), ok(other.id)]
    )
    rows, _ = await store.deliveries(p.id)
    assert [(r.event_type, r.subscription, r.status) for r in rows] == [
        ("started", 0, DeliveryStatus.STOPPED),
        ("completed", 0, DeliveryStatus.STOPPED),
        ("completed", 1, DeliveryStatus.DELIVERED),
    ]


async def test_an_event_written_after_a_410_is_stopped_not_sent(store: Store) -> None:
    """The receiver said 410 to ``started`` before the prediction completed: the
    ``completed`` event, written after the stop, is stopped when claimed, never sent."""
    p = make(notify=[{"url": "http://a", "events": ["started", "completed"]}])
    await store.create(p)
    assert len(await store.claim("m", 1, worker_id="w", lease_s=30, now=T0)) == 1
    (started,) = await store.claim_deliveries(10, worker_id="d", lease_s=30, now=T0 + 1)
    await store.finish_deliveries([ok(started.id, status=DeliveryStatus.STOPPED, status_code=410)])
    done = Completion(
        id=p.id, attempt=1, worker_id="w", status=Status.SUCCEEDED, finished_at=T0 + 2
    )
    assert await store.complete([done]) == [p.id]
    assert await store.claim_deliveries(10, worker_id="d", lease_s=30, now=T0 + 3) == []
    rows, _ = await store.deliveries(p.id)
    assert [(r.event_type, r.status) for r in rows] == [
        ("started", DeliveryStatus.STOPPED),
        ("completed", DeliveryStatus.STOPPED),
    ]


async def test_purge_removes_a_predictions_outbox(store: Store) -> None:
    """Retention deletes the outbox rows and attempts with their prediction."""
    p = make(notify=[{"url": "http://a", "events": ["completed"]}])
    await store.create(p)
    await run_once(store, p)
    (row,) = await store.claim_deliveries(10, worker_id="d", lease_s=30, now=T0 + 2)
    await store.finish_deliveries([ok(row.id)])
    assert [r.id for r in await store.purge(before=T0 + 100, limit=10)] == [p.id]
    assert await store.deliveries(p.id) == ([], [])


async def test_webhook_secrets_rotate_with_an_overlap(store: Store) -> None:
    """The newest secret signs; a rotated-out one keeps signing for the overlap only."""
    assert await store.webhook_secrets(now=T0, overlap_s=60) == []
    await store.rotate_webhook_secret("whsec_one", now=T0)
    await store.rotate_webhook_secret("whsec_two", now=T0 + 10)
    assert await store.webhook_secrets(now=T0 + 20, overlap_s=60) == ["whsec_two", "whsec_one"]
    assert await store.webhook_secrets(now=T0 + 100, overlap_s=60) == ["whsec_two"]


async def test_get_many_reads_a_batchs_rows_at_once(store: Store) -> None:
    """The rows of the ids that exist, each once (an id twice, an unknown id: ignored)."""
    a, b = make(), make(notify=None)
    await store.create(a)
    await store.create(b)
    got = await store.get_many([b.id, a.id, a.id, new_id()])
    assert sorted(p.id for p in got) == sorted([a.id, b.id])
    assert await store.get_many([]) == []


async def test_a_sibling_handle_delivers_on_the_same_database(store: Store) -> None:
    """Another handle (the deliverer's thread has one) claims, records and reads the
    outbox the first handle's transactions wrote; the first sees what it recorded."""
    p = make(notify=[{"url": "http://a", "events": ["completed"]}])
    await store.create(p)
    await run_once(store, p)
    other = store.sibling()
    await other.open()
    try:
        (row,) = await other.claim_deliveries(10, worker_id="d", lease_s=30, now=T0 + 2)
        assert [q.id for q in await other.get_many([row.prediction_id])] == [p.id]
        await other.finish_deliveries([ok(row.id)])
    finally:
        await other.close()
    rows, attempts = await store.deliveries(p.id)
    assert rows[0].status == DeliveryStatus.DELIVERED and len(attempts) == 1
