"""The Store contract, pinned once and run on every backend (``store_url``):
SQLite, PostgreSQL, and the in-memory fake that the unit tests stand on.

Time is passed explicitly (``now=``): leases, TTLs and upload deadlines are
exercised by moving ``now`` forward, never by sleeping.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest

from freight.errors import ConflictError, NotFoundError, StoreUnavailableError
from freight.ids import new_id
from freight.prediction import (
    RETRY_BACKOFF_S,
    Completion,
    ErrorCode,
    PastAttempt,
    Prediction,
    Release,
    Status,
    TargetStats,
    attempts_of,
)
from freight.store import Store, migrate, open_store
from freight.store.memory import MemoryStore

T0 = 1_000_000.0
LEASE_S = 30.0


def make(target: str = "m", *, status: Status = Status.QUEUED, **fields: Any) -> Prediction:
    """A prediction as the API would create it (queued unless told otherwise)."""
    queued_at = T0 if status is Status.QUEUED else None
    return Prediction(
        id=new_id(), target=target, status=status, created_at=T0, queued_at=queued_at, **fields
    )


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    s = open_store(store_url)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def add(store: Store, *predictions: Prediction) -> list[Prediction]:
    return [(await store.create(p))[0] for p in predictions]


async def claim_one(store: Store, target: str = "m", worker: str = "w1") -> Prediction:
    claimed = await store.claim(target, 1, worker_id=worker, lease_s=LEASE_S, now=T0 + 1)
    assert len(claimed) == 1
    return claimed[0]


def done(p: Prediction, *, worker: str = "w1", attempt: int | None = None) -> Completion:
    return Completion(
        id=p.id,
        attempt=p.attempts if attempt is None else attempt,
        worker_id=worker,
        status=Status.SUCCEEDED,
        finished_at=T0 + 2,
        output_json='{"y": 1}',
        output_content_type="application/json",
        output_bytes=8,
        batch_size=1,
    )


async def test_create_get_round_trips_every_field(store: Store) -> None:
    """Every field written by create comes back identical from get, status as Status."""
    p = make(
        kind="pipeline",
        priority=5,
        attempts=0,
        max_attempts=7,
        timeout_s=12.5,
        expires_at=T0 + 60,
        upload_expires_at=T0 + 30,
        input_json='{"x": [1, 2]}',
        input_key="in/k",
        input_content_type="application/json",
        input_bytes=2**40,
        output_json="null",
        output_key="out/k",
        output_content_type="image/png",
        output_bytes=3,
        error_code="e",
        error_message="msg",
        error_detail='{"a": 1}',
        metadata='{"tag": "t"}',
        idempotency_key="k1",
        request_hash="h1",
        batch_size=4,
        worker_id="w",
        started_at=T0 + 0.25,
        finished_at=T0 + 0.5,
        lease_expires_at=T0 + 9,
    )
    created, inserted = await store.create(p)
    assert inserted
    assert created == p
    got = await store.get(p.id)
    assert got == p
    assert got is not None and type(got.status) is Status


async def test_get_unknown_returns_none(store: Store) -> None:
    """get of an unknown id is None, not an error."""
    assert await store.get(new_id()) is None


async def test_idempotency_same_hash_returns_existing(store: Store) -> None:
    """A repeated key with the same request hash returns the first row, not inserted."""
    first = make(idempotency_key="k", request_hash="h")
    await store.create(first)
    again, inserted = await store.create(make(idempotency_key="k", request_hash="h"))
    assert not inserted
    assert again.id == first.id


async def test_idempotency_different_hash_conflicts(store: Store) -> None:
    """A repeated key with another request hash raises idempotency_conflict."""
    await store.create(make(idempotency_key="k", request_hash="h"))
    with pytest.raises(ConflictError) as info:
        await store.create(make(idempotency_key="k", request_hash="other"))
    assert info.value.code == "idempotency_conflict"


async def test_rows_without_idempotency_key_never_collide(store: Store) -> None:
    """Many predictions without a key coexist (NULLs are distinct in the unique index)."""
    results = [await store.create(make()) for _ in range(3)]
    assert all(inserted for _, inserted in results)


async def test_list_filters_and_paginates_newest_first(store: Store) -> None:
    """list filters by target and status, newest first, after_id continues the page."""
    a = await add(store, *(make("a") for _ in range(5)))
    await add(store, make("b"), make("a", status=Status.AWAITING_INPUT))
    page1 = await store.list(target="a", status=Status.QUEUED, limit=3)
    assert [p.id for p in page1] == [p.id for p in reversed(a)][:3]
    page2 = await store.list(target="a", status=Status.QUEUED, after_id=page1[-1].id, limit=3)
    assert [p.id for p in page2] == [a[1].id, a[0].id]
    assert len(await store.list()) == 7
    assert [p.target for p in await store.list(target="b")] == ["b"]
    waiting = await store.list(status=Status.AWAITING_INPUT)
    assert [p.status for p in waiting] == [Status.AWAITING_INPUT]


async def test_mark_input_ready_queues_awaiting_prediction(store: Store) -> None:
    """mark_input_ready moves awaiting_input to queued and records the upload."""
    (p,) = await add(store, make(status=Status.AWAITING_INPUT, upload_expires_at=T0 + 60))
    ready = await store.mark_input_ready(
        p.id, input_key="k", input_content_type="text/plain", input_bytes=11, now=T0 + 5
    )
    assert (ready.status, ready.queued_at, ready.input_key) == (Status.QUEUED, T0 + 5, "k")
    assert (ready.input_content_type, ready.input_bytes) == ("text/plain", 11)
    assert await store.get(p.id) == ready


async def test_mark_input_ready_rejects_other_states_and_unknown(store: Store) -> None:
    """mark_input_ready on a queued row is invalid_state; on an unknown id NotFoundError."""
    (p,) = await add(store, make())
    with pytest.raises(ConflictError) as info:
        await store.mark_input_ready(
            p.id, input_key="k", input_content_type="x", input_bytes=1, now=T0
        )
    assert info.value.code == "invalid_state"
    with pytest.raises(NotFoundError):
        await store.mark_input_ready(
            new_id(), input_key="k", input_content_type="x", input_bytes=1, now=T0
        )


async def test_claim_orders_by_priority_then_age_and_stamps(store: Store) -> None:
    """claim takes the target's rows by priority desc then oldest, up to limit, stamped."""
    low_old, high, low_new = await add(store, make(), make(priority=9), make())
    await add(store, make("other", priority=99), make(status=Status.AWAITING_INPUT))
    claimed = await store.claim("m", 2, worker_id="w1", lease_s=LEASE_S, now=T0 + 1)
    assert [p.id for p in claimed] == [high.id, low_old.id]
    for p in claimed:
        assert (p.status, p.worker_id, p.attempts) == (Status.RUNNING, "w1", 1)
        assert (p.started_at, p.lease_expires_at) == (T0 + 1, T0 + 1 + LEASE_S)
    rest = await store.claim("m", 10, worker_id="w2", lease_s=LEASE_S, now=T0 + 1)
    assert [p.id for p in rest] == [low_new.id]
    assert await store.claim("m", 10, worker_id="w2", lease_s=LEASE_S, now=T0 + 1) == []


