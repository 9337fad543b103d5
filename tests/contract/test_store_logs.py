"""A prediction's logs on every backend: appended within the bound (one marker line
past it), read after a seq, deleted with the prediction by the purge."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from freight.ids import new_id
from freight.logs import LOG, STDERR, STDOUT, Append, Printed, marker_text
from freight.prediction import Completion, Prediction, Status
from freight.store import Store, open_store
from freight.store import logs as store_logs

T0 = 1_000_000.0


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    s = open_store(store_url)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def printed(*texts: str, stream: str = STDOUT) -> tuple[Printed, ...]:
    return tuple(Printed(T0 + n, stream, text) for n, text in enumerate(texts))


async def append(store: Store, *appends: Append, max_bytes: int = 1000) -> list[str]:
    stored = await store.execute(lambda: store_logs.append(appends, max_bytes))
    return [f"{line.prediction_id[-4:]}:{line.seq}:{line.text}" for line in stored]


async def read(store: Store, prediction_id: str, after: int = 0, limit: int = 100) -> list[str]:
    lines = await store.execute(lambda: store_logs.read(prediction_id, after, limit), write=False)
    return [line.text for line in lines]


async def test_lines_are_numbered_per_prediction_and_read_after_a_seq(store: Store) -> None:
    """Each prediction's lines count from 1, in order; a read returns those after a seq,
    at most ``limit``, and none of another prediction's."""
    a, b = new_id(), new_id()
    await append(store, Append(a, 1, printed("one", "two")), Append(b, 1, printed("other")))
    await append(store, Append(a, 1, printed("three", stream=STDERR)))
    assert await read(store, a) == ["one", "two", "three"]
    assert await read(store, a, after=1, limit=1) == ["two"]
    assert await read(store, b) == ["other"]
    lines = await store.execute(lambda: store_logs.read(a, 2, 10), write=False)
    assert [(line.seq, line.stream, line.attempt) for line in lines] == [(3, STDERR, 1)]


async def test_past_the_bound_one_marker_line_counts_what_was_dropped(store: Store) -> None:
    """Lines are kept until the first that does not fit in ``max_bytes``; it and every
    later one are dropped, and one marker line (updated by later appends) says how many
    bytes were."""
    a = new_id()
    await append(store, Append(a, 1, printed("x" * 40, "y" * 40, "z" * 30)), max_bytes=100)
    await append(store, Append(a, 1, printed("w" * 5)), max_bytes=100)
    await append(store, Append(a, 2, printed(), dropped=7), max_bytes=100)
    lines = await store.execute(lambda: store_logs.read(a, 0, 100), write=False)
    assert [line.text for line in lines[:2]] == ["x" * 40, "y" * 40]
    marker = lines[2]
    assert (marker.seq, marker.stream, marker.level) == (3, LOG, "WARNING")
    assert marker.dropped == 30 + 5 + 7
    assert marker.text == marker_text(42, 100)
    assert len(lines) == 3


async def test_the_purge_deletes_a_predictions_logs(store: Store) -> None:
    """Retention deletes a purged prediction's lines with its row; others' stay."""
    old = Prediction(id=new_id(), target="m", created_at=T0, status=Status.QUEUED, queued_at=T0)
    kept = new_id()
    await store.create(old)
    [claimed] = await store.claim("m", 1, worker_id="w", lease_s=30, now=T0)
    await store.complete(
        [Completion(claimed.id, claimed.attempts, "w", Status.SUCCEEDED, T0 + 1, output_json="1")]
    )
    await append(store, Append(old.id, 1, printed("gone")), Append(kept, 1, printed("kept")))
    purged = await store.purge(before=T0 + 2, limit=10)
    assert [p.id for p in purged] == [old.id]
    assert await read(store, old.id) == []
    assert await read(store, kept) == ["kept"]
