"""Durable pipeline runs on every store backend: rows, advancement, outcomes.

The service creates a run and its step rows; a fake worker claims queued steps
from the store and completes them as a model would, so every transition goes
through the same store methods the agent uses (claim, complete, release, reap,
cancel), and each runs the run's advancement in its own transaction: on SQLite,
PostgreSQL and the in-memory store alike.
"""

from __future__ import annotations

import importlib
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from freight.config import Settings
from freight.events import Claimed, CompletionHub, Offer, WorkSignal
from freight.model import Batching, InputKind, Replicas
from freight.prediction import Completion, Prediction, Release, Status, attempts_of
from freight.project import load_pipelines
from freight.registry import ModelSpec
from freight.service import CreateOptions, NewInput, PredictionService
from freight.storage.memory import MemoryStorage
from freight.store import Store, open_store

Model = Callable[[Any], Any]
MODELS: dict[str, Model] = {
    "double": lambda x: x * 2,
    "add": lambda x: x["a"] + x["b"],
    "inc": lambda x: x + 1,
    "boom": lambda x: (_ for _ in ()).throw(ValueError("boom")),
    "hold": lambda x: x,  # never completed by the worker unless told
    "flaky": lambda x: _flaky(x),
}
#: how many more calls of the flaky model fail
FLAKY = {"left": 0}


def _flaky(x: Any) -> Any:
    if FLAKY["left"] > 0:
        FLAKY["left"] -= 1
        raise ValueError("flaky")
    return x

PIPELINES = {
    "diamond": {
        "steps": {
            "a": {"model": "double", "input": "$input.x"},
            "b": {"model": "inc", "input": "$steps.a.output"},
            "c": {"model": "double", "input": "$steps.a.output"},
            "d": {"model": "add", "input": {"a": "$steps.b.output", "b": "$steps.c.output"}},
        },
        "output": {"sum": "$steps.d.output", "a": "$steps.a.output"},
    },
    "conditional": {
        "steps": {
            "a": {"model": "double", "input": "$input.x"},
            "big": {"model": "inc", "input": "$steps.a.output", "when": "steps.a.output > `10`"},
        },
        "output": {"a": "$steps.a.output", "big": "$steps.big.output"},
    },
    "fan": {
        "steps": {
            "each": {
                "model": "double",
                "for_each": "$input.xs",
                "input": "$item",
                "max_concurrency": 2,
            },
        },
        "output": "$steps.each.output",
    },
    "outer": {
        "steps": {
            "inner": {"pipeline": "diamond", "input": "$input"},
            "after": {"model": "inc", "input": "$steps.inner.output.sum"},
        },
        "output": "$steps.after.output",
    },
    "failing": {
        "steps": {
            "ok": {"model": "hold", "input": "$input"},
            "bad": {"model": "boom", "input": "$input"},
            "later": {"model": "inc", "input": "$steps.bad.output"},
        },
    },
    "soft": {
        "steps": {
            "bad": {"model": "boom", "input": "$input", "optional": True},
            "after": {"model": "inc", "input": 1},
        },
        "output": {"bad": "$steps.bad.output", "after": "$steps.after.output"},
    },
    "slow": {"timeout_s": 5, "steps": {"wait": {"model": "hold", "input": "$input"}}},
    "retrying": {
        "steps": {
            "first": {
                "model": "flaky",
                "input": "$input",
                "retry": {"max_attempts": 3, "interval_s": 5, "backoff": 2},
            },
            "after": {"model": "inc", "input": "$steps.first.output"},
        },
        "output": "$steps.after.output",
    },
    "retry_timeouts": {
        "steps": {"first": {"model": "flaky", "input": "$input", "retry": {"on": ["timeout"]}}},
    },
    "fan_nested": {
        "steps": {
            "each": {"pipeline": "diamond", "for_each": "$input.xs", "input": {"x": "$item"}}
        },
        "output": "$steps.each.output[*].sum",
    },
    "fan_fail": {
        "steps": {"each": {"model": "boom", "for_each": "$input.xs", "input": "$item"}},
    },
    "passthrough": {
        "steps": {"big": {"model": "hold", "input": "$input"}},
        "output": "$steps.big.output",
    },
    "peek": {
        "steps": {
            "picture": {"model": "hold", "input": "$input"},
            "field": {"model": "inc", "input": "$steps.picture.output.label"},
        },
    },
    "bundle": {
        "steps": {"picture": {"model": "hold", "input": "$input"}},
        "output": {"picture": "$steps.picture.output", "echo": "$input"},
    },
    "by_reference": {
        "steps": {
            "picture": {"model": "hold", "input": "$input"},
            "whole": {"model": "inc", "input": "$steps.picture.output"},
            "part": {"model": "inc", "input": {"of": "$steps.picture.output.object"}},
        },
    },
}