async def test_concurrent_claims_on_one_store_never_overlap(store: Store) -> None:
    """Concurrent claim() calls on one store hand out each row exactly once."""
    created = await add(store, *(make() for _ in range(60)))
    results = await asyncio.gather(
        *(store.claim("m", 7, worker_id=f"w{i}", lease_s=LEASE_S, now=T0) for i in range(12))
    )
    ids = [p.id for batch in results for p in batch]
    assert len(ids) == len(set(ids)) == len(created)


async def test_complete_applies_once_and_is_fenced(store: Store) -> None:
    """complete applies for the holder's current attempt only; stale or foreign ones do not."""
    p = (await add(store, make()))[0]
    claimed = await claim_one(store)
    foreign = done(claimed, worker="intruder")
    stale = done(claimed, attempt=claimed.attempts - 1)
    assert await store.complete([foreign, stale]) == []
    assert await store.complete([done(claimed)]) == [p.id]
    got = await store.get(p.id)
    assert got is not None
    assert (got.status, got.finished_at, got.output_json) == (Status.SUCCEEDED, T0 + 2, '{"y": 1}')
    assert (got.output_bytes, got.batch_size, got.lease_expires_at) == (8, 1, None)
    assert await store.complete([done(claimed)]) == []


async def test_complete_records_failure(store: Store) -> None:
    """A FAILED completion stores the error fields."""
    await add(store, make())
    c = await claim_one(store)
    failure = Completion(
        id=c.id,
        attempt=1,
        worker_id="w1",
        status=Status.FAILED,
        finished_at=T0 + 3,
        error_code=ErrorCode.MODEL_ERROR,
        error_message="boom",
        error_detail='{"where": "x"}',
    )
    assert await store.complete([failure]) == [c.id]
    got = await store.get(c.id)
    assert got is not None
    assert (got.status, got.error_code, got.error_message) == (Status.FAILED, "model_error", "boom")


