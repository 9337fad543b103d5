"""A streaming prediction's chunks on every backend: numbered per prediction, landing
only while their attempt runs, read after a seq, deleted with the prediction by the
purge."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from freight.ids import new_id
from freight.prediction import Completion, Prediction, Status
from freight.store import Store, open_store
from freight.store import streamed as store_streamed
from freight.streaming import BYTES, TEXT, Append, Part

T0 = 1_000_000.0


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    s = open_store(store_url)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def parts(*texts: str, kind: str = TEXT) -> tuple[Part, ...]:
    return tuple(Part(T0 + n, kind, text) for n, text in enumerate(texts))


async def running(store: Store) -> Prediction:
    """A prediction of ``m`` claimed: running in its first attempt."""
    row = Prediction(id=new_id(), target="m", created_at=T0, status=Status.QUEUED, queued_at=T0)
    await store.create(row)
    (claimed,) = await store.claim("m", 1, worker_id="w", lease_s=30, now=T0)
    assert claimed.id == row.id
    return claimed


async def append(store: Store, *appends: Append) -> list[str]:
    stored = await store.execute(lambda: store_streamed.append(appends))
    return [f"{chunk.seq}:{chunk.data}" for chunk in stored]


async def read(store: Store, prediction_id: str, after: int = 0, limit: int = 100) -> list[str]:
    chunks = await store.execute(
        lambda: store_streamed.read(prediction_id, after, limit), write=False
    )
    return [chunk.data for chunk in chunks]


async def test_chunks_are_numbered_per_prediction_and_read_after_a_seq(store: Store) -> None:
    """Each prediction's chunks count from 1, in order, across appends; a read returns
    those after a seq, at most ``limit``, and none of another prediction's."""
    a, b = await running(store), await running(store)
    await append(store, Append(a.id, 1, parts("one", "two")), Append(b.id, 1, parts("other")))
    assert await append(store, Append(a.id, 1, parts("AQ==", kind=BYTES))) == ["3:AQ=="]
    assert await read(store, a.id) == ["one", "two", "AQ=="]
    assert await read(store, a.id, after=1, limit=1) == ["two"]
    assert await read(store, b.id) == ["other"]
    chunks = await store.execute(lambda: store_streamed.read(a.id, 2, 10), write=False)
    assert [(c.seq, c.kind, c.attempt, c.at) for c in chunks] == [(3, BYTES, 1, T0)]


async def test_a_chunk_lands_only_while_its_attempt_runs(store: Store) -> None:
    """A chunk of another attempt than the running one, of a prediction that ended, or
    of no prediction at all is dropped."""
    row = await running(store)
    await append(store, Append(row.id, 1, parts("kept")), Append(row.id, 2, parts("stale")))
    await append(store, Append(new_id(), 1, parts("nobody's")))
    await store.complete(
        [Completion(row.id, row.attempts, "w", Status.SUCCEEDED, T0 + 1, output_json="1")]
    )
    await append(store, Append(row.id, 1, parts("late")))
    assert await read(store, row.id) == ["kept"]


async def test_the_purge_deletes_a_predictions_chunks(store: Store) -> None:
    """Retention deletes a purged prediction's chunks with its row; others' stay."""
    old, kept = await running(store), await running(store)
    await append(store, Append(old.id, 1, parts("gone")), Append(kept.id, 1, parts("kept")))
    await store.complete(
        [Completion(old.id, old.attempts, "w", Status.SUCCEEDED, T0 + 1, output_json="1")]
    )
    purged = await store.purge(before=T0 + 2, limit=10)
    assert [p.id for p in purged] == [old.id]
    assert await read(store, old.id) == []
    assert await read(store, kept.id) == ["kept"]
