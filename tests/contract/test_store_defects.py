"""Store defects pinned through the Store protocol, on SQLite and PostgreSQL.

Each test states the behaviour the store owes where it once fell short.
Pipeline runs are built as the service builds them: a run row carrying its
definition (a :class:`Bundle`) and its pending step rows from ``step_rows``.
Time is passed explicitly (``now=``), never slept.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from freight.config import Settings
from freight.events import CompletionHub, WorkSignal
from freight.ids import new_id
from freight.model import Batching, InputKind, Replicas
from freight.prediction import Completion, ErrorCode, Prediction, Status
from freight.project import load_pipelines
from freight.registry import ModelSpec
from freight.service import CreateOptions, NewInput, PredictionService
from freight.storage.memory import MemoryStorage
from freight.store import Store, open_store
from tests.fixtures.pg_stats import StatsReader
from tests.fixtures.pipeline_rows import T0, pipeline_run

LEASE_S = 30.0

CHAIN = {
    "steps": {
        "a": {"model": "m", "input": "$input"},
        "b": {"model": "m", "input": "$steps.a.output"},
    },
    "output": "$steps.b.output",
}


def fan(max_concurrency: int | None = None, model: str = "m") -> dict[str, Any]:
    step: dict[str, Any] = {"model": model, "for_each": "$input.xs", "input": "$item"}
    if max_concurrency is not None:
        step["max_concurrency"] = max_concurrency
    return {"steps": {"each": step}, "output": "$steps.each.output"}


@pytest.fixture
async def store(sql_store_url: str) -> AsyncIterator[Store]:
    s = open_store(sql_store_url)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def succeeded(row: Prediction, output: Any, *, now: float = T0 + 2) -> Completion:
    text = json.dumps(output)
    return Completion(
        id=row.id,
        attempt=row.attempts,
        worker_id="w",
        status=Status.SUCCEEDED,
        finished_at=now,
        output_json=text,
        output_content_type="application/json",
        output_bytes=len(text.encode()),
        batch_size=1,
    )


# -- 1. a NUL byte in what a model reports ------------------------------------------


async def test_nul_byte_in_an_error_message_records_the_whole_batch(store: Store) -> None:
    """A failed completion whose error message holds a NUL byte is recorded (the NUL
    replaced or escaped, the message kept) together with the rest of its batch."""
    for _ in range(3):
        await store.create(
            Prediction(id=new_id(), target="m", status=Status.QUEUED, created_at=T0, queued_at=T0)
        )
    first, bad, last = await store.claim("m", 3, worker_id="w", lease_s=LEASE_S, now=T0 + 1)
    detail = json.dumps({"traceback": "line 1\x00line 2"})  # JSON text: the NUL escaped
    failed = Completion(
        id=bad.id,
        attempt=bad.attempts,
        worker_id="w",
        status=Status.FAILED,
        finished_at=T0 + 2,
        error_code=ErrorCode.MODEL_ERROR,
        error_message="cannot decode byte \x00 of the input",
        error_detail=detail,
        batch_size=3,
    )
    batch = [succeeded(first, {"text": "a\x00b"}), failed, succeeded(last, 7)]

    applied = await store.complete(batch)

    assert sorted(applied) == sorted(r.id for r in (first, bad, last))
    got = {r.id: await store.get(r.id) for r in (first, bad, last)}
    one, two, three = (got[r.id] for r in (first, bad, last))
    assert one is not None and two is not None and three is not None
    assert (one.status, orjson.loads(one.output_json or "")) == (
        Status.SUCCEEDED,
        {"text": "a\x00b"},
    )
    assert (three.status, three.output_json) == (Status.SUCCEEDED, "7")
    assert (two.status, two.error_code) == (Status.FAILED, ErrorCode.MODEL_ERROR)
    message = two.error_message or ""
    assert message.startswith("cannot decode byte ") and message.endswith(" of the input")
    assert orjson.loads(two.error_detail or "") == {"traceback": "line 1\x00line 2"}
    assert await store.claim("m", 3, worker_id="w", lease_s=LEASE_S, now=T0 + 3) == []


# -- 2. a pipeline run whose upload expired -----------------------------------------


async def test_upload_expiry_of_a_run_ends_its_steps_and_purge_removes_them(
    store: Store,
) -> None:
    """A run whose input was never uploaded expires; every one of its steps ends with
    it, and retention purges the steps along with the run."""
    run, steps = pipeline_run(CHAIN, status=Status.AWAITING_INPUT, upload_expires_at=T0 + 10)
    created, inserted = await store.create_run(run, steps)
    assert inserted and created.status == Status.AWAITING_INPUT
    assert {s.status for s in await store.steps(run.id)} == {Status.PENDING}

    result = await store.reap(now=T0 + 20)

    assert run.id in result.expired
    ended = await store.get(run.id)
    assert ended is not None and ended.status == Status.EXPIRED
    rows = await store.steps(run.id)
    assert len(rows) == len(steps)
    assert {r.status for r in rows} <= {Status.CANCELED, Status.EXPIRED}
    assert all(r.finished_at is not None for r in rows)
    purged = await store.purge(before=T0 + 1000, limit=100)
    assert {p.id for p in purged} == {run.id} | {s.id for s in steps}
    assert await store.steps(run.id) == []


# -- 3. for_each over many elements -------------------------------------------------


@pytest.mark.parametrize("max_concurrency", [None, 7])
async def test_for_each_over_300_elements_completed_one_at_a_time_succeeds(
    store: Store, max_concurrency: int | None
) -> None:
    """A for_each step over 300 elements, its elements claimed and completed one per
    call, finishes the run with every element's output in element order."""
    n = 300
    run, steps = pipeline_run(fan(max_concurrency), value={"xs": list(range(n))})
    await store.create_run(run, steps)
    completed = 0
    for _ in range(n + 1):  # bounded: one element per round
        claimed = await store.claim("m", 1, worker_id="w", lease_s=LEASE_S, now=T0 + 1)
        if not claimed:
            break
        (row,) = claimed
        assert await store.complete([succeeded(row, orjson.loads(row.input_json or "") * 2)])
        completed += 1
    assert completed == n
    done = await store.get(run.id)
    assert done is not None and done.status == Status.SUCCEEDED
    assert orjson.loads(done.output_json or "") == [2 * x for x in range(n)]
    rows = await store.steps(run.id)
    assert len(rows) == n + 1 and {r.status for r in rows} == {Status.SUCCEEDED}