async def test_release_requeues_then_fails_when_attempts_spent(store: Store) -> None:
    """release requeues while attempts remain, then fails with the release's error code."""
    (p,) = await add(store, make(max_attempts=2))
    c = await claim_one(store)
    assert await store.release([Release(c.id, 1, "w1")], now=T0 + 2) == {p.id: Status.QUEUED}
    requeued = await store.get(p.id)
    assert requeued is not None
    assert (requeued.status, requeued.worker_id, requeued.attempts) == (Status.QUEUED, None, 1)
    # its back-off (1 s per attempt made): not claimed again before it
    assert requeued.not_before == T0 + 2 + RETRY_BACKOFF_S
    # the lost attempt is kept: number, start, end, worker, why
    assert attempts_of(requeued.attempt_history) == [
        PastAttempt(1, c.started_at, T0 + 2, "w1", "replica_died")
    ]
    assert await store.claim("m", 1, worker_id="w1", lease_s=LEASE_S, now=T0 + 2.5) == []
    (c,) = await store.claim("m", 1, worker_id="w1", lease_s=LEASE_S, now=T0 + 3)
    assert c.attempts == 2
    result = await store.release([Release(c.id, 2, "w1")], now=T0 + 3)
    assert result == {p.id: Status.FAILED}
    failed = await store.get(p.id)
    assert failed is not None
    assert (failed.error_code, failed.finished_at) == ("attempts_exhausted", T0 + 3)


async def test_release_without_counting_gives_attempt_back(store: Store) -> None:
    """count_attempt=False requeues even on the last attempt and restores the count; no
    back-off (the attempt was not the prediction's fault)."""
    (p,) = await add(store, make(max_attempts=1))
    c = await claim_one(store)
    result = await store.release([Release(c.id, 1, "w1", count_attempt=False)], now=T0 + 2)
    assert result == {p.id: Status.QUEUED}
    got = await store.get(p.id)
    assert got is not None and (got.attempts, got.not_before) == (0, None)
    assert got.attempt_history is None  # not an attempt of its own


async def test_a_lapsed_lease_requeues_with_a_back_off(store: Store) -> None:
    """The reaper's requeue waits backoff_s per attempt made; a release's own back-off
    (the worker's setting) is taken as given."""
    (p,) = await add(store, make(max_attempts=3))
    await store.claim("m", 1, worker_id="w1", lease_s=5, now=T0)
    await store.reap(now=T0 + 6, backoff_s=4.0)
    got = await store.get(p.id)
    assert got is not None and (got.status, got.not_before) == (Status.QUEUED, T0 + 10)
    assert [(a.attempt, a.ended_at, a.why) for a in attempts_of(got.attempt_history)] == [
        (1, T0 + 6, "lease_expired")
    ]
    assert await store.claim("m", 1, worker_id="w1", lease_s=5, now=T0 + 9) == []
    (again,) = await store.claim("m", 1, worker_id="w1", lease_s=5, now=T0 + 10)
    await store.release([Release(again.id, 2, "w1", backoff_s=0.0)], now=T0 + 11)
    assert await store.claim("m", 1, worker_id="w1", lease_s=5, now=T0 + 11) != []


