"""Callback steps on every store backend (``ops.answer_callback``, ``heartbeat_callback``,
the ``CALLBACK_TIMEOUT`` sweep, the waiting event in the run's outbox).

A run reaches a callback step: the step's row waits (running, claimed by no worker,
its deadline its lease) until the callback service answers it with the step's token;
a fake worker runs the model steps through the same store methods the agent uses.
The store's clock is passed (``now=``); the service answers at the real time, so a
timeout is reached by reaping at a later ``now``, never by sleeping.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from freight.callbacks import CallbackService
from freight.config import Settings
from freight.errors import ConflictError, ForbiddenError, InvalidRequestError
from freight.events import CompletionHub, WorkSignal
from freight.pipelines import callback
from freight.prediction import Kind, Prediction, Status, attempts_of
from freight.project import load_pipelines
from freight.service import CreateOptions, NewInput, PredictionService
from freight.storage.memory import MemoryStorage
from freight.store import Store
from tests.contract.test_store_runs import MODELS, by_step, outcome, spec_of, store

__all__ = ["store"]  # the store fixture, shared with the run tests

SECRET = b"contract-secret"
APPROVAL = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}, "note": {"type": "string"}},
    "required": ["ok"],
}
PIPELINES = {
    "review": {
        "steps": {
            "draft": {"model": "inc", "input": "$input.x"},
            "approve": {
                "kind": "callback",
                "input": {"draft": "$steps.draft.output", "asked": "$input.who"},
                "timeout_s": 600,
                "heartbeat_s": 60,
                "schema": APPROVAL,
            },
            "publish": {
                "model": "double",
                "input": "$steps.draft.output",
                "when": "steps.approve.output.ok",
            },
        },
        "output": {"approval": "$steps.approve.output", "published": "$steps.publish.output"},
    },
    "asked_twice": {
        "steps": {
            "ask": {
                "kind": "callback",
                "timeout_s": 30,
                "retry": {"on": ["timeout", "callback_failed"], "max_attempts": 2},
            },
        },
        "output": "$steps.ask.output",
    },
    "nested_ask": {
        "steps": {"inner": {"pipeline": "asked_twice", "input": "$input"}},
        "output": "$steps.inner.output",
    },
}
HOOK = [{"url": "http://receiver.test/a", "events": ["waiting", "completed"]}]


@pytest.fixture
def service(tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch) -> PredictionService:
    for name in list(os.environ):
        if name.startswith("FREIGHT_"):
            monkeypatch.delenv(name)
    (tmp_path / "freight.yaml").write_text(yaml.safe_dump({"pipelines": PIPELINES}))
    settings = Settings(
        project_dir=tmp_path, state_dir=tmp_path / "state", secret_key=SECRET.decode()
    )
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


@pytest.fixture
def callbacks(store: Store) -> CallbackService:
    return CallbackService(store, secret=SECRET)


async def work(store: Store) -> int:
    """Run the queued model steps (at the real time: the callbacks' clock)."""
    ran = 0
    while True:
        done = 0
        for target, model in MODELS.items():
            now = time.time()
            for row in await store.claim(target, 8, worker_id="w", lease_s=30, now=now):
                await store.complete([outcome(row, model, now)])
                done += 1
        if not done:
            return ran
        ran += done


async def start(service: PredictionService, target: str, value: Any) -> Prediction:
    options = CreateOptions(notify=orjson.dumps(HOOK).decode())
    return await service.create(target, NewInput(json=value, has_json=True), options)


async def waiting(service: PredictionService, run: Prediction, step: str) -> Prediction:
    row = by_step(await service.steps(run.id))[step]
    assert (row.kind, row.status) == (Kind.CALLBACK, Status.RUNNING), row
    return row


def token(row: Prediction) -> str:
    return callback.token_of(callback.key_of(SECRET), callback.Claim.of(row))


async def test_a_reached_callback_step_waits_holding_nothing_and_is_announced(
    service: PredictionService, store: Store
) -> None:
    """The step waits: running, its input rendered, attempt 1, its deadline the earlier
    of timeout_s and heartbeat_s; no worker can claim it; one waiting event per
    subscription that asked for it, in the run's outbox; GET shows the answer URLs."""
    run = await start(service, "review", {"x": 1, "who": "ana"})
    assert await work(store) == 1
    row = await waiting(service, run, "approve")
    assert orjson.loads(row.input_json or "null") == {"draft": 2, "asked": "ana"}
    assert row.attempts == 1 and row.worker_id is None
    assert row.lease_expires_at == pytest.approx((row.started_at or 0) + 60)
    assert await store.claim(callback.TARGET, 8, worker_id="w", lease_s=30, now=time.time()) == []
    outbox, _ = await store.deliveries(run.id)
    waits = [o for o in outbox if o.event_type == "waiting"]
    assert [o.event_id for o in waits] == [f"{run.id}:waiting:{callback.Claim.of(row).text}"]
    body = await service.view(await service.get(run.id), lambda path: "https://api.test" + path)
    shown = body["steps"]["approve"]["callback"]
    assert shown["urls"]["success"] == f"https://api.test/v1/callbacks/{token(row)}/success"
    assert (shown["step"], shown["attempt"]) == ("approve", 1)
    assert body["steps"]["approve"]["waiting_reason"] == "awaiting_callback"


async def test_an_answered_success_is_the_steps_output_and_the_run_goes_on(
    service: PredictionService, store: Store, callbacks: CallbackService
) -> None:
    run = await start(service, "review", {"x": 1, "who": "ana"})
    await work(store)
    row = await waiting(service, run, "approve")
    answered = await callbacks.succeed(token(row), {"ok": True, "note": "fine"})
    assert answered.status == Status.SUCCEEDED
    assert by_step(await service.steps(run.id))["publish"].status == Status.QUEUED
    assert await work(store) == 1
    done = await service.get(run.id)
    assert done.status == Status.SUCCEEDED
    output = orjson.loads(done.output_json or "null")
    assert output == {"approval": {"ok": True, "note": "fine"}, "published": 4}


async def test_a_reused_or_forged_token_is_refused_and_changes_nothing(
    service: PredictionService, store: Store, callbacks: CallbackService
) -> None:
    """A token answered already: 409 callback_closed (heartbeat too); one not signed by
    this server, or malformed: 403 invalid_callback_token."""
    run = await start(service, "review", {"x": 1, "who": "ana"})
    await work(store)
    row = await waiting(service, run, "approve")
    good = token(row)
    await callbacks.succeed(good, {"ok": False})
    for answer in (callbacks.succeed(good, {"ok": True}), callbacks.heartbeat(good)):
        with pytest.raises(ConflictError) as closed:
            await answer
        assert closed.value.code == "callback_closed"
    forged = callback.token_of(b"another key", callback.Claim.of(row))
    for bad in (forged, "nonsense", good[:-2] + "xx", good.replace(".1.", ".2.")):
        with pytest.raises(ForbiddenError) as refused:
            callbacks.verify(bad)
        assert refused.value.code == "invalid_callback_token"
    approve = by_step(await service.steps(run.id))["approve"]
    assert orjson.loads(approve.output_json or "null") == {"ok": False}
    assert by_step(await service.steps(run.id))["publish"].status == Status.SKIPPED


async def test_an_answer_that_fails_the_schema_is_refused_and_changes_nothing(
    service: PredictionService, store: Store, callbacks: CallbackService
) -> None:
    run = await start(service, "review", {"x": 1, "who": "ana"})
    await work(store)
    row = await waiting(service, run, "approve")
    with pytest.raises(InvalidRequestError) as invalid:
        await callbacks.succeed(token(row), {"ok": "yes"})
    assert invalid.value.code == "answer_invalid"
    assert invalid.value.detail["path"] == "/ok"
    still = await waiting(service, run, "approve")
    assert (still.attempts, still.output_json) == (1, None)
    assert (await callbacks.succeed(token(row), {"ok": True})).status == Status.SUCCEEDED


async def test_a_failure_fails_the_step_with_callback_failed_naming_error_and_cause(
    service: PredictionService, store: Store, callbacks: CallbackService
) -> None:
    run = await start(service, "review", {"x": 1, "who": "ana"})
    await work(store)
    row = await waiting(service, run, "approve")
    failed = await callbacks.fail(token(row), {"error": "Rejected", "cause": "blurry photo"})
    assert (failed.status, failed.error_code) == (Status.FAILED, "callback_failed")
    assert "Rejected" in (failed.error_message or "") and "blurry photo" in (
        failed.error_message or ""
    )
    assert orjson.loads(failed.error_detail or "{}") == {
        "error": "Rejected",
        "cause": "blurry photo",
    }
    done = await service.get(run.id)
    assert (done.status, done.error_code) == (Status.FAILED, "callback_failed")
    with pytest.raises(InvalidRequestError) as malformed:
        await callbacks.fail(token(row), {"error": 7})
    assert malformed.value.code == "invalid_failure"


async def test_a_heartbeat_moves_the_deadline_then_an_answer_succeeds(
    service: PredictionService, store: Store, callbacks: CallbackService
) -> None:
    """A heartbeat moves the deadline to now + heartbeat_s; without the next one in time
    the sweep fails the step with timeout (the heartbeat named)."""
    run = await start(service, "review", {"x": 1, "who": "ana"})
    await work(store)
    row = await waiting(service, run, "approve")
    before = row.lease_expires_at or 0
    beat = await callbacks.heartbeat(token(row))
    assert (beat.lease_expires_at or 0) > before - 1e-6
    assert (beat.lease_expires_at or 0) >= time.time() + 59
    reaped = await store.reap(now=(beat.lease_expires_at or 0) - 1)
    assert row.id not in reaped.failed  # not due before its new deadline
    answered = await callbacks.succeed(token(row), {"ok": True})
    assert answered.status == Status.SUCCEEDED

    other = await start(service, "review", {"x": 2, "who": "bo"})
    await work(store)
    silent = await waiting(service, other, "approve")
    reaped = await store.reap(now=(silent.lease_expires_at or 0) + 1)
    assert silent.id in reaped.failed
    timed_out = by_step(await service.steps(other.id))["approve"]
    assert (timed_out.status, timed_out.error_code) == (Status.FAILED, "timeout")
    assert "heartbeat_s" in (timed_out.error_message or "")
    assert (await service.get(other.id)).error_code == "timeout"


async def test_a_timed_out_wait_is_retried_under_a_new_token(
    service: PredictionService, store: Store, callbacks: CallbackService
) -> None:
    """retry on timeout: the step waits again at once, attempt 2, a new token (the old
    one: 409 callback_superseded), announced again; past the last attempt the run fails
    with timeout. A nested run's callback step is announced to the top-level run."""
    run = await start(service, "asked_twice", {"q": 1})
    first = await waiting(service, run, "ask")
    reaped = await store.reap(now=(first.lease_expires_at or 0) + 1)
    assert first.id in reaped.failed
    second = await waiting(service, run, "ask")
    assert second.attempts == 2
    assert [(a.attempt, a.why) for a in attempts_of(second.attempt_history)] == [(1, "timeout")]
    with pytest.raises(ConflictError) as superseded:
        await callbacks.succeed(token(first), {"late": True})
    assert superseded.value.code == "callback_superseded"
    outbox, _ = await store.deliveries(run.id)
    assert len([o for o in outbox if o.event_type == "waiting"]) == 2
    await store.reap(now=(second.lease_expires_at or 0) + 1)
    done = await service.get(run.id)
    assert (done.status, done.error_code) == (Status.FAILED, "timeout")

    outer = await start(service, "nested_ask", {"q": 2})
    inner = by_step(await service.steps(outer.id))["inner"]
    ask = await waiting(service, inner, "ask")
    outbox, _ = await store.deliveries(outer.id)
    assert [o.event_id.rpartition(":")[2] for o in outbox if o.event_type == "waiting"] == [
        callback.Claim.of(ask).text
    ]
    assert (await callbacks.succeed(token(ask), "yes")).status == Status.SUCCEEDED
    done = await service.get(outer.id)
    assert (done.status, orjson.loads(done.output_json or "null")) == (Status.SUCCEEDED, "yes")


async def test_a_redriven_run_waits_again_under_a_new_token(
    service: PredictionService, store: Store, callbacks: CallbackService
) -> None:
    """A run failed at a timed-out callback step, redriven: the step waits again (its
    attempts fresh, a new start: a new token; the old one superseded)."""
    run = await start(service, "review", {"x": 1, "who": "ana"})
    await work(store)
    row = await waiting(service, run, "approve")
    await store.reap(now=(row.lease_expires_at or 0) + 1)
    assert (await service.get(run.id)).status == Status.FAILED
    await service.redrive(run.id)
    again = await waiting(service, run, "approve")
    assert token(again) != token(row)
    with pytest.raises(ConflictError) as superseded:
        await callbacks.succeed(token(row), {"ok": True})
    assert superseded.value.code == "callback_superseded"
    await callbacks.succeed(token(again), {"ok": True})
    await work(store)
    assert (await service.get(run.id)).status == Status.SUCCEEDED
