"""Catching a step's failure, tolerating failed elements and retrying elements, on every
store backend: the run goes on (or ends) in the transactions the agent's calls make.

A fake worker claims queued steps and completes them as a model would, through the
same store methods the agent uses.
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

from freight.config import Settings
from freight.events import CompletionHub, WorkSignal
from freight.prediction import Prediction, Status, attempts_of
from freight.project import load_pipelines
from freight.service import PredictionService
from freight.storage.memory import MemoryStorage
from freight.store import Store
from tests.contract.test_store_runs import outcome, spec_of, start, store

T0 = 1_000_000.0
__all__ = ["store"]  # the store fixture, shared with the run tests
CALLS: Counter[str] = Counter()
#: per input value, how many more calls of the flaky model fail on it
FAILS: dict[int, int] = {}


def _boom(x: Any) -> Any:
    raise ValueError(f"cannot take {x}")


def _flaky(x: Any) -> Any:
    if FAILS.get(x, 0) > 0:
        FAILS[x] -= 1
        raise ValueError(f"not yet {x}")
    return x * 10


MODELS: dict[str, Callable[[Any], Any]] = {
    "boom": _boom,
    "echo": lambda x: x,
    "inc": lambda x: x + 1,
    "flaky": _flaky,
}

PIPELINES = {
    "handled": {
        "steps": {
            "a": {"model": "boom", "catch": [{"on": ["model_error"], "then": "rescue"}]},
            "rescue": {"model": "echo", "input": {"why": "$steps.a.error.code", "x": "$input"}},
            "b": {"model": "echo", "input": {"from_a": "$steps.a.output"}},
        },
        "output": "$steps.b.output",
    },
    "defaulted": {
        "steps": {
            "a": {"model": "boom", "default": {"label": "unknown", "why": "$steps.a.error.code"}},
            "b": {"model": "echo", "input": "$steps.a.output"},
        },
        "output": "$steps.b.output",
    },
    "uncovered": {
        "steps": {
            "a": {"model": "boom", "catch": [{"on": ["timeout"], "default": 0}]},
            "b": {"model": "echo", "input": "$steps.a.output"},
        },
    },
    "inner": {"steps": {"x": {"model": "boom"}}},
    "nested": {
        "steps": {
            "sub": {"pipeline": "inner", "default": "fallback"},
            "after": {"model": "echo", "input": "$steps.sub.output"},
        },
        "output": "$steps.after.output",
    },
    "tolerant": {
        "steps": {
            "each": {
                "model": "flaky",
                "for_each": "$input",
                "input": "$item",
                "tolerate": {"count": 1},
                "max_concurrency": 2,
            },
        },
        "output": "$steps.each.output",
    },
    "tolerant_share": {
        "steps": {
            "each": {
                "model": "flaky",
                "for_each": "$input",
                "input": "$item",
                "tolerate": {"percent": 50},
            },
        },
        "output": "$steps.each.output",
    },
    "fan_retry": {
        "steps": {
            "each": {
                "model": "flaky",
                "for_each": "$input",
                "input": "$item",
                "retry": {"max_attempts": 3, "interval_s": 5},
            },
        },
        "output": "$steps.each.output",
    },
}


@pytest.fixture
def service(tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch) -> PredictionService:
    for name in list(os.environ):
        if name.startswith("FREIGHT_"):
            monkeypatch.delenv(name)
    CALLS.clear()
    FAILS.clear()
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


async def work(store: Store, *, now: float = T0) -> int:
    """Claim and complete queued steps as the models would, until none is left."""
    ran = 0
    while True:
        done = 0
        for target, model in MODELS.items():
            for row in await store.claim(target, 8, worker_id="w", lease_s=30, now=now):
                CALLS[target] += 1
                await store.complete([outcome(row, model, now)])
                done += 1
        if not done:
            return ran
        ran += done


async def heads(service: PredictionService, run_id: str) -> dict[str, Prediction]:
    return {r.step or "": r for r in await service.steps(run_id) if r.item_index is None}


def output(row: Prediction) -> Any:
    return orjson.loads(row.output_json or "null")


async def test_a_handler_takes_the_error_and_stands_in(
    service: PredictionService, store: Store
) -> None:
    """a fails: its handler runs with the error, b reads the handler's output as a's;
    a stays failed for all to see, and the run succeeds."""
    run = await start(service, "handled", 5)
    await work(store)
    done = await service.get(run.id)
    assert done.status == Status.SUCCEEDED, done.error_message
    assert output(done) == {"from_a": {"why": "model_error", "x": 5}}
    steps = await heads(service, run.id)
    assert (steps["a"].status, steps["a"].error_code) == (Status.FAILED, "model_error")
    assert steps["rescue"].status == Status.SUCCEEDED
    assert dict(CALLS) == {"boom": 1, "echo": 2}


async def test_a_default_stands_in_with_the_error_readable(
    service: PredictionService, store: Store
) -> None:
    """default: the failed step's output is the rendered default; the run goes on."""
    run = await start(service, "defaulted", 1)
    await work(store)
    done = await service.get(run.id)
    assert (done.status, output(done)) == (
        Status.SUCCEEDED,
        {"label": "unknown", "why": "model_error"},
    )


