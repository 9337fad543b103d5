"""Properties of runs over random DAGs with retries, catches and optional steps, on the
SQLite store (the one definition of the store's transactions; the SQL is shared).

Each example declares a random pipeline (steps depending on earlier ones; each step
optional, caught by a default or a handler step, retried or not) and gives each step
a fate (how many attempts fail before one succeeds). A fake worker runs it to the end,
moving the clock past every back-off. Then: the run ended; every step that ran found
each dependency finished in a state that lets the run go on; a handler ran only when
its step failed, and always then unless another failure ended the run first; no step
ran more attempts than it may; and the run's outcome agrees with its steps' (succeeded
exactly when no step's failure ends it).
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import freight.pipelines as fp
from freight.config import Settings
from freight.events import CompletionHub, WorkSignal
from freight.prediction import Completion, Prediction, Status
from freight.project import load_pipelines
from freight.service import CreateOptions, NewInput, PredictionService
from freight.storage.memory import MemoryStorage
from freight.store import Store, open_store
from tests.contract.test_store_runs import spec_of

T0 = 1_000_000.0
NEVER = 99  # a fate: every attempt fails


@st.composite
def dags(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, int]]:
    """A pipeline declaration and each step's fate (failing attempts before success)."""
    count = draw(st.integers(1, 6))
    steps: dict[str, Any] = {}
    fates: dict[str, int] = {}
    for i in range(count):
        name = f"s{i}"
        earlier = [f"s{j}" for j in range(i)]
        deps = draw(st.lists(st.sampled_from(earlier), unique=True, max_size=3)) if earlier else []
        step: dict[str, Any] = {"model": "m", "input": {d: f"$steps.{d}.output" for d in deps}}
        if not deps:
            step["input"] = "$input"
        on_failure = draw(st.sampled_from(["none", "optional", "default", "handler"]))
        if on_failure == "optional":
            step["optional"] = True
        elif on_failure == "default":
            step["default"] = {"stand_in": f"$steps.{name}.error.code"}
        elif on_failure == "handler":
            handler = f"h{i}"
            step["catch"] = [{"on": ["model_error"], "then": handler}]
            steps[handler] = {"model": "m", "input": {"error": f"$steps.{name}.error"}}
            fates[handler] = draw(st.sampled_from([0, 0, 1, NEVER]))
        attempts = draw(st.integers(1, 3))
        if attempts > 1:
            step["retry"] = {"max_attempts": attempts, "interval_s": 1}
        steps[name] = step
        fates[name] = draw(st.sampled_from([0, 0, 1, 2, NEVER]))
    return {"steps": steps, "output": {n: f"$steps.{n}.output" for n in steps}}, fates


@pytest.fixture
async def store(sqlite_url: str) -> AsyncIterator[Store]:
    s = open_store(sqlite_url)
    await s.open()
    yield s
    await s.close()


def _service(store: Store, pipeline: dict[str, Any], directory: Path) -> PredictionService:
    (directory / "freight.yaml").write_text(yaml.safe_dump({"pipelines": {"p": pipeline}}))
    config = Settings(project_dir=directory, state_dir=directory / "state")
    models = {"m": spec_of("m")}
    return PredictionService(
        config,
        models,
        store,
        MemoryStorage(),
        signal=WorkSignal(),
        hub=CompletionHub(),
        pipelines=load_pipelines(directory, models, config),
    )


async def _run_to_the_end(store: Store, fates: dict[str, int]) -> None:
    """Complete every queued step by its fate, moving the clock past back-offs."""
    left = dict(fates)
    now = T0
    for _ in range(40):
        rows = await store.claim("m", 64, worker_id="w", lease_s=30, now=now)
        for row in rows:
            step = row.step or ""
            done = Completion(
                id=row.id, attempt=row.attempts, worker_id="w", status=Status.SUCCEEDED,
                finished_at=now,
            )  # fmt: skip
            if left[step] > 0:
                left[step] -= 1
                done.status, done.error_code, done.error_message = (
                    Status.FAILED, "model_error", f"{step} failed",
                )  # fmt: skip
            else:
                done.output_json = orjson.dumps(step).decode()
            await store.complete([done])
        now += 1000.0


def _goes_on(row: Prediction, spec: dict[str, Any]) -> bool:
    """Whether a finished step's state lets its dependants run."""
    if row.status in (Status.SUCCEEDED, Status.SKIPPED):
        return True
    if row.status != Status.FAILED:
        return False
    return bool(spec.get("optional") or spec.get("default") is not None or spec.get("catch"))


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=dags())
async def test_every_run_ends_consistent_with_its_dependencies(
    store: Store, case: tuple[dict[str, Any], dict[str, int]]
) -> None:
    pipeline, fates = case
    with tempfile.TemporaryDirectory() as directory:
        service = _service(store, pipeline, Path(directory))
        run = await service.create("p", NewInput(json=1, has_json=True), CreateOptions())
        await _run_to_the_end(store, fates)
        run = await service.get(run.id)
        rows = {r.step or "": r for r in await service.steps(run.id)}
    spec = fp.parse_pipelines({"p": pipeline}, targets={"m"})["p"]
    steps = pipeline["steps"]
    assert run.status.terminal, f"the run did not end: {run.status}"
    handled = {c["then"]: s for s, raw in steps.items() for c in raw.get("catch", [])}
    for name, row in rows.items():
        raw = steps[name]
        allowed = raw.get("retry", {}).get("max_attempts", 1)
        assert row.attempts <= allowed, f"{name} ran {row.attempts} > {allowed} attempts"
        if row.attempts:  # it ran: each dependency finished, in a state that goes on
            for dep in spec.steps[name].needs:
                assert rows[dep].status.terminal, f"{name} ran before {dep} finished"
                if dep != handled.get(name):  # a handler runs on its step's failure
                    assert _goes_on(rows[dep], steps[dep]), f"{name} ran after {rows[dep]}"
            if row.status in (Status.SUCCEEDED, Status.FAILED):
                assert row.attempts == min(fates[name] + 1, allowed), name
        if name in handled:  # a handler runs only when its step failed, and then always
            owner = rows[handled[name]]  # unless another step ended the run first
            if row.attempts > 0:
                assert owner.status == Status.FAILED, (name, owner.status)
            elif owner.status == Status.FAILED:
                assert (row.status, run.status) == (Status.CANCELED, Status.FAILED), name
    ending = [
        n
        for n, r in rows.items()
        if r.status in (Status.FAILED, Status.CANCELED) and not _goes_on(r, steps[n])
    ]
    if run.status == Status.SUCCEEDED:
        assert not ending, ending
        finished = (Status.SUCCEEDED, Status.SKIPPED, Status.FAILED)
        assert all(r.status in finished for r in rows.values())
    else:
        assert run.status == Status.FAILED
        failed_step = orjson.loads(run.error_detail or "{}").get("step")
        assert failed_step in rows and rows[failed_step].status == Status.FAILED
        assert not _goes_on(rows[failed_step], steps[failed_step])