async def _reads_per_completion(url: str, stats: StatsReader, n: int, k: int = 5) -> float:
    """Rows of ``predictions`` PostgreSQL read to record ``k`` element completions of a
    for_each step over ``n`` elements (one complete() call each), per completion."""
    setup = open_store(url)
    await setup.open()
    model = f"m{n}"  # its own target: claims take only this run's elements
    run, steps = pipeline_run(fan(model=model), value={"xs": list(range(n))}, model=model)
    await setup.create_run(run, steps)
    claimed = await setup.claim(model, k, worker_id="w", lease_s=LEASE_S, now=T0 + 1)
    assert len(claimed) == k
    seen = stats.backends()
    await setup.close()
    stats.settle(seen)
    before = stats.rows_read("predictions")

    measured = open_store(url)
    await measured.open()
    for row in claimed:
        assert await measured.complete([succeeded(row, 0)]) == [row.id]
    seen = stats.backends()
    await measured.close()
    stats.settle(seen)
    return (stats.rows_read("predictions") - before) / k


async def test_rows_read_per_element_completion_do_not_grow_with_the_fan_out(
    postgres_url: str,
) -> None:
    """Recording one for_each element reads about as many rows at 400 elements as at
    50 (PostgreSQL's per-table counters of rows read; a count, not a timing)."""
    stats = StatsReader(postgres_url)
    try:
        small = await _reads_per_completion(postgres_url, stats, 50)
        large = await _reads_per_completion(postgres_url, stats, 400)
    finally:
        stats.close()
    assert small > 0
    assert large < 3 * small, f"{large:.0f} rows read per completion at 400, {small:.0f} at 50"


# -- 5. every run has a deadline ----------------------------------------------------


