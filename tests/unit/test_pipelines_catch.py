"""Catching a step's failure (``catch:`` and ``default:``): checked, then planned."""

from __future__ import annotations

from typing import Any

import pytest

import freight.pipelines as fp
from freight.errors import PipelineDefinitionError
from freight.pipelines import Decision, StepError, StepState, StepStatus
from freight.pipelines.plan import mermaid
from freight.prediction import Status

MODELS = {"echo", "m1", "m2", "fallback"}
S = StepStatus


def spec_of(steps: dict[str, Any], **extra: Any) -> fp.PipelineSpec:
    return fp.parse_pipelines({"p": {"steps": steps, **extra}}, targets=MODELS)["p"]


def faults(steps: dict[str, Any]) -> list[str]:
    try:
        spec_of(steps)
    except PipelineDefinitionError as exc:
        return list(exc.detail.get("faults") or [exc.message])
    return []


def done(output: Any = None) -> StepState:
    return StepState(S.SUCCEEDED, output=output)


def failed(code: str = "model_error", message: str = "boom") -> StepState:
    return StepState(S.FAILED, error=StepError(code, message))


def started(decision: Decision) -> dict[str, Any]:
    return {s.step: s.input for s in decision.start}


HANDLED = {
    "a": {"model": "m1", "catch": [{"on": ["model_error"], "then": "rescue"}]},
    "rescue": {"model": "fallback", "input": {"why": "$steps.a.error", "x": "$input"}},
    "b": {"model": "m2", "input": "$steps.a.output"},
}


def test_a_handler_runs_with_the_error_and_stands_in_for_its_step() -> None:
    """a fails with a covered code: the handler starts with a's error; b waits for the
    handler and reads its output as a's."""
    spec = spec_of(HANDLED)
    assert spec.steps["rescue"].needs == {"a"} and "rescue" in spec.steps["b"].needs
    states = {"a": failed(message="out of memory")}
    decision = fp.plan(spec, 7, states)
    assert started(decision) == {
        "rescue": {"why": {"code": "model_error", "message": "out of memory"}, "x": 7}
    }
    assert decision.outcome is None
    states["rescue"] = done({"guess": 1})
    decision = fp.plan(spec, 7, states)
    assert started(decision) == {"b": {"guess": 1}}
    states["b"] = done("fine")
    outcome = fp.plan(spec, 7, states).outcome
    assert outcome is not None and outcome.status == Status.SUCCEEDED
    assert outcome.output == {"a": {"guess": 1}, "rescue": {"guess": 1}, "b": "fine"}


def test_a_handler_is_skipped_when_its_step_succeeds() -> None:
    """No error handed over: the handler is skipped and b reads a's own output."""
    spec = spec_of(HANDLED)
    decision = fp.plan(spec, 7, {"a": done("own")})
    assert decision.skip == ("rescue",) and started(decision) == {"b": "own"}


def test_a_code_no_entry_covers_fails_the_run() -> None:
    """a fails with a code the catch does not cover: the run fails, the handler never
    runs."""
    decision = fp.plan(spec_of(HANDLED), 7, {"a": failed("timeout")})
    assert decision.outcome is not None and decision.outcome.status == Status.FAILED
    assert decision.outcome.failed_step == "a" and decision.start == ()
    assert set(decision.cancel) == {"rescue", "b"}


def test_a_failed_handler_fails_the_run_as_itself() -> None:
    """The handler is judged on its own: its failure fails the run, naming it."""
    states = {"a": failed(), "rescue": failed(message="also broken")}
    outcome = fp.plan(spec_of(HANDLED), 7, states).outcome
    assert outcome is not None and outcome.failed_step == "rescue"
    assert "also broken" in (outcome.error.message if outcome.error else "")


def test_a_default_stands_in_and_may_read_the_error() -> None:
    """default: the failed step's output is the rendered value; the run goes on."""
    spec = spec_of(
        {
            "a": {"model": "m1", "default": {"label": "unknown", "why": "$steps.a.error.code"}},
            "b": {"model": "m2", "input": "$steps.a.output"},
        }
    )
    decision = fp.plan(spec, 1, {"a": failed("timeout")})
    assert started(decision) == {"b": {"label": "unknown", "why": "timeout"}}


def test_entries_are_tried_in_order_and_default_comes_last() -> None:
    """The first entry covering the code wins; the step's default: catches the rest."""
    spec = spec_of(
        {
            "a": {
                "model": "m1",
                "catch": [
                    {"on": ["timeout"], "default": "slow"},
                    {"on": ["model_error", "timeout"], "default": "broken"},
                ],
                "default": "other",
            },
            "b": {"model": "m2", "input": "$steps.a.output"},
        }
    )
    for code, seen in (("timeout", "slow"), ("model_error", "broken"), ("input_error", "other")):
        assert started(fp.plan(spec, 1, {"a": failed(code)})) == {"b": seen}