async def test_release_is_fenced(store: Store) -> None:
    """release by another worker or for another attempt changes nothing."""
    await add(store, make())
    c = await claim_one(store)
    assert await store.release([Release(c.id, 1, "other"), Release(c.id, 2, "w1")], now=T0) == {}
    got = await store.get(c.id)
    assert got is not None and got.status is Status.RUNNING


async def test_heartbeat_extends_leases_and_reports_lost(store: Store) -> None:
    """heartbeat extends the worker's leases and returns the ids it no longer holds."""
    a, b, _ = await add(store, make(), make(), make())
    await store.claim("m", 2, worker_id="w1", lease_s=LEASE_S, now=T0)
    await store.cancel(b.id, now=T0 + 1)
    unknown = new_id()
    lost = await store.heartbeat("w1", [a.id, b.id, unknown], lease_s=60, now=T0 + 10)
    assert lost == [b.id, unknown]
    got = await store.get(a.id)
    assert got is not None and got.lease_expires_at == T0 + 70
    assert await store.heartbeat("w2", [a.id], lease_s=60, now=T0 + 10) == [a.id]
    assert await store.heartbeat("w1", [], lease_s=60, now=T0 + 10) == []


async def test_save_progress_is_fenced(store: Store) -> None:
    """save_progress writes the definition of a row its worker and attempt hold, and of
    no other (a driver that lost its job cannot overwrite its successor's progress)."""
    (p,) = await add(store, make())
    c = await claim_one(store)
    assert await store.save_progress(p.id, worker_id="w1", attempt=c.attempts, definition="{}")
    got = await store.get(p.id)
    assert got is not None and got.definition == "{}"
    assert not await store.save_progress(p.id, worker_id="w2", attempt=c.attempts, definition="x")
    stale = c.attempts - 1
    assert not await store.save_progress(p.id, worker_id="w1", attempt=stale, definition="x")
    await store.complete([done(c)])
    assert not await store.save_progress(p.id, worker_id="w1", attempt=c.attempts, definition="x")
    got = await store.get(p.id)
    assert got is not None and got.definition == "{}"
    (q,) = await add(store, make())
    c = await claim_one(store)
    await store.cancel(q.id, now=T0 + 2)
    assert await store.save_progress(q.id, worker_id="w1", attempt=c.attempts, definition="[]")


@pytest.mark.parametrize("before", [Status.QUEUED, Status.RUNNING, Status.AWAITING_INPUT])
async def test_cancel_live_prediction(store: Store, before: Status) -> None:
    """cancel of a live prediction makes it canceled and reports the status it had."""
    (p,) = await add(store, make(status=Status.QUEUED if before is Status.RUNNING else before))
    if before is Status.RUNNING:
        await claim_one(store)
    row, previous = await store.cancel(p.id, now=T0 + 5)
    assert previous is before
    assert (row.status, row.error_code, row.finished_at) == (Status.CANCELED, "canceled", T0 + 5)
    assert await store.get(p.id) == row


async def test_cancel_terminal_is_unchanged_and_unknown_raises(store: Store) -> None:
    """cancel of a terminal prediction returns it as is; of an unknown id NotFoundError."""
    await add(store, make())
    c = await claim_one(store)
    await store.complete([done(c)])
    row, previous = await store.cancel(c.id, now=T0 + 9)
    assert (row.status, previous) == (Status.SUCCEEDED, Status.SUCCEEDED)
    assert row == await store.get(c.id)
    with pytest.raises(NotFoundError):
        await store.cancel(new_id(), now=T0)


