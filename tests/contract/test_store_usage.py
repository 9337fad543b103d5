"""The usage ledger on every backend: each ending path writes its lines in its own
transaction, once; a report sums them.

Totals are checked against what was run: counts by outcome, compute shares of a
batch summing to its wall time, queue seconds from the rows' own times.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from freight.errors import ConflictError
from freight.ids import new_id
from freight.ledger import UsageLine, hour_of, total
from freight.prediction import Completion, Prediction, Release, Status
from freight.store import Store, open_store
from freight.store import usage as ledger_sql
from freight.store._op import Op
from freight.usage import UsageService
from tests.fixtures.pipeline_rows import pipeline_run

T0 = 1_000_000.0
HOUR = hour_of(T0)
LEASE_S = 30.0


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    s = open_store(store_url)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def make(target: str = "m", *, tenant: str = "acme", **fields: Any) -> Prediction:
    fields.setdefault("queued_at", T0)
    fields.setdefault("status", Status.QUEUED)
    return Prediction(
        id=new_id(),
        target=target,
        created_at=T0,
        tenant=tenant,
        input_bytes=100,
        **fields,
    )


async def add(store: Store, *rows: Prediction) -> list[Prediction]:
    return [(await store.create(p))[0] for p in rows]


def completion(
    p: Prediction, status: Status = Status.SUCCEEDED, *, share: float = 0.0, gpus: int = 0
) -> Completion:
    return Completion(
        id=p.id,
        attempt=p.attempts,
        worker_id="w1",
        status=status,
        finished_at=T0 + 5,
        output_bytes=10 if status == Status.SUCCEEDED else None,
        compute_s=share,
        gpus=gpus,
        cold_start_s=0.25,
    )


async def report(
    store: Store, group_by: Sequence[str] = ("tenant", "target", "kind", "status"), **kw: Any
) -> list[UsageLine]:
    kw.setdefault("tenant", None)
    return await UsageService(store).report(
        start=kw.pop("start", HOUR), end=kw.pop("end", HOUR + 3600), group_by=group_by, **kw
    )


def keyed(lines: list[UsageLine]) -> dict[tuple[str | None, ...], UsageLine]:
    return {(u.tenant, u.target, u.kind, u.status): u for u in lines}


async def test_a_batch_completion_writes_its_cost(store: Store) -> None:
    """A batch of three (two succeed, one fails) ran 0.9 s on a 2-GPU replica: the
    ledger has its counts by outcome, the shares summing to 0.9 s, GPU seconds, the
    queue seconds of the rows (queued -> claimed), bytes in and out."""
    await add(store, make(), make(), make())
    claimed = await store.claim("m", 3, worker_id="w1", lease_s=LEASE_S, now=T0 + 2)
    wall_s = 0.9
    outcomes = [Status.SUCCEEDED, Status.SUCCEEDED, Status.FAILED]
    done = [
        completion(p, s, share=wall_s / 3, gpus=2) for p, s in zip(claimed, outcomes, strict=True)
    ]
    assert sorted(await store.complete(done)) == sorted(p.id for p in claimed)
    lines = keyed(await report(store))
    ok, failed = lines["acme", "m", "model", "succeeded"], lines["acme", "m", "model", "failed"]
    assert (ok.count, failed.count) == (2, 1)
    assert ok.compute_s + failed.compute_s == pytest.approx(wall_s)
    assert ok.gpu_s + failed.gpu_s == pytest.approx(2 * wall_s)
    assert (ok.queue_s, failed.queue_s) == (4.0, 2.0)
    assert (ok.cold_start_s, ok.bytes_in, ok.bytes_out) == (0.5, 200, 20)
    assert (failed.bytes_in, failed.bytes_out) == (100, 0)


async def test_a_fenced_completion_writes_nothing(store: Store) -> None:
    """A completion that does not apply (already completed, or another attempt's) adds
    no line: one line per prediction ended, never two."""
    await add(store, make())
    (claimed,) = await store.claim("m", 1, worker_id="w1", lease_s=LEASE_S, now=T0 + 1)
    await store.complete([completion(claimed, share=1.0)])
    assert await store.complete([completion(claimed, share=1.0)]) == []
    assert await store.complete([dataclasses.replace(completion(claimed), attempt=9)]) == []
    (line,) = await report(store)
    assert (line.count, line.compute_s) == (1, 1.0)


async def test_every_ending_path_writes_one_line_per_row(store: Store) -> None:
    """Release with attempts spent, cancel, the reaper's TTL, upload and lease sweeps,
    and orphan recovery each end rows with their lines; requeues write none."""
    _, retry, canceled, *_, live = await add(
        store,
        make("release", max_attempts=1),
        make("release"),
        make("cancel"),
        make("ttl", expires_at=T0 + 5),
        make("upload", status=Status.AWAITING_INPUT, queued_at=None, upload_expires_at=T0 + 5),
        make("lease", max_attempts=1),
        make("orphan", max_attempts=1),
        make("live"),
    )
    claim = {"worker_id": "w1", "lease_s": LEASE_S, "now": T0 + 1}
    (a, b) = await store.claim("release", 2, **claim)
    releases = [Release(id=r.id, attempt=r.attempts, worker_id="w1") for r in (a, b)]
    await store.release(releases, now=T0 + 2)
    await store.cancel(canceled.id, now=T0 + 3)
    await store.claim("lease", 1, worker_id="w1", lease_s=1, now=T0 + 1)
    await store.reap(now=T0 + 6)
    await store.claim("orphan", 1, **claim)
    if store.exclusive:
        await store.recover_orphans(now=T0 + 7)
    else:  # a cluster's crash recovery is the reaper's lease sweep
        await store.reap(now=T0 + 1 + LEASE_S + 1)
    lines = keyed(await report(store))
    assert {k[1]: (k[3], u.count) for k, u in lines.items()} == {
        "release": ("failed", 1),
        "cancel": ("canceled", 1),
        "ttl": ("expired", 1),
        "upload": ("expired", 1),
        "lease": ("failed", 1),
        "orphan": ("failed", 1),
    }
    assert lines["acme", "cancel", "model", "canceled"].queue_s == 3.0  # never started
    assert lines["acme", "upload", "model", "expired"].queue_s == 0.0  # never queued
    assert all(u.compute_s == 0.0 for u in lines.values())
    for kept in (retry, live):
        row = await store.get(kept.id)
        assert row is not None and row.status is Status.QUEUED


async def test_a_run_and_its_steps_each_get_their_lines(store: Store) -> None:
    """A pipeline run: its model steps' lines (with their compute) from the workers'
    completions, the skipped step's and the run's own line from the advancement that
    ended them, all in the completion's transaction."""
    raw = {
        "steps": {
            "a": {"model": "m", "input": "$input"},
            "big": {"model": "m", "input": "$steps.a.output", "when": "steps.a.output > `10`"},
        },
        "output": "$steps.a.output",
    }
    run, steps = pipeline_run(raw, value=1, tenant="acme")
    await store.create_run(run, steps)
    (step,) = await store.claim("m", 5, worker_id="w1", lease_s=LEASE_S, now=T0 + 1)
    done = dataclasses.replace(completion(step, share=0.5), output_json="2")
    await store.complete([done])
    finished = await store.get(run.id)
    assert finished is not None and finished.status is Status.SUCCEEDED
    lines = keyed(await report(store))
    assert {k: u.count for k, u in lines.items()} == {
        ("acme", "m", "model", "succeeded"): 1,
        ("acme", "m", "model", "skipped"): 1,
        ("acme", "p", "pipeline", "succeeded"): 1,
    }
    assert lines["acme", "m", "model", "succeeded"].compute_s == 0.5
    assert lines["acme", "p", "pipeline", "succeeded"].compute_s == 0.0


async def test_a_canceled_run_writes_its_rows_lines(store: Store) -> None:
    """Canceling a run ends it and its unfinished steps: a line for each."""
    raw = {
        "steps": {
            "a": {"model": "m", "input": "$input"},
            "b": {"model": "m", "input": "$steps.a.output"},
        },
        "output": "$steps.b.output",
    }
    run, steps = pipeline_run(raw, value=1, tenant="acme")
    await store.create_run(run, steps)
    await store.cancel(run.id, now=T0 + 2)
    lines = keyed(await report(store))
    assert {k: u.count for k, u in lines.items()} == {
        ("acme", "m", "model", "canceled"): 2,
        ("acme", "p", "pipeline", "canceled"): 1,
    }


async def test_concurrent_completions_lose_no_line(store: Store) -> None:
    """Completions of many workers at once (each its own transaction) all land: the
    ledger is appended to, never updated, so none waits on or overwrites another."""
    await add(store, *[make() for _ in range(40)])
    batches = [
        await store.claim("m", 4, worker_id=f"w{i}", lease_s=LEASE_S, now=T0 + 1) for i in range(10)
    ]
    outcomes = [
        [dataclasses.replace(completion(p, share=0.25), worker_id=f"w{i}") for p in batch]
        for i, batch in enumerate(batches)
    ]
    await asyncio.gather(*(store.complete(c) for c in outcomes))
    (line,) = await report(store, group_by=())
    assert (line.count, line.compute_s, line.queue_s) == (40, pytest.approx(10.0), 40.0)


async def test_lines_go_with_their_transaction(store: Store) -> None:
    """A transaction that fails after appending its lines leaves none behind."""
    line = UsageLine(HOUR, "acme", "m", "model", "succeeded", 1, 1.0)

    def failing() -> Op[None]:
        yield from ledger_sql.append([line])
        raise ConflictError("the rest of the transaction failed")

    with pytest.raises(ConflictError):
        await store.execute(failing)
    assert await report(store) == []
    await store.execute(lambda: ledger_sql.append([line, dataclasses.replace(line, count=2)]))
    assert total(await report(store)).count == 3


async def test_the_report_groups_and_filters(store: Store) -> None:
    """Whole hours of [start, end); grouped by any keys (none: the total); one tenant's
    only; of some targets only."""
    base = UsageLine(HOUR, "acme", "m", "model", "succeeded", 1, 1.0, 0.0, 2.0, 0.0, 10, 1)
    lines = [
        base,
        dataclasses.replace(base, status="failed"),
        dataclasses.replace(base, target="n"),
        dataclasses.replace(base, tenant="other"),
        dataclasses.replace(base, hour=HOUR + 3600),
        dataclasses.replace(base, hour=HOUR - 3600),
    ]
    await store.execute(lambda: ledger_sql.append(lines))
    (whole,) = await report(store, group_by=(), start=HOUR + 1, end=HOUR + 3601)
    assert (whole.count, whole.compute_s, whole.bytes_in, whole.tenant) == (5, 5.0, 50, None)
    by_hour = await report(store, group_by=("hour",), start=HOUR - 3600, end=HOUR + 7200)
    assert [(u.hour, u.count) for u in by_hour] == [
        (HOUR - 3600, 1),
        (HOUR, 4),
        (HOUR + 3600, 1),
    ]
    mine = await report(store, group_by=("model", "status"), tenant="acme")
    assert [(u.target, u.status, u.count) for u in mine] == [
        ("m", "failed", 1),
        ("m", "succeeded", 1),
        ("n", "succeeded", 1),
    ]
    assert [u.tenant for u in await report(store, group_by=("tenant",))] == ["acme", "other"]
    limited = await report(store, group_by=("target",), targets={"n"})
    assert [(u.target, u.count) for u in limited] == [("n", 1)]
    assert await report(store, group_by=("target",), targets=set()) == []
    assert await report(store, group_by=(), start=HOUR + 7200, end=HOUR + 9000) == []