def test_a_step_whose_input_cannot_render_is_caught_too() -> None:
    """A failure decided by the plan itself (its input template) is caught like any."""
    spec = spec_of(
        {
            "a": {"model": "m1", "input": "$input.n | length(@)", "default": 0},
            "b": {"model": "m2", "input": "$steps.a.output"},
        }
    )
    decision = fp.plan(spec, {"n": 5}, {})
    assert decision.fail["a"].code == "input_error" and decision.outcome is None
    assert started(decision) == {"b": 0}


def test_a_default_that_cannot_render_fails_the_run() -> None:
    """A default whose template fails leaves the step uncaught, saying both."""
    spec = spec_of({"a": {"model": "m1", "default": "$input.n | length(@)"}})
    decision = fp.plan(spec, {"n": 5}, {"a": failed(message="first")})
    assert decision.outcome is not None and decision.outcome.status == Status.FAILED
    assert decision.outcome.failed_step == "a"
    message = decision.outcome.error.message if decision.outcome.error else ""
    assert "first" in message and "its default" in message


def test_a_canceled_step_is_never_caught() -> None:
    """A cancellation ends the run even under a catch-all default."""
    spec = spec_of({"a": {"model": "m1", "default": 0}})
    canceled = StepState(S.CANCELED, error=StepError("canceled", "stop"))
    decision = fp.plan(spec, 1, {"a": canceled})
    assert decision.outcome is not None and decision.outcome.status == Status.FAILED


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        ({"a": {"model": "m1", "catch": "x"}}, "catch must be a list"),
        ({"a": {"model": "m1", "catch": [{"then": "a"}]}}, "cannot handle itself"),
        ({"a": {"model": "m1", "catch": [{"then": "zz"}]}}, "unknown step 'zz'"),
        ({"a": {"model": "m1", "catch": [{"on": ["model_error"]}]}}, "exactly one of then"),
        (
            {"a": {"model": "m1", "catch": [{"on": ["canceled"], "default": 1}]}},
            "cannot be caught",
        ),
        ({"a": {"model": "m1", "catch": [{"default": 1, "colour": 2}]}}, "unknown key 'colour'"),
        (
            {"a": {"model": "m1", "optional": True, "catch": [{"default": 1}]}},
            "optional and catch",
        ),
        (
            {
                "a": {"model": "m1", "catch": [{"then": "h"}]},
                "b": {"model": "m1", "catch": [{"then": "h"}]},
                "h": {"model": "m2"},
            },
            "already handles step 'a'",
        ),
        (
            {
                "a": {"model": "m1", "catch": [{"then": "h"}]},
                "b": {"model": "m2", "input": "$steps.a.output"},
                "h": {"model": "m2", "input": "$steps.b.output"},
            },
            "cycle",
        ),
        ({"a": {"model": "m1", "default": "$steps.zz.output"}}, "unknown step 'zz'"),
    ],
)
def test_check_names_each_catch_fault(steps: dict[str, Any], expected: str) -> None:
    """freight check names every catch fault."""
    assert any(expected in f for f in faults(steps)), faults(steps)


def test_yaml_bare_on_key_is_read_as_on() -> None:
    """PyYAML reads a bare on: as true; a catch entry still reads it as on."""
    spec = spec_of({"a": {"model": "m1", "catch": [{True: ["timeout"], "default": 1}]}})
    assert spec.steps["a"].catch[0].on == {"timeout"}


def test_python_declaration_matches_yaml() -> None:
    """freight.Step(catch=…, default=…) declares what the YAML form does."""
    declared = fp.Pipeline(
        "p",
        steps={
            "a": fp.Step(model="m1", catch=[{"on": ["timeout"], "then": "h"}], default=None),
            "h": fp.Step(model="m2"),
        },
    )
    assert declared.to_dict()["steps"]["a"] == {
        "model": "m1",
        "catch": [{"on": ["timeout"], "then": "h"}],
        "default": None,
    }
    spec = fp.parse_pipelines({"p": declared}, targets=MODELS)["p"]
    assert spec.steps["h"].handles == "a"


def test_mermaid_draws_catches() -> None:
    """The graph shows the handler edge and a default."""
    graph = mermaid(spec_of(HANDLED))
    assert "catch model_error" in graph
    graph = mermaid(spec_of({"a": {"model": "m1", "default": 0}}))
    assert "default" in graph