async def test_reap_expired_leases(store: Store) -> None:
    """reap requeues expired leases with attempts left and fails those without."""
    retry, spent, live = await add(store, make(), make(max_attempts=1), make())
    await store.claim("m", 2, worker_id="w1", lease_s=10, now=T0)
    await store.claim("m", 1, worker_id="w2", lease_s=100, now=T0)
    result = await store.reap(now=T0 + 11)
    assert (result.requeued, result.failed, result.expired) == ([retry.id], [spent.id], [])
    failed = await store.get(spent.id)
    assert failed is not None
    assert (failed.status, failed.error_code) == (Status.FAILED, "attempts_exhausted")
    requeued = await store.get(retry.id)
    assert requeued is not None
    assert (requeued.status, requeued.worker_id, requeued.lease_expires_at) == (
        Status.QUEUED,
        None,
        None,
    )
    still = await store.get(live.id)
    assert still is not None and still.status is Status.RUNNING


async def test_reap_expires_ttl_and_uploads(store: Store) -> None:
    """reap expires queued rows past expires_at and awaiting_input past upload_expires_at."""
    ttl, fresh, upload = await add(
        store,
        make(expires_at=T0 + 5),
        make(expires_at=T0 + 500),
        make(status=Status.AWAITING_INPUT, upload_expires_at=T0 + 5),
    )
    result = await store.reap(now=T0 + 6)
    assert sorted(result.expired) == sorted([ttl.id, upload.id])
    for pid in (ttl.id, upload.id):
        got = await store.get(pid)
        assert got is not None
        assert (got.status, got.error_code, got.finished_at) == (Status.EXPIRED, "expired", T0 + 6)
    kept = await store.get(fresh.id)
    assert kept is not None and kept.status is Status.QUEUED
    assert await store.reap(now=T0 + 6) == type(result)()


async def test_recover_orphans_requeues_running(store: Store) -> None:
    """recover_orphans requeues every running row, counting the attempt the crash cut
    short (the crash may have been the input's doing), live lease or not."""
    live, expired = await add(store, make(), make())
    await store.claim("m", 1, worker_id="w1", lease_s=100, now=T0)
    await store.claim("m", 1, worker_id="w1", lease_s=1, now=T0)
    assert sorted(await store.recover_orphans(now=T0 + 10)) == sorted([live.id, expired.id])
    got_live, got_expired = await store.get(live.id), await store.get(expired.id)
    assert got_live is not None and got_expired is not None
    assert (got_live.status, got_live.attempts) == (Status.QUEUED, 1)
    assert (got_expired.status, got_expired.attempts) == (Status.QUEUED, 1)


async def test_recover_orphans_ends_a_prediction_whose_attempts_are_spent(store: Store) -> None:
    """An input that crashed the only writer max_attempts times ends attempts_exhausted."""
    (row,) = await add(store, make(max_attempts=2))
    for crash in range(2):  # each after the back-off of the crash before
        (claimed,) = await store.claim("m", 1, worker_id="w1", lease_s=100, now=T0 + 10 * crash)
        await store.recover_orphans(now=T0 + 10 * crash + 0.5)
        assert claimed.attempts == crash + 1
    got = await store.get(row.id)
    assert got is not None
    assert (got.status, got.attempts, got.error_code) == (
        Status.FAILED,
        2,
        "attempts_exhausted",
    )
    assert [(a.attempt, a.why) for a in attempts_of(got.attempt_history)] == [
        (1, "process_died"),
        (2, "process_died"),
    ]


async def test_stats_counts_live_rows_per_target(store: Store) -> None:
    """stats counts queued, running and awaiting_input per target; terminal rows are not counted."""
    await add(store, make("a"), make("a"), make("a"), make("b", status=Status.AWAITING_INPUT))
    c = await claim_one(store, "a")
    c2 = await claim_one(store, "a")
    await store.complete([done(c2)])
    assert c.status is Status.RUNNING
    left = [p for p in await store.list(target="a", status=Status.QUEUED)]
    assert await store.stats() == {
        "a": TargetStats(queued=1, running=1, awaiting_input=0, oldest_queued_id=left[0].id),
        "b": TargetStats(queued=0, running=0, awaiting_input=1),
    }