async def test_an_uncovered_code_fails_the_run(service: PredictionService, store: Store) -> None:
    """A catch that does not cover the code catches nothing: the run fails at a."""
    run = await start(service, "uncovered", 1)
    await work(store)
    done = await service.get(run.id)
    assert (done.status, orjson.loads(done.error_detail or "{}")) == (Status.FAILED, {"step": "a"})
    assert (await heads(service, run.id))["b"].status == Status.CANCELED


async def test_a_failed_nested_run_is_caught(service: PredictionService, store: Store) -> None:
    """A nested pipeline step that fails is caught like a model step."""
    run = await start(service, "nested", 1)
    await work(store)
    done = await service.get(run.id)
    assert (done.status, output(done)) == (Status.SUCCEEDED, "fallback")
    assert (await heads(service, run.id))["sub"].status == Status.FAILED


async def test_a_tolerated_failure_is_marked_in_the_gathered_output(
    service: PredictionService, store: Store
) -> None:
    """One failed element of three, one tolerated: the step succeeds once all finished,
    the failed element's place marked with its error, the count on the step's row."""
    FAILS[2] = 1
    run = await start(service, "tolerant", [1, 2, 3])
    await work(store)
    done = await service.get(run.id)
    assert done.status == Status.SUCCEEDED, done.error_message
    assert output(done) == [
        10,
        {"error": {"code": "model_error", "message": "not yet 2"}},
        30,
    ]
    each = (await heads(service, run.id))["each"]
    assert orjson.loads(each.error_detail or "{}") == {"items": 3, "failed_items": 1}


async def test_one_failure_past_the_tolerance_fails_the_step(
    service: PredictionService, store: Store
) -> None:
    """A second failed element (one tolerated) fails the step and cancels what is left."""
    FAILS.update({1: 1, 2: 1})
    run = await start(service, "tolerant", [1, 2, 3, 4])
    await work(store)
    done = await service.get(run.id)
    assert (done.status, done.error_code) == (Status.FAILED, "model_error")
    assert "2 of 4 elements failed, more than tolerated (1)" in (done.error_message or "")
    rows = [r for r in await service.steps(run.id) if r.item_index is not None]
    assert {r.status for r in rows if r.item_index in (2, 3)} == {Status.CANCELED}


async def test_a_share_of_failures_is_tolerated(service: PredictionService, store: Store) -> None:
    """percent: 50 lets two of four fail, not three."""
    FAILS.update({1: 1, 2: 1})
    run = await start(service, "tolerant_share", [1, 2, 3, 4])
    await work(store)
    assert (await service.get(run.id)).status == Status.SUCCEEDED
    FAILS.update({1: 1, 2: 1, 3: 1})
    run = await start(service, "tolerant_share", [1, 2, 3, 4])
    await work(store)
    assert (await service.get(run.id)).status == Status.FAILED


async def test_a_failed_element_is_retried_alone(service: PredictionService, store: Store) -> None:
    """retry: on a for_each step retries each failed element after its delay; the others
    are not run again, and the step gathers every element in order."""
    FAILS[2] = 2
    run = await start(service, "fan_retry", [1, 2, 3])
    await work(store, now=T0)
    assert (await service.get(run.id)).status == Status.RUNNING
    await work(store, now=T0 + 5)
    await work(store, now=T0 + 15)
    done = await service.get(run.id)
    assert (done.status, output(done)) == (Status.SUCCEEDED, [10, 20, 30])
    assert CALLS["flaky"] == 5
    second = next(r for r in await service.steps(run.id) if r.item_index == 1)
    assert second.attempts == 3
    assert [a.why for a in attempts_of(second.attempt_history)] == ["model_error"] * 2