T0 = 1_000_000.0


def spec_of(name: str) -> ModelSpec:
    return ModelSpec(
        name=name,
        ref=f"models:{name}",
        input_kind=InputKind.JSON,
        batching=Batching(max_size=8),
        replicas=Replicas(),
        timeout_s=None,
        max_attempts=1,
    )


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    s = open_store(store_url)
    await s.open()
    yield s
    await s.close()


@pytest.fixture
def service(tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch) -> PredictionService:
    for name in list(os.environ):
        if name.startswith("FREIGHT_"):
            monkeypatch.delenv(name)
    (tmp_path / "freight.yaml").write_text(yaml.safe_dump({"pipelines": PIPELINES}))
    settings = Settings(project_dir=tmp_path, state_dir=tmp_path / "state")
    models = {name: spec_of(name) for name in MODELS}
    pipelines = load_pipelines(tmp_path, models, settings)
    return PredictionService(
        settings,
        models,
        store,
        MemoryStorage(),
        signal=WorkSignal(),
        hub=CompletionHub(),
        pipelines=pipelines,
    )


async def work(store: Store, *, skip: frozenset[str] = frozenset(), now: float = T0) -> int:
    """Claim and complete queued steps as models would, until none is left; return how
    many ran. Targets in ``skip`` are left queued (a model that is busy)."""
    ran = 0
    while True:
        done = 0
        for target, model in MODELS.items():
            if target in skip:
                continue
            for row in await store.claim(target, 8, worker_id="w", lease_s=30, now=now):
                await store.complete([outcome(row, model, now)])
                done += 1
        if not done:
            return ran
        ran += done


def outcome(row: Prediction, model: Model, now: float) -> Completion:
    base = Completion(
        id=row.id, attempt=row.attempts, worker_id="w", status=Status.SUCCEEDED, finished_at=now
    )
    try:
        value = model(orjson.loads(row.input_json or "null"))
    except Exception as exc:
        base.status, base.error_code, base.error_message = Status.FAILED, "model_error", str(exc)
        return base
    base.output_json = json.dumps(value)
    return base


def stored(
    row: Prediction, content_type: str = "application/octet-stream", size: int = 9_000_000
) -> Completion:
    """The completion of a model whose output was kept as an object (too large, or bytes)."""
    return Completion(
        id=row.id,
        attempt=row.attempts,
        worker_id="w",
        status=Status.SUCCEEDED,
        finished_at=T0,
        output_key=f"outputs/{row.id}",
        output_content_type=content_type,
        output_bytes=size,
    )


async def start(service: PredictionService, target: str, value: Any) -> Prediction:
    return await service.create(target, NewInput(json=value, has_json=True), CreateOptions())


def by_step(rows: list[Prediction]) -> dict[str, Prediction]:
    return {r.step or "": r for r in rows if r.item_index is None}


async def test_diamond_runs_parallel_branches_and_joins(
    service: PredictionService, store: Store
) -> None:
    """a runs first; b and c are queued together once a finished; d joins both."""
    run = await start(service, "diamond", {"x": 3})
    steps = by_step(await service.steps(run.id))
    assert {n: s.status for n, s in steps.items()} == {
        "a": Status.QUEUED,
        "b": Status.PENDING,
        "c": Status.PENDING,
        "d": Status.PENDING,
    }
    assert (steps["d"].waiting_on, steps["b"].waiting_on) == (2, 1)
    a = (await store.claim("double", 8, worker_id="w", lease_s=30, now=T0))[0]
    await store.complete([outcome(a, MODELS["double"], T0)])
    steps = by_step(await service.steps(run.id))
    assert (steps["b"].status, steps["c"].status) == (Status.QUEUED, Status.QUEUED)
    assert steps["d"].waiting_on == 2
    await work(store)
    done = await service.get(run.id)
    assert done.status == Status.SUCCEEDED
    assert orjson.loads(done.output_json or "") == {"sum": 7 + 12, "a": 6}


