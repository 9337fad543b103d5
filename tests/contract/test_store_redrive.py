"""Redriving a pipeline run on every store backend (``ops.redrive``): the steps that
succeeded are kept, the others run again, in one transaction that advances the run.

A fake worker claims queued steps and completes them as a model would (counting
each model's calls), through the same store methods the agent uses.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from freight.access import Principal
from freight.config import Settings
from freight.errors import ConflictError, NotFoundError
from freight.events import CompletionHub, WorkSignal
from freight.prediction import Prediction, Status
from freight.project import load_pipelines
from freight.service import PredictionService
from freight.storage.memory import MemoryStorage
from freight.store import Store
from tests.contract.test_store_runs import outcome, spec_of, start, store

T0 = 1_000_000.0
__all__ = ["store"]  # the store fixture, shared with the run tests
#: whether the fixable model was fixed; each model's calls
FIXED = {"yes": False}
CALLS: Counter[str] = Counter()


def _fixable(x: Any) -> Any:
    if not FIXED["yes"]:
        raise ValueError("not fixed yet")
    return x * 2


def _picky(x: Any) -> Any:
    if x == 3 and not FIXED["yes"]:
        raise ValueError("3 is not fixed yet")
    return x * 2


MODELS: dict[str, Callable[[Any], Any]] = {
    "a": lambda x: x + 1,
    "b": lambda x: x + 10,
    "c": _fixable,
    "d": lambda x: x + 100,
    "hold": lambda x: x,
    "picky": _picky,
}

PIPELINES = {
    "chain": {
        "timeout_s": 600,
        "steps": {
            "a": {"model": "a", "input": "$input"},
            "b": {"model": "b", "input": "$steps.a.output"},
            "c": {"model": "c", "input": "$steps.b.output"},
            "d": {"model": "d", "input": "$steps.c.output"},
        },
        "output": "$steps.d.output",
    },
    "outer": {
        "steps": {
            "inner": {"pipeline": "chain", "input": "$input"},
            "after": {"model": "a", "input": "$steps.inner.output"},
        },
        "output": "$steps.after.output",
    },
    "fan": {
        "steps": {"each": {"model": "picky", "for_each": "$input", "input": "$item"}},
        "output": "$steps.each.output",
    },
    "fan_nested": {
        "steps": {"each": {"pipeline": "chain", "for_each": "$input", "input": "$item"}},
        "output": "$steps.each.output",
    },
}


@pytest.fixture
def service(tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch) -> PredictionService:
    for name in list(os.environ):
        if name.startswith("FREIGHT_"):
            monkeypatch.delenv(name)
    FIXED["yes"] = False
    CALLS.clear()
    (tmp_path / "freight.yaml").write_text(yaml.safe_dump({"pipelines": PIPELINES}))
    settings = Settings(project_dir=tmp_path, state_dir=tmp_path / "state")
    models = {name: spec_of(name) for name in MODELS}
    return PredictionService(
        settings,
        models,
        store,
        MemoryStorage(),
        signal=WorkSignal(),
        hub=CompletionHub(),
        pipelines=load_pipelines(tmp_path, models, settings),
    )


async def work(store: Store, *, skip: frozenset[str] = frozenset(), now: float = T0) -> None:
    """Claim and complete queued steps as the models would, until none is left."""
    while True:
        done = 0
        for target, model in MODELS.items():
            if target in skip:
                continue
            for row in await store.claim(target, 8, worker_id="w", lease_s=30, now=now):
                CALLS[target] += 1
                await store.complete([outcome(row, model, now)])
                done += 1
        if not done:
            return


async def heads(service: PredictionService, run_id: str) -> dict[str, Prediction]:
    return {r.step or "": r for r in await service.steps(run_id) if r.item_index is None}


async def test_a_run_failed_at_c_runs_c_and_d_only(
    service: PredictionService, store: Store
) -> None:
    """A->B->C->D failed at C, redriven once the model is fixed: A and B keep their
    outputs and are not run again, C is queued, D waits; the run ends succeeded."""
    run = await start(service, "chain", 1)
    await work(store)
    failed = await service.get(run.id)
    assert (failed.status, orjson.loads(failed.error_detail or "{}")) == (
        Status.FAILED,
        {"step": "c"},
    )
    before = await heads(service, run.id)
    assert before["d"].status == Status.CANCELED
    FIXED["yes"] = True
    redriven = await service.redrive(run.id)
    assert (redriven.status, redriven.redrives, redriven.error_code) == (Status.RUNNING, 1, None)
    assert redriven.finished_at is None and redriven.output_json is None
    assert redriven.lease_expires_at is not None and redriven.lease_expires_at > T0 + 600
    after = await heads(service, run.id)
    assert after["a"] == before["a"] and after["b"] == before["b"]  # untouched
    assert (after["c"].status, after["c"].attempts, after["c"].error_code) == (
        Status.QUEUED,
        0,
        None,
    )
    assert (after["d"].status, after["d"].waiting_on) == (Status.PENDING, 1)
    await work(store)
    done = await service.get(run.id)
    assert (done.status, orjson.loads(done.output_json or "")) == (Status.SUCCEEDED, 124)
    assert dict(CALLS) == {"a": 1, "b": 1, "c": 2, "d": 1}
    assert done.redrives == 1


async def test_a_canceled_run_runs_what_it_had_not_finished(
    service: PredictionService, store: Store
) -> None:
    """A run canceled after A: B (canceled while queued), C and D run after a redrive."""
    FIXED["yes"] = True
    run = await start(service, "chain", 1)
    await work(store, skip=frozenset({"b"}))
    canceled = await service.cancel(run.id)
    assert canceled.status == Status.CANCELED
    redriven = await service.redrive(run.id)
    assert redriven.status == Status.RUNNING
    steps = await heads(service, run.id)
    assert [steps[n].status for n in "abcd"] == [
        Status.SUCCEEDED,
        Status.QUEUED,
        Status.PENDING,
        Status.PENDING,
    ]
    await work(store)
    assert (await service.get(run.id)).status == Status.SUCCEEDED
    assert dict(CALLS) == {"a": 1, "b": 1, "c": 1, "d": 1}


async def test_each_redrive_is_counted(service: PredictionService, store: Store) -> None:
    """A run redriven while its model is still broken fails again; a second redrive
    counts 2; C's attempts start afresh each time."""
    run = await start(service, "chain", 1)
    await work(store)
    await service.redrive(run.id)
    await work(store)
    again = await service.get(run.id)
    assert (again.status, again.redrives) == (Status.FAILED, 1)
    FIXED["yes"] = True
    assert (await service.redrive(run.id)).redrives == 2
    assert (await heads(service, run.id))["c"].attempts == 0
    await work(store)
    assert (await service.get(run.id)).status == Status.SUCCEEDED
    assert dict(CALLS) == {"a": 1, "b": 1, "c": 3, "d": 1}