async def test_an_uploaded_run_deadline_counts_from_when_its_input_arrived(
    store: Store,
) -> None:
    """A run awaiting its input gets its whole-run deadline from mark_input_ready: it
    is still running past created_at + timeout_s, and fails with timeout (its steps
    canceled) past input arrival + timeout_s."""
    run, steps = pipeline_run(
        CHAIN, status=Status.AWAITING_INPUT, timeout_s=100.0, upload_expires_at=T0 + 1000
    )
    await store.create_run(run, steps)
    started = await store.mark_input_ready(
        run.id,
        input_key=f"uploads/{run.id}",
        input_content_type="application/json",
        input_bytes=1,
        input_json="1",
        now=T0 + 50,
    )
    assert started.status == Status.RUNNING
    assert started.lease_expires_at == T0 + 150

    early = await store.reap(now=T0 + 120)

    assert run.id not in early.failed
    still = await store.get(run.id)
    assert still is not None and still.status == Status.RUNNING
    late = await store.reap(now=T0 + 151)
    assert run.id in late.failed
    ended = await store.get(run.id)
    assert ended is not None and (ended.status, ended.error_code) == (
        Status.FAILED,
        ErrorCode.TIMEOUT,
    )
    assert {r.status for r in await store.steps(run.id)} == {Status.CANCELED}


def _model(name: str) -> ModelSpec:
    return ModelSpec(
        name=name,
        ref=f"models:{name}",
        input_kind=InputKind.JSON,
        batching=Batching(max_size=8),
        replicas=Replicas(),
        timeout_s=None,
        max_attempts=1,
    )


async def test_a_pipeline_without_timeout_s_times_out_at_the_max_run_time(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run of a pipeline that declares no timeout_s, whose model no worker serves,
    fails with timeout once the server's max run time has passed since it started."""
    for name in list(os.environ):
        if name.startswith("FREIGHT_"):
            monkeypatch.delenv(name)
    (tmp_path / "freight.yaml").write_text(yaml.safe_dump({"pipelines": {"p": CHAIN}}))
    settings = Settings(project_dir=tmp_path, state_dir=tmp_path / "state", max_run_s=120.0)
    models = {"m": _model("m")}
    service = PredictionService(
        settings,
        models,
        store,
        MemoryStorage(),
        signal=WorkSignal(),
        hub=CompletionHub(),
        pipelines=load_pipelines(tmp_path, models, settings),
    )
    run = await service.create("p", NewInput(json=1, has_json=True), CreateOptions())
    assert run.status == Status.RUNNING

    assert run.id not in (await store.reap(now=run.created_at + 119)).failed
    result = await store.reap(now=run.created_at + 121)

    assert run.id in result.failed
    ended = await store.get(run.id)
    assert ended is not None and ended.error_code == ErrorCode.TIMEOUT
    assert {r.status for r in await store.steps(run.id)} == {Status.CANCELED}


# -- 6. attempts of an input that crashes the embedded server -----------------------


async def test_orphans_recovered_at_each_restart_spend_their_attempts(sqlite_url: str) -> None:
    """On the exclusive SQLite store, a prediction left running by a crash counts that
    attempt: after max_attempts crashes it is failed (attempts_exhausted), not queued."""
    store = open_store(sqlite_url)
    await store.open()
    try:
        assert store.exclusive
        (p, _) = await store.create(
            Prediction(
                id=new_id(),
                target="m",
                status=Status.QUEUED,
                created_at=T0,
                queued_at=T0,
                max_attempts=2,
            )
        )
        await store.claim("m", 1, worker_id="w", lease_s=LEASE_S, now=T0 + 1)
        await store.recover_orphans(now=T0 + 2)  # the server restarted mid-prediction
        again = await store.get(p.id)
        assert again is not None and (again.status, again.attempts) == (Status.QUEUED, 1)
        (second,) = await store.claim("m", 1, worker_id="w", lease_s=LEASE_S, now=T0 + 3)
        assert second.attempts == 2
        await store.recover_orphans(now=T0 + 4)  # and crashed again on the same input
        ended = await store.get(p.id)
        assert ended is not None
        assert (ended.status, ended.error_code) == (Status.FAILED, ErrorCode.ATTEMPTS_EXHAUSTED)
        assert ended.finished_at is not None
        assert await store.claim("m", 1, worker_id="w", lease_s=LEASE_S, now=T0 + 5) == []
    finally:
        await store.close()