async def test_false_condition_skips_the_step_and_it_reads_null(
    service: PredictionService, store: Store
) -> None:
    """A step whose when is false is skipped; references to it resolve to null."""
    run = await start(service, "conditional", {"x": 2})
    await work(store)
    done = await service.get(run.id)
    assert orjson.loads(done.output_json or "") == {"a": 4, "big": None}
    assert by_step(await service.steps(run.id))["big"].status == Status.SKIPPED
    run = await start(service, "conditional", {"x": 8})
    await work(store)
    assert orjson.loads((await service.get(run.id)).output_json or "") == {"a": 16, "big": 17}


async def test_for_each_runs_elements_within_max_concurrency_in_order(
    service: PredictionService, store: Store
) -> None:
    """One element row per item, at most max_concurrency queued at once; the output
    lists the results in element order."""
    run = await start(service, "fan", {"xs": [1, 2, 3, 4, 5]})
    rows = await service.steps(run.id)
    elements = sorted(
        (r for r in rows if r.item_index is not None), key=lambda r: r.item_index or 0
    )
    assert [e.status for e in elements] == [Status.QUEUED] * 2 + [Status.PENDING] * 3
    await work(store)
    done = await service.get(run.id)
    assert orjson.loads(done.output_json or "") == [2, 4, 6, 8, 10]


async def test_for_each_over_an_empty_list_outputs_an_empty_list(
    service: PredictionService, store: Store
) -> None:
    """No elements: the step and the run finish at once with []."""
    run = await start(service, "fan", {"xs": []})
    assert run.status == Status.SUCCEEDED
    assert orjson.loads(run.output_json or "") == []


async def test_nested_pipeline_is_a_step_whose_output_feeds_the_next(
    service: PredictionService, store: Store
) -> None:
    """A pipeline step runs the nested pipeline as its own run (a row carrying the outer
    run's id); its output feeds the next step."""
    run = await start(service, "outer", {"x": 3})
    await work(store)
    done = await service.get(run.id)
    assert done.status == Status.SUCCEEDED and orjson.loads(done.output_json or "") == 20
    inner = by_step(await service.steps(run.id))["inner"]
    assert inner.kind == "pipeline" and inner.run_id == run.id
    assert {s.status for s in await service.steps(inner.id)} == {Status.SUCCEEDED}


async def test_required_failure_fails_the_run_and_cancels_the_rest(
    service: PredictionService, store: Store
) -> None:
    """A failing required step fails the run with its error, naming it; the running
    sibling and the pending dependant are canceled; nothing is left queued."""
    run = await start(service, "failing", 5)
    held = await store.claim("hold", 8, worker_id="w", lease_s=30, now=T0)
    await work(store, skip=frozenset({"hold"}))
    done = await service.get(run.id)
    assert done.status == Status.FAILED and done.error_code == "model_error"
    assert "bad" in (done.error_message or "") and "boom" in (done.error_message or "")
    assert orjson.loads(done.error_detail or "{}") == {"step": "bad"}
    steps = by_step(await service.steps(run.id))
    assert steps["ok"].status == Status.CANCELED and steps["later"].status == Status.CANCELED
    assert await store.heartbeat("w", [held[0].id], lease_s=30, now=T0) == [held[0].id]


async def test_optional_failure_resolves_to_null(service: PredictionService, store: Store) -> None:
    """An optional step's failure leaves the run going; its output reads null."""
    run = await start(service, "soft", 1)
    await work(store)
    done = await service.get(run.id)
    assert done.status == Status.SUCCEEDED
    assert orjson.loads(done.output_json or "") == {"bad": None, "after": 2}


async def test_cancel_of_a_run_cancels_its_unfinished_steps(
    service: PredictionService, store: Store
) -> None:
    """Canceling a run cancels every unfinished step, nested runs' steps included."""
    run = await start(service, "outer", {"x": 1})
    canceled = await service.cancel(run.id)
    assert canceled.status == Status.CANCELED
    rows = await service.steps(run.id)
    assert {r.status for r in rows} == {Status.CANCELED}
    inner = by_step(rows)["inner"]
    assert {r.status for r in await service.steps(inner.id)} == {Status.CANCELED}
    assert await work(store) == 0