async def test_only_a_failed_or_canceled_top_level_run_is_redriven(
    service: PredictionService, store: Store
) -> None:
    """A running or succeeded run, a step, a nested run and a model's prediction are
    refused (409 invalid_state); an unknown id is not found."""
    run = await start(service, "chain", 1)
    with pytest.raises(ConflictError) as running:
        await service.redrive(run.id)
    assert (running.value.code, running.value.detail["status"]) == ("invalid_state", "running")
    step = (await heads(service, run.id))["a"]
    with pytest.raises(ConflictError, match="kind model"):
        await service.redrive(step.id)
    FIXED["yes"] = True
    await work(store)
    with pytest.raises(ConflictError, match="succeeded"):
        await service.redrive(run.id)
    FIXED["yes"] = False
    outer = await start(service, "outer", 1)
    await work(store)
    inner = (await heads(service, outer.id))["inner"]
    assert inner.status == Status.FAILED
    with pytest.raises(ConflictError, match="step of run"):
        await service.redrive(inner.id)
    with pytest.raises(NotFoundError):
        await service.redrive("no-such-id")


async def test_another_tenants_run_answers_as_unknown(
    service: PredictionService, store: Store
) -> None:
    """Redriving another tenant's failed run is not found, and changes nothing."""
    run = await start(service, "chain", 1)
    await work(store)
    with pytest.raises(NotFoundError) as unknown:
        await service.redrive(run.id, Principal(tenant="other"))
    assert unknown.value.code == "prediction_not_found"
    still = await service.get(run.id)
    assert (still.status, still.redrives) == (Status.FAILED, 0)


async def test_a_nested_run_that_failed_is_redriven_in_place(
    service: PredictionService, store: Store
) -> None:
    """The failed nested run is restarted (counted), its own A and B kept; its parent's
    next step runs once it succeeded."""
    outer = await start(service, "outer", 1)
    await work(store)
    assert (await service.get(outer.id)).status == Status.FAILED
    inner = (await heads(service, outer.id))["inner"]
    FIXED["yes"] = True
    await service.redrive(outer.id)
    restarted = await service.get(inner.id)
    assert (restarted.status, restarted.redrives) == (Status.RUNNING, 1)
    await work(store)
    done = await service.get(outer.id)
    assert (done.status, orjson.loads(done.output_json or "")) == (Status.SUCCEEDED, 125)
    assert dict(CALLS) == {"a": 2, "b": 1, "c": 2, "d": 1}


async def test_a_for_each_step_keeps_its_elements_that_succeeded(
    service: PredictionService, store: Store
) -> None:
    """Elements 1 and 2 succeeded, 3 failed, 4 was canceled: after a redrive only 3 and
    4 run; the output gathers all four in order."""
    run = await start(service, "fan", [1, 2, 3, 4])
    await work(store)
    assert (await service.get(run.id)).status == Status.FAILED
    FIXED["yes"] = True
    await service.redrive(run.id)
    await work(store)
    done = await service.get(run.id)
    assert (done.status, orjson.loads(done.output_json or "")) == (Status.SUCCEEDED, [2, 4, 6, 8])
    assert CALLS["picky"] == 4 + 2


async def test_a_for_each_over_nested_runs_redrives_the_failed_ones(
    service: PredictionService, store: Store
) -> None:
    """Each element is a nested run failed at C: redriven, each runs C and D only."""
    run = await start(service, "fan_nested", [1, 2])
    await work(store)
    assert (await service.get(run.id)).status == Status.FAILED
    FIXED["yes"] = True
    await service.redrive(run.id)
    await work(store)
    done = await service.get(run.id)
    assert (done.status, orjson.loads(done.output_json or "")) == (Status.SUCCEEDED, [124, 126])
    assert (CALLS["a"], CALLS["b"], CALLS["d"]) == (2, 2, 2)