def finished(status: Status, at: float, **fields: Any) -> Prediction:
    """A terminal prediction as it would be once it finished at ``at``."""
    return make(status=status, finished_at=at, **fields)


async def test_purge_deletes_old_terminal_rows_oldest_first(store: Store) -> None:
    """purge deletes terminal rows finished before the cut-off, oldest first, and
    returns the whole rows; recent and live rows stay."""
    old = await add(
        store,
        finished(Status.SUCCEEDED, T0 + 3, input_key="inputs/a", output_key="outputs/a"),
        finished(Status.FAILED, T0 + 1, error_code="model_error"),
        finished(Status.CANCELED, T0 + 2),
        finished(Status.EXPIRED, T0 + 4),
    )
    recent = await add(store, finished(Status.SUCCEEDED, T0 + 100))
    # live rows are never purged, whatever their finished_at says
    live = await add(
        store,
        make(finished_at=T0),
        make(status=Status.RUNNING, finished_at=T0),
        make(status=Status.AWAITING_INPUT, finished_at=T0),
    )
    purged = await store.purge(before=T0 + 50, limit=100)
    assert purged == sorted(old, key=lambda p: p.finished_at or 0.0)
    for p in old:
        assert await store.get(p.id) is None
    for p in recent + live:
        assert await store.get(p.id) == p
    assert await store.purge(before=T0 + 50, limit=100) == []


async def test_purge_respects_limit(store: Store) -> None:
    """purge deletes at most ``limit`` rows per call, the oldest; later calls take the rest."""
    rows = await add(store, *(finished(Status.SUCCEEDED, T0 + i) for i in (5, 3, 1, 4, 2)))
    by_age = sorted(rows, key=lambda p: p.finished_at or 0.0)
    assert await store.purge(before=T0 + 10, limit=2) == by_age[:2]
    assert await store.purge(before=T0 + 10, limit=2) == by_age[2:4]
    assert await store.purge(before=T0 + 10, limit=2) == by_age[4:]
    assert await store.purge(before=T0 + 10, limit=2) == []


async def test_purge_takes_rows_finished_by_complete(store: Store) -> None:
    """A prediction completed through the store is purged once its finished_at is old."""
    await add(store, make())
    c = await claim_one(store)
    await store.complete([done(c)])
    assert await store.purge(before=T0 + 2, limit=10) == []  # finished_at == T0 + 2
    purged = await store.purge(before=T0 + 3, limit=10)
    assert [(p.id, p.status, p.output_json) for p in purged] == [
        (c.id, Status.SUCCEEDED, '{"y": 1}')
    ]


async def test_purged_idempotency_key_is_free_again(store: Store) -> None:
    """Once its prediction is purged, an idempotency key inserts a new prediction."""
    (old,) = await add(store, finished(Status.SUCCEEDED, T0, idempotency_key="k", request_hash="h"))
    assert [p.id for p in await store.purge(before=T0 + 1, limit=10)] == [old.id]
    again, inserted = await store.create(make(idempotency_key="k", request_hash="other"))
    assert inserted and again.id != old.id


async def test_rows_read_back_are_copies(store: Store) -> None:
    """Mutating a returned prediction changes nothing stored."""
    (p,) = await add(store, make())
    got = await store.get(p.id)
    assert got is not None
    got.status, got.priority = Status.FAILED, 99
    assert await store.get(p.id) == p


async def test_ping_answers(store: Store) -> None:
    """ping returns quietly while the database answers."""
    await store.ping()


async def test_domain_error_in_group_does_not_fail_others(store: Store) -> None:
    """A conflicting create sent together with good writes fails alone; the others commit."""
    await store.create(make(idempotency_key="k", request_hash="h"))
    good = [make() for _ in range(5)]
    results = await asyncio.gather(
        *(store.create(p) for p in good),
        store.create(make(idempotency_key="k", request_hash="other")),
        return_exceptions=True,
    )
    assert isinstance(results[-1], ConflictError)
    for p in good:
        assert await store.get(p.id) == dataclasses.replace(p)