async def test_whole_run_timeout_fails_it_and_cancels_its_steps(
    service: PredictionService, store: Store
) -> None:
    """Past its timeout_s the reaper fails the run (timeout) and its steps are canceled."""
    run = await start(service, "slow", 1)
    result = await store.reap(now=run.created_at + 10)
    assert run.id in result.failed
    done = await service.get(run.id)
    assert (done.status, done.error_code) == (Status.FAILED, "timeout")
    assert {r.status for r in await service.steps(run.id)} == {Status.CANCELED}


async def test_step_failed_by_release_moves_the_run_on(
    service: PredictionService, store: Store
) -> None:
    """A step whose replica died with no attempts left fails the run (release path)."""
    run = await start(service, "slow", 1)
    row = (await store.claim("hold", 1, worker_id="w", lease_s=30, now=T0))[0]
    await store.release([Release(id=row.id, attempt=row.attempts, worker_id="w")], now=T0)
    done = await service.get(run.id)
    assert (done.status, done.error_code) == (Status.FAILED, "attempts_exhausted")


async def test_advancing_twice_changes_nothing(service: PredictionService, store: Store) -> None:
    """A replayed completion (fenced) does not start a step twice."""
    run = await start(service, "diamond", {"x": 1})
    a = (await store.claim("double", 8, worker_id="w", lease_s=30, now=T0))[0]
    completion = outcome(a, MODELS["double"], T0)
    assert await store.complete([completion]) == [a.id]
    before = await service.steps(run.id)
    assert await store.complete([completion]) == []
    assert await service.steps(run.id) == before


async def test_a_stored_output_passes_to_the_next_step_by_reference(
    service: PredictionService, store: Store
) -> None:
    """A binary output is never copied: a step whose input is that whole output gets
    the object's key as its input; a template reading into it sees a freight:// URI."""
    run = await start(service, "by_reference", 1)
    picture = (await store.claim("hold", 1, worker_id="w", lease_s=30, now=T0))[0]
    await store.complete([stored(picture, "image/png", 3)])
    steps = by_step(await service.steps(run.id))
    whole, part = steps["whole"], steps["part"]
    assert (whole.status, whole.input_json) == (Status.QUEUED, None)
    assert (whole.input_key, whole.input_content_type, whole.input_bytes) == (
        f"outputs/{picture.id}",
        "image/png",
        3,
    )
    assert orjson.loads(part.input_json or "") == {"of": f"freight://outputs/{picture.id}"}


async def test_a_run_whose_output_is_one_object_is_that_object(
    service: PredictionService, store: Store
) -> None:
    """A run whose output is a step's whole stored output (a large one, by reference)
    records that object as its own output, downloadable like a model's."""
    run = await start(service, "passthrough", {"x": 1})
    (row,) = await store.claim("hold", 1, worker_id="w", lease_s=30, now=T0)
    await store.complete([stored(row, size=12_345_678)])
    done = await service.get(run.id)
    assert done.status == Status.SUCCEEDED and done.output_json is None
    assert (done.output_key, done.output_content_type, done.output_bytes) == (
        f"outputs/{row.id}",
        "application/octet-stream",
        12_345_678,
    )


async def test_for_each_over_nested_runs_gathers_each_run_in_order(
    service: PredictionService, store: Store
) -> None:
    """Elements that are nested runs are counted as they end; the output is in order."""
    run = await start(service, "fan_nested", {"xs": [1, 2, 3]})
    await work(store)
    done = await service.get(run.id)
    assert done.status == Status.SUCCEEDED
    assert orjson.loads(done.output_json or "") == [7, 13, 19]  # 6x + 1


async def test_a_failed_element_fails_the_step_and_cancels_the_rest(
    service: PredictionService, store: Store
) -> None:
    """The first element to fail fails its step (naming it) and the run; the elements
    not yet run are canceled in the same transaction."""
    run = await start(service, "fan_fail", {"xs": [1, 2, 3]})
    (first,) = await store.claim("boom", 1, worker_id="w", lease_s=30, now=T0)
    await store.complete([outcome(first, MODELS["boom"], T0)])
    done = await service.get(run.id)
    assert (done.status, done.error_code) == (Status.FAILED, "model_error")
    assert f"element {first.item_index}" in (done.error_message or "")
    rows = await service.steps(run.id)
    others = {r.status for r in rows if r.item_index is not None and r.id != first.id}
    assert others == {Status.CANCELED}
    assert await work(store) == 0


