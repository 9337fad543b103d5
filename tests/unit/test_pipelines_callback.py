"""Callback steps' pure rules (``pipelines/callback.py``): their checks, tokens,
deadlines, the Mermaid shape, the waiting reason, the stream's ``step.waiting`` and
the SDK's reading of a callback URL."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from freight.client._flows import callback_url
from freight.errors import ConflictError, ForbiddenError, InvalidRequestError
from freight.pipelines import callback
from freight.pipelines.plan import mermaid
from freight.pipelines.spec import build_pipeline
from freight.pipelines.validate import check_pipelines
from freight.prediction import Kind, Prediction, Status
from freight.streams import history
from freight.waiting import Reason, reason
from tests.acceptance.conftest import run_cli
from tests.acceptance.test_pipeline_checks import env_for, project

KEY = callback.key_of(b"unit-secret")


def faults(step: dict[str, Any]) -> list[str]:
    raw = {"p": {"steps": {"a": {"model": "m"}, "wait": step}}}
    return [f.message for f in check_pipelines(raw, targets={"m"})]


def waiting_row(**fields: Any) -> Prediction:
    base = Prediction(
        id="0190aaaa-0000-7000-8000-000000000001",
        target=callback.TARGET,
        status=Status.RUNNING,
        created_at=100.0,
        kind=Kind.CALLBACK,
        started_at=100.0,
        attempts=1,
        timeout_s=600.0,
        lease_expires_at=160.0,
        run_id="0190aaaa-0000-7000-8000-000000000000",
        step="wait",
    )
    return dataclasses.replace(base, **fields)


# -- checks ----------------------------------------------------------------------------


def test_a_valid_callback_step_has_no_fault() -> None:
    schema = {"type": "object", "required": ["ok"]}
    assert faults({"kind": "callback", "timeout_s": 60, "heartbeat_s": 10, "schema": schema}) == []


@pytest.mark.parametrize(
    ("step", "named"),
    [
        ({"kind": "callback", "schema": {"type": "objekt"}}, "schema is not a valid JSON Schema"),
        ({"kind": "callback", "schema": {"minimum": "ten"}}, "at minimum"),
        ({"kind": "callback", "schema": ["not", "a", "schema"]}, "schema must be a JSON Schema"),
        ({"kind": "callback", "heartbeat_s": 0}, "heartbeat_s must be a number > 0"),
        ({"kind": "callback", "heartbeat_s": True}, "heartbeat_s must be a number > 0"),
        ({"kind": "callback", "for_each": "$input"}, "cannot have for_each"),
        ({"model": "m", "heartbeat_s": 5}, "heartbeat_s applies only to a kind: callback step"),
        ({"model": "m", "schema": {}}, "schema applies only to a kind: callback step"),
        ({"kind": "callback", "model": "m"}, "runs no model or pipeline"),
    ],
)
def test_each_fault_of_a_callback_step_is_named(step: dict[str, Any], named: str) -> None:
    found = faults(step)
    assert any(named in message and "step 'wait'" in message for message in found), found


def test_freight_check_refuses_an_invalid_schema_naming_it(tmp_path: Path) -> None:
    pipelines = {"review": {"steps": {"ask": {"kind": "callback", "schema": {"type": "objekt"}}}}}
    result = run_cli("check", str(project(tmp_path, pipelines)), env=env_for(tmp_path))
    assert result.returncode == 1, result.stdout + result.stderr
    shown = result.stdout + result.stderr
    assert "'review', step 'ask'" in shown and "schema is not a valid JSON Schema" in shown


# -- the answer ------------------------------------------------------------------------


def test_an_answer_is_checked_against_the_schema_naming_where_it_fails() -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    callback.check_answer(schema, {"ok": True}, "wait")
    callback.check_answer(None, "anything", "wait")
    with pytest.raises(InvalidRequestError) as invalid:
        callback.check_answer(schema, {"ok": 1}, "wait")
    assert (invalid.value.code, invalid.value.detail["path"]) == ("answer_invalid", "/ok")
    with pytest.raises(InvalidRequestError) as missing:
        callback.check_answer(schema, {}, "wait")
    assert "'ok' is a required property" in missing.value.message


def test_a_failure_names_its_error_and_cause() -> None:
    assert callback.failure_of({"error": "E", "cause": "C"}) == ("E", "C")
    assert callback.failure_of(None) == ("", "")
    answer = callback.Answer.failure("Rejected", "blurry")
    assert answer.error_code == "callback_failed"
    assert answer.error_message == "the callback answered failure: Rejected: blurry"
    for bad in ({"error": 3}, {"other": "x"}, ["E"], {"error": "x" * 257}):
        with pytest.raises(InvalidRequestError) as refused:
            callback.failure_of(bad)
        assert refused.value.code == "invalid_failure"


# -- tokens and deadlines --------------------------------------------------------------


def test_a_token_names_one_wait_and_only_its_signature_makes_it() -> None:
    row = waiting_row()
    token = callback.token_of(KEY, callback.Claim.of(row))
    claim = callback.verify(KEY, token)
    assert claim == callback.Claim.of(row) and claim.names(row)
    assert callback.refusal(row, claim, now=150.0) is None
    tampered = [
        token[:-1] + ("A" if token[-1] != "A" else "B"),
        token.replace(".1.", ".2."),
        callback.token_of(b"another key", claim),
        "a.b.c",
        "",
    ]
    for bad in tampered:
        with pytest.raises(ForbiddenError) as refused:
            callback.verify(KEY, bad)
        assert refused.value.code == "invalid_callback_token"


@pytest.mark.parametrize(
    ("row", "code"),
    [
        (waiting_row(status=Status.SUCCEEDED), "callback_closed"),
        (waiting_row(lease_expires_at=140.0), "callback_closed"),  # past its deadline
        (waiting_row(attempts=2, started_at=170.0), "callback_superseded"),  # retried
        (waiting_row(started_at=180.0), "callback_superseded"),  # redriven: attempt 1 again
    ],
)
def test_a_wait_that_is_over_refuses_its_token(row: Prediction, code: str) -> None:
    claim = callback.Claim.of(waiting_row())
    refused = callback.refusal(row, claim, now=150.0)
    assert isinstance(refused, ConflictError) and refused.code == code
    assert claim.text not in refused.message


def test_the_deadline_is_the_earlier_of_timeout_and_heartbeat() -> None:
    assert callback.deadline(100.0, 600.0, None, 100.0) == 700.0
    assert callback.deadline(100.0, 600.0, 60.0, 100.0) == 160.0
    assert callback.deadline(100.0, 600.0, 60.0, 680.0) == 700.0  # never past the timeout
    assert callback.timeout_message(waiting_row()) == "no heartbeat within its heartbeat_s"
    assert "timeout_s" in callback.timeout_message(waiting_row(lease_expires_at=700.0))


def test_a_waiting_event_names_its_wait() -> None:
    row = waiting_row()
    root = waiting_row(
        id=row.run_id or "",
        kind=Kind.PIPELINE,
        run_id=None,
        attempts=0,  # a run's: its started event's seq is 0 (a redrive adds one)
        notify='[{"url": "http://a", "events": ["completed"]}, {"sink": "s", "events": '
        '["waiting", "completed"]}]',
    )
    (announced,) = callback.announcements(root, [row], now=150.0)
    assert (announced["subscription"], announced["seq"]) == (1, 0)
    assert callback.claim_of_event(announced["event_id"]) == callback.Claim.of(row)
    assert callback.claim_of_event(f"{root.id}:completed:0") is None


# -- how it shows ----------------------------------------------------------------------


def test_the_graph_draws_a_callback_step_as_a_flag_with_its_bounds() -> None:
    raw = yaml.safe_load(
        (Path(__file__).parents[1] / "callback_project" / "freight.yaml").read_text()
    )
    graph = mermaid(build_pipeline("review", raw["pipelines"]["review"]))
    assert (
        's1>"approve<br/>callback: waits for an answer<br/>timeout 600s, heartbeat 300s"]' in graph
    )


def test_a_waiting_callback_step_says_why_it_waits() -> None:
    found = reason(waiting_row(), (), now=130.0)
    assert found is not None and found.reason == Reason.AWAITING_CALLBACK
    assert "30 s left" in found.message
    assert reason(waiting_row(status=Status.SUCCEEDED), (), now=130.0) is None


def test_a_runs_stream_names_a_callback_steps_wait_step_waiting() -> None:
    run = waiting_row(id="run", kind=Kind.PIPELINE, run_id=None, step=None, target="review")
    step = waiting_row(queued_at=100.0)
    types = [t.type for t in history(run, [step])]
    assert "step.waiting" in types and "step.running" not in types


def test_freight_status_shows_how_to_answer_a_waiting_step() -> None:
    from rich.console import Console

    from freight.cli._render import steps_table
    from freight.client import StepInfo

    url = "http://api.test/v1/callbacks/tok.1.2.sig/success"
    step = StepInfo.model_validate(
        {
            "status": "running",
            "prediction_id": "p1",
            "target": callback.TARGET,
            "kind": "callback",
            "waiting_reason": "awaiting_callback",
            "callback": {"prediction_id": "p1", "urls": {"success": url}},
        }
    )
    console = Console(width=200, record=True)
    console.print(steps_table({"approve": step}))
    assert f"awaiting its callback: freight callback succeed {url} OUTPUT" in console.export_text()


def test_the_sdk_finds_the_answer_url_from_any_of_the_three_or_the_token() -> None:
    url = "https://api.test/v1/callbacks/tok.1.2.sig/success"
    assert callback_url(url, "heartbeat") == "https://api.test/v1/callbacks/tok.1.2.sig/heartbeat"
    assert callback_url("tok.1.2.sig", "failure") == "/v1/callbacks/tok.1.2.sig/failure"
    for bad in ("", "https://elsewhere.test/other"):
        with pytest.raises(ValueError):
            callback_url(bad, "success")