async def test_two_postgres_stores_partition_the_backlog(postgres_url: str) -> None:
    """Two PostgresStore instances claiming concurrently never get the same row."""
    stores = [open_store(postgres_url) for _ in range(2)]
    for s in stores:
        await s.open()
    try:
        await add(stores[0], *(make() for _ in range(200)))

        async def drain(s: Store, worker: str) -> list[str]:
            got: list[str] = []
            while batch := await s.claim("m", 3, worker_id=worker, lease_s=LEASE_S, now=T0):
                got += [p.id for p in batch]
            return got

        results = await asyncio.gather(*(drain(s, f"w{i}") for i, s in enumerate(stores)))
        ids = [i for r in results for i in r]
        assert len(ids) == len(set(ids)) == 200
    finally:
        for s in stores:
            await s.close()


async def test_two_postgres_stores_purge_disjoint_rows(postgres_url: str) -> None:
    """Two PostgresStore instances purging concurrently never return the same row."""
    stores = [open_store(postgres_url) for _ in range(2)]
    for s in stores:
        await s.open()
    try:
        await add(stores[0], *(finished(Status.SUCCEEDED, T0 + i) for i in range(200)))

        async def purge_all(s: Store) -> list[str]:
            got: list[str] = []
            while batch := await s.purge(before=T0 + 1000, limit=3):
                got += [p.id for p in batch]
            return got

        results = await asyncio.gather(*(purge_all(s) for s in stores))
        ids = [i for r in results for i in r]
        assert len(ids) == len(set(ids)) == 200
    finally:
        for s in stores:
            await s.close()


async def test_memory_store_closed_is_unavailable(memory_url: str) -> None:
    """A closed in-memory store raises StoreUnavailableError, and keeps its rows."""
    store = open_store(memory_url)
    assert isinstance(store, MemoryStore)
    with pytest.raises(StoreUnavailableError):
        await store.ping()
    await store.open()
    (p,) = await add(store, make())
    await store.close()
    with pytest.raises(StoreUnavailableError):
        await store.get(p.id)
    await store.open()
    assert await store.get(p.id) == p


async def test_memory_urls_open_separate_stores(memory_url: str) -> None:
    """Each open_store("memory://") is a new, empty store; migrating one is a no-op."""
    migrate(memory_url)
    first, second = open_store(memory_url), open_store(memory_url)
    await first.open()
    await second.open()
    await add(first, make())
    assert await second.list() == []


async def test_create_many_inserts_in_one_call_and_keeps_each_key(store: Store) -> None:
    """create_many inserts rows without keys in one statement; a keyed row replayed with
    the same request is the stored one (not inserted), with another request its
    ConflictError in its place; the others are inserted all the same."""
    (kept,) = await add(store, make(idempotency_key="k", request_hash="h"))
    plain = [make() for _ in range(3)]
    replay = make(idempotency_key="k", request_hash="h")
    clash = make(idempotency_key="k", request_hash="other")
    fresh = make(idempotency_key="new", request_hash="h")
    results = await store.create_many([plain[0], replay, plain[1], clash, fresh, plain[2]])
    assert [r[1] for r in results if not isinstance(r, ConflictError)] == [
        True, False, True, True, True,
    ]  # fmt: skip
    assert results[1] == (kept, False)
    assert isinstance(results[3], ConflictError) and results[3].code == "idempotency_conflict"
    for row in [*plain, fresh]:
        assert (await store.get(row.id)) is not None
    assert await store.get(clash.id) is None and await store.get(replay.id) is None
    claimed = await store.claim("m", 10, worker_id="w", lease_s=LEASE_S, now=T0 + 1)
    assert {r.id for r in claimed} == {kept.id, fresh.id, *(p.id for p in plain)}