async def test_for_each_over_too_many_items_fails_the_step(
    service: PredictionService, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A for_each over more items than a step may take fails it (too_many_items) before
    any element row is written."""
    monkeypatch.setattr(importlib.import_module("freight.pipelines.plan"), "MAX_FOR_EACH_ITEMS", 4)
    run = await start(service, "fan", {"xs": [1, 2, 3, 4, 5]})
    assert (run.status, run.error_code) == (Status.FAILED, "too_many_items")
    assert [r for r in await service.steps(run.id) if r.item_index is not None] == []


async def test_a_template_reading_into_a_stored_output_fails_the_step_clearly(
    service: PredictionService, store: Store
) -> None:
    """Reading a field inside an output kept as an object is an input_error naming the
    object, never a silent null handed to the next model."""
    run = await start(service, "peek", 1)
    (picture,) = await store.claim("hold", 1, worker_id="w", lease_s=30, now=T0)
    await store.complete([stored(picture)])
    done = await service.get(run.id)
    assert (done.status, done.error_code) == (Status.FAILED, "input_error")
    assert f"freight://outputs/{picture.id}" in (done.error_message or "")
    assert "'label'" in (done.error_message or "")


async def test_a_callers_value_shaped_like_a_reference_stays_plain_data(
    service: PredictionService, store: Store
) -> None:
    """A caller's JSON shaped like an object reference neither makes a step read that
    object nor is recorded as a reference in the run's output; freight's own is."""
    forged = {"object": "freight://outputs/someone-else", "content_type": "a/b", "bytes": 1}
    run = await start(service, "bundle", forged)
    (picture,) = await store.claim("hold", 1, worker_id="w", lease_s=30, now=T0)
    assert picture.input_key is None and orjson.loads(picture.input_json or "") == forged
    await store.complete([stored(picture)])
    done = await service.get(run.id)
    assert done.status == Status.SUCCEEDED and done.output_key is None
    assert orjson.loads(done.output_refs or "") == [f"outputs/{picture.id}"]
    assert orjson.loads(done.output_json or "")["echo"] == forged


async def test_a_retried_step_fails_twice_then_succeeds(
    service: PredictionService, store: Store
) -> None:
    """A step with retry: each failure covered queues it again, held back by its delay
    (interval_s, then doubled), the failed attempts kept; the third attempt succeeds and
    the run goes on to its end."""
    FLAKY["left"] = 2
    run = await start(service, "retrying", 1)
    assert await work(store, now=T0) == 1
    first = by_step(await service.steps(run.id))["first"]
    assert (first.status, first.not_before) == (Status.QUEUED, T0 + 5)
    assert await work(store, now=T0 + 4.9) == 0  # held back: not claimed before its delay
    assert await work(store, now=T0 + 5) == 1
    first = by_step(await service.steps(run.id))["first"]
    assert (first.status, first.not_before) == (Status.QUEUED, T0 + 5 + 10)
    assert await work(store, now=T0 + 15) == 2  # succeeds, then its dependant runs
    done = await service.get(run.id)
    assert (done.status, orjson.loads(done.output_json or "null")) == (Status.SUCCEEDED, 2)
    first = by_step(await service.steps(run.id))["first"]
    assert first.attempts == 3
    assert [(a.attempt, a.ended_at, a.why) for a in attempts_of(first.attempt_history)] == [
        (1, T0, "model_error"),
        (2, T0 + 5, "model_error"),
    ]


async def test_a_step_out_of_retries_or_not_covered_fails_the_run(
    service: PredictionService, store: Store
) -> None:
    """Retries stop at max_attempts (the run fails with the step's last error); a code
    that retry.on does not name fails the run at once."""
    FLAKY["left"] = 5
    run = await start(service, "retrying", 1)
    for at in (T0, T0 + 5, T0 + 15):
        assert await work(store, now=at) == 1
    done = await service.get(run.id)
    assert (done.status, done.error_code) == (Status.FAILED, "model_error")
    FLAKY["left"] = 1
    other = await start(service, "retry_timeouts", 1)
    assert await work(store, now=T0) == 1
    assert (await service.get(other.id)).status == Status.FAILED


class Hands:
    """This process's idle replicas as a test sees them: one per target in ``idle``,
    reserved by ``offer``, given what was claimed for it by ``take``."""

    def __init__(self, *idle: str, worker_id: str = "w1", lease_s: float = 30.0) -> None:
        self.idle = set(idle)
        self.worker_id, self.lease_s = worker_id, lease_s
        self.taken: dict[str, list[Prediction]] = {}

    def offer(self, target: str) -> Offer | None:
        if target not in self.idle:
            return None
        self.idle.discard(target)
        return Offer(target, 1, self.worker_id, self.lease_s, 0)

    def take(self, offer: Offer, rows: list[Prediction]) -> None:
        self.taken.setdefault(offer.target, []).extend(rows)


def held(row: Prediction, model: Model, worker_id: str = "w1") -> Completion:
    """The completion of a row by the replica it was handed to (``worker_id``)."""
    done = outcome(row, model, T0)
    done.worker_id = worker_id
    return done


async def test_ready_step_is_handed_to_an_idle_replica_in_its_transaction(
    service: PredictionService, store: Store
) -> None:
    """The step a run's advancement queues is claimed for an idle replica of its model in
    the same transaction (running, its lease and attempt taken); a target none waits for
    stays queued, for a claim."""
    hands = Hands("double", "inc")
    store.hand_off_to(hands)
    run = await start(service, "diamond", {"x": 3})
    (a,) = hands.taken["double"]
    row = await store.get(a.id)
    assert row is not None
    assert (row.status, row.worker_id, row.attempts) == (Status.RUNNING, "w1", 1)
    assert row.lease_expires_at is not None and row.lease_expires_at > time.time()
    await store.complete([held(row, MODELS["double"])])
    steps = by_step(await service.steps(run.id))
    # b (inc) went to the idle replica of inc; c (double): none idle any more, queued
    assert (steps["b"].status, steps["b"].worker_id) == (Status.RUNNING, "w1")
    assert [r.id for r in hands.taken["inc"]] == [steps["b"].id]
    assert steps["c"].status == Status.QUEUED
    (b,) = hands.taken["inc"]
    await store.complete([held(b, MODELS["inc"])])
    await work(store)
    done = await store.get(run.id)
    assert done is not None and done.status == Status.SUCCEEDED
    assert orjson.loads(done.output_json or "null") == {"sum": 19, "a": 6}


async def test_handed_off_step_of_a_dead_worker_runs_once_after_its_lease(
    service: PredictionService, store: Store
) -> None:
    """A worker that dies right after a hand-off leaves a running row with a lease: once
    it expires the reaper requeues it (an attempt spent, as for any claim), another
    worker runs it, the run succeeds, and the dead worker's late completion is refused."""
    hands = Hands("flaky", lease_s=2.0)
    store.hand_off_to(hands)
    run = await start(service, "retrying", 1)  # its step may take 3 attempts
    (a,) = hands.taken["flaky"]  # handed to w1, which dies before it runs anything
    store.hand_off_to(None)
    assert await store.claim("flaky", 8, worker_id="w2", lease_s=30, now=time.time()) == []
    after_lease = time.time() + 3
    reaped = await store.reap(now=after_lease, backoff_s=0)
    assert reaped.requeued == [a.id]
    (again,) = await store.claim("flaky", 8, worker_id="w2", lease_s=30, now=after_lease)
    assert (again.id, again.attempts) == (a.id, 2)
    assert await store.complete([held(a, MODELS["flaky"])]) == []  # w1's attempt 1
    assert await store.complete([held(again, MODELS["flaky"], "w2")]) == [a.id]
    await work(store)
    done = await store.get(run.id)
    assert done is not None and done.status == Status.SUCCEEDED
    assert orjson.loads(done.output_json or "null") == 2
    row = await store.get(a.id)
    assert row is not None
    assert (row.status, row.attempts, row.worker_id) == (Status.SUCCEEDED, 2, "w2")


async def test_claim_says_whether_rows_of_its_target_are_left(
    service: PredictionService, store: Store
) -> None:
    """A claim's rows say whether rows of the target were still queued after it: a worker
    that took the last one need not claim again until notified."""
    for x in (1, 2):
        await start(service, "diamond", {"x": x})
    first = await store.claim("double", 1, worker_id="w", lease_s=30, now=time.time())
    assert isinstance(first, Claimed) and len(first) == 1 and first.more
    last = await store.claim("double", 8, worker_id="w", lease_s=30, now=time.time())
    assert isinstance(last, Claimed) and len(last) == 1 and not last.more
    none = await store.claim("double", 8, worker_id="w", lease_s=30, now=time.time())
    assert isinstance(none, Claimed) and none == [] and not none.more
