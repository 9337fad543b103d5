"""Planning a run: what starts, skips, completes, fails or is canceled, and when it ends."""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import freight.pipelines as fp
from freight.pipelines import Decision, StepError, StepState, StepStatus
from freight.prediction import ErrorCode, Status

MODELS = {"echo", "m1", "m2"}
S = StepStatus


def spec_of(steps: dict[str, Any], **extra: Any) -> fp.PipelineSpec:
    return fp.parse_pipelines({"p": {"steps": steps, **extra}}, targets=MODELS)["p"]


def done(output: Any = None) -> StepState:
    return StepState(S.SUCCEEDED, output=output)


def failed(code: str = "model_error", message: str = "boom") -> StepState:
    return StepState(S.FAILED, error=StepError(code, message))


def started(decision: Decision) -> list[str]:
    return [s.step for s in decision.start]


DIAMOND = {
    "a": {"model": "m1", "input": "$input.x"},
    "b": {"model": "m2", "input": "$input.x"},
    "c": {"model": "echo", "input": {"a": "$steps.a.output", "b": "$steps.b.output"}},
}


def test_initial_states_are_all_pending() -> None:
    """A new run has every step pending."""
    assert fp.initial_states(spec_of(DIAMOND)) == dict.fromkeys("abc", StepState(S.PENDING))


def test_initial_counts_are_the_in_degrees() -> None:
    """Each step's unfinished-dependency count starts at its number of dependencies."""
    assert fp.unfinished_counts(spec_of(DIAMOND)) == {"a": 0, "b": 0, "c": 2}


def test_parallel_roots_start_together() -> None:
    """Every step without dependencies starts in the first decision, with its input."""
    decision = fp.plan(spec_of(DIAMOND), {"x": 5}, fp.initial_states(spec_of(DIAMOND)))
    assert decision.start == (
        fp.Start("a", "m1", "model", input=5),
        fp.Start("b", "m2", "model", input=5),
    )
    assert not decision.finished and decision.skip == () and decision.cancel == ()


def test_missing_states_count_as_pending() -> None:
    """States not given are pending (a new run may pass {})."""
    assert started(fp.plan(spec_of(DIAMOND), {"x": 1}, {})) == ["a", "b"]


def test_dependant_waits_for_all_its_dependencies() -> None:
    """A step starts only once every step it references has finished."""
    spec = spec_of(DIAMOND)
    half = {"a": done(1), "b": StepState(S.RUNNING), "c": StepState(S.PENDING)}
    assert fp.plan(spec, {}, half) == Decision()
    decision = fp.plan(spec, {}, {**half, "b": done(2)})
    assert decision.start == (fp.Start("c", "echo", "model", input={"a": 1, "b": 2}),)


def test_in_flight_steps_are_not_started_again() -> None:
    """Queued and running steps are left alone: nothing to do."""
    states = {"a": StepState(S.QUEUED), "b": StepState(S.RUNNING)}
    assert fp.plan(spec_of(DIAMOND), {}, states) == Decision()


def test_run_succeeds_with_rendered_output() -> None:
    """Once every step has finished, the run succeeds with the output template rendered."""
    spec = spec_of(DIAMOND, output={"c": "$steps.c.output", "lit": "$$1"})
    decision = fp.plan(spec, {}, {"a": done(1), "b": done(2), "c": done("C")})
    assert decision.outcome == fp.Outcome(Status.SUCCEEDED, output={"c": "C", "lit": "$1"})
    assert decision.finished and decision.start == ()


def test_default_output_is_every_step() -> None:
    """Without output:, the run outputs each step's output by name."""
    decision = fp.plan(spec_of(DIAMOND), {}, {"a": done(1), "b": done(2), "c": done(3)})
    assert decision.outcome is not None
    assert decision.outcome.output == {"a": 1, "b": 2, "c": 3}


def test_false_condition_skips_the_step() -> None:
    """A step whose when is false is skipped, not started."""
    spec = spec_of({"a": {"model": "echo", "when": "input.go"}})
    decision = fp.plan(spec, {"go": False}, {})
    assert decision.skip == ("a",) and decision.start == ()
    assert decision.outcome == fp.Outcome(Status.SUCCEEDED, output={"a": None})


@pytest.mark.parametrize("value", [None, "", [], {}])
def test_empty_values_are_false_conditions(value: Any) -> None:
    """null and empty values make a condition false."""
    spec = spec_of({"a": {"model": "echo", "when": "input.go"}})
    assert fp.plan(spec, {"go": value}, {}).skip == ("a",)


def test_true_condition_starts_the_step() -> None:
    """A step whose when is true starts."""
    spec = spec_of({"a": {"model": "echo", "when": "input.go"}})
    assert started(fp.plan(spec, {"go": 0}, {})) == ["a"]


def test_skipped_dependency_resolves_to_null_and_the_dependant_runs() -> None:
    """A skipped step does not skip its dependants: they start in the same call, seeing null."""
    spec = spec_of(
        {
            "a": {"model": "echo", "when": "input.go"},
            "b": {"model": "echo", "input": {"a": "$steps.a.output", "s": "$steps.a.status"}},
        }
    )
    decision = fp.plan(spec, {"go": False}, {})
    assert decision.skip == ("a",)
    assert decision.start == (fp.Start("b", "echo", "model", input={"a": None, "s": "skipped"}),)


def test_skips_cascade_when_dependants_say_so() -> None:
    """A dependant whose own when reads the skipped status is skipped too, in one call."""
    spec = spec_of(
        {
            "a": {"model": "echo", "when": "input.go"},
            "b": {"model": "echo", "when": "steps.a.status == 'succeeded'"},
            "c": {"model": "echo", "when": "steps.b.output"},
        }
    )
    decision = fp.plan(spec, {"go": False}, {})
    assert decision.skip == ("a", "b", "c")
    assert decision.outcome is not None and decision.outcome.status is Status.SUCCEEDED


def test_optional_failure_resolves_to_null() -> None:
    """An optional step's failure gives its dependants null and the run goes on."""
    spec = spec_of(
        {
            "a": {"model": "echo", "optional": True},
            "b": {"model": "echo", "input": {"a": "$steps.a.output", "s": "$steps.a.status"}},
        }
    )
    decision = fp.plan(spec, {}, {"a": StepState(S.FAILED, output="junk")})
    assert decision.start == (fp.Start("b", "echo", "model", input={"a": None, "s": "failed"}),)
    end = fp.plan(spec, {}, {"a": failed(), "b": done("B")})
    assert end.outcome == fp.Outcome(Status.SUCCEEDED, output={"a": None, "b": "B"})


def test_required_failure_fails_the_run_and_cancels_the_rest() -> None:
    """A required step's failure fails the run with its error; unfinished steps are canceled."""
    spec = spec_of({**DIAMOND, "d": {"model": "echo"}})
    states = {
        "a": failed("timeout", "took too long"),
        "b": StepState(S.RUNNING),
        "c": StepState(S.PENDING),
        "d": done(),
    }
    decision = fp.plan(spec, {}, states)
    assert decision.start == ()
    assert decision.cancel == ("b", "c")
    assert decision.outcome == fp.Outcome(
        Status.FAILED,
        error=StepError("timeout", "step 'a' (model m1) failed: took too long"),
        failed_step="a",
    )


def test_required_cancellation_fails_the_run() -> None:
    """A required step canceled on its own fails the run with code canceled."""
    spec = spec_of({"a": {"model": "echo"}, "b": {"model": "echo"}})
    decision = fp.plan(spec, {}, {"a": StepState(S.CANCELED), "b": StepState(S.QUEUED)})
    assert decision.outcome is not None and decision.outcome.error is not None
    assert decision.outcome.error.code == ErrorCode.CANCELED
    assert "step 'a' (model echo) was canceled" in decision.outcome.error.message
    assert decision.cancel == ("b",)


def test_first_failed_required_step_is_the_one_named() -> None:
    """With two failed required steps, the first in dependency order is named."""
    spec = spec_of({"a": {"model": "echo"}, "b": {"model": "echo"}})
    decision = fp.plan(spec, {}, {"a": failed(message="A"), "b": failed(message="B")})
    assert decision.outcome is not None and decision.outcome.failed_step == "a"


def test_for_each_renders_one_input_per_element() -> None:
    """A for_each step starts with one rendered input per element, `$item` bound to each."""
    spec = spec_of(
        {
            "a": {
                "model": "echo",
                "for_each": "$input.photos",
                "input": {"photo": "$item.url", "claim": "$input.claim"},
            }
        }
    )
    decision = fp.plan(spec, {"photos": [{"url": "u1"}, {"url": "u2"}], "claim": 9}, {})
    assert decision.start == (
        fp.Start(
            "a",
            "echo",
            "model",
            inputs=[{"photo": "u1", "claim": 9}, {"photo": "u2", "claim": 9}],
        ),
    )


@pytest.mark.parametrize("items", [[], None])
def test_for_each_over_nothing_completes_with_an_empty_list(items: Any) -> None:
    """for_each over [] (or null) completes at once with output [] and the run goes on."""
    spec = spec_of(
        {
            "a": {"model": "echo", "for_each": "$input.xs", "input": "$item"},
            "b": {"model": "echo", "input": "$steps.a.output"},
        }
    )
    decision = fp.plan(spec, {"xs": items}, {})
    assert decision.complete == {"a": []}
    assert decision.start == (fp.Start("b", "echo", "model", input=[]),)


def test_for_each_over_nothing_can_finish_the_run() -> None:
    """A run whose only step fans out over [] succeeds in its first decision with []."""
    spec = spec_of({"a": {"model": "echo", "for_each": "$input.xs"}}, output="$steps.a.output")
    assert fp.plan(spec, {"xs": []}, {}).outcome == fp.Outcome(Status.SUCCEEDED, output=[])


def test_for_each_output_is_the_element_outputs() -> None:
    """A for_each step's output (its elements' outputs in order) reaches the run output."""
    spec = spec_of({"a": {"model": "echo", "for_each": "$input.xs"}}, output="$steps.a.output")
    decision = fp.plan(spec, {"xs": [1, 2]}, {"a": done([10, 20])})
    assert decision.outcome == fp.Outcome(Status.SUCCEEDED, output=[10, 20])


def test_for_each_over_a_non_list_fails_the_step() -> None:
    """for_each over something that is no list fails the step (input_error) and the run."""
    spec = spec_of({"a": {"model": "echo", "for_each": "$input.xs"}, "b": {"model": "echo"}})
    decision = fp.plan(spec, {"xs": {"k": 1}}, {})
    assert decision.fail["a"].code == ErrorCode.INPUT_ERROR
    assert "gave a dict, not a list" in decision.fail["a"].message
    assert decision.outcome is not None and decision.outcome.error is not None
    assert decision.outcome.error == StepError(
        ErrorCode.INPUT_ERROR,
        "step 'a' (model echo) failed: for_each '$input.xs' gave a dict, not a list",
    )
    assert decision.start == () and decision.cancel == ("b",)


def test_failing_in_the_same_call_drops_the_starts_decided_before() -> None:
    """A required step failing to start ends the run: steps decided earlier are canceled."""
    spec = spec_of({"a": {"model": "echo"}, "b": {"model": "echo", "input": "$input | length(@)"}})
    decision = fp.plan(spec, 5, {})
    assert decision.start == () and decision.cancel == ("a",)
    assert set(decision.fail) == {"b"}
    assert decision.outcome is not None and decision.outcome.failed_step == "b"


def test_unrenderable_input_fails_an_optional_step_only() -> None:
    """An input that cannot be evaluated fails the step; if optional, the run goes on."""
    spec = spec_of(
        {
            "a": {"model": "echo", "input": "$input.n | length(@)", "optional": True},
            "b": {"model": "echo", "input": "$steps.a.output"},
        }
    )
    decision = fp.plan(spec, {"n": 3}, {})
    assert decision.fail["a"].code == ErrorCode.INPUT_ERROR
    assert decision.start == (fp.Start("b", "echo", "model", input=None),)
    assert decision.outcome is None


def test_unevaluable_condition_fails_the_step() -> None:
    """A condition raising at run time fails the step like a bad input."""
    spec = spec_of({"a": {"model": "echo", "when": "length(input.n) > `1`"}})
    decision = fp.plan(spec, {"n": 3}, {})
    assert decision.fail["a"].code == ErrorCode.INPUT_ERROR
    assert decision.outcome is not None and decision.outcome.status is Status.FAILED


def test_unrenderable_output_fails_the_run() -> None:
    """An output template that cannot be evaluated fails the run with output_error."""
    spec = spec_of({"a": {"model": "echo"}}, output="$steps.a.output | length(@)")
    decision = fp.plan(spec, {}, {"a": done(5)})
    assert decision.outcome is not None and decision.outcome.error is not None
    assert decision.outcome.status is Status.FAILED
    assert decision.outcome.error.code == ErrorCode.OUTPUT_ERROR


def test_nested_pipeline_steps_start_like_models() -> None:
    """A nested pipeline step starts with kind pipeline (the durable layer runs it)."""
    specs = fp.parse_pipelines(
        {"p": {"steps": {"a": {"pipeline": "q"}}}, "q": {"steps": {"b": {"model": "echo"}}}},
        targets=MODELS,
    )
    decision = fp.plan(specs["p"], {"k": 1}, {})
    assert decision.start == (fp.Start("a", "q", "pipeline", input={"k": 1}),)


def test_abort_cancels_every_unfinished_step() -> None:
    """abort ends a run from outside (timeout), canceling what has not finished."""
    spec = spec_of(DIAMOND)
    states = {"a": done(), "b": StepState(S.RUNNING)}
    error = StepError(ErrorCode.TIMEOUT, "pipeline ran past 120 s")
    decision = fp.abort(spec, states, error)
    assert decision.cancel == ("b", "c")
    assert decision.outcome == fp.Outcome(Status.FAILED, error=error)


def test_abort_can_cancel_the_run() -> None:
    """A user's cancel ends the run canceled."""
    error = StepError(ErrorCode.CANCELED, "canceled by the user")
    decision = fp.abort(spec_of(DIAMOND), {}, error, status=Status.CANCELED)
    assert decision.outcome is not None and decision.outcome.status is Status.CANCELED


def test_unblock_reports_dependants_reaching_zero() -> None:
    """Finishing a step decrements its dependants' counts; those at zero are ready."""
    spec = spec_of(DIAMOND)
    counts, ready = fp.unblock(spec, "a", fp.unfinished_counts(spec))
    assert (counts, ready) == ({"a": 0, "b": 0, "c": 1}, [])
    assert fp.unblock(spec, "b", counts) == ({"a": 0, "b": 0, "c": 0}, ["c"])


def test_fan_in_gathers_outputs_in_order() -> None:
    """A for_each step succeeds with its elements' outputs once all succeeded."""
    assert fp.fan_in([done(1), done(2)]) == done([1, 2])
    assert fp.fan_in([]) == done([])


def test_fan_in_waits_for_elements() -> None:
    """While an element is unfinished, the step is running."""
    assert fp.fan_in([done(1), StepState(S.QUEUED)]).status is S.RUNNING


def test_fan_in_fails_with_the_first_failed_element() -> None:
    """One failed element fails the step, naming the element."""
    state = fp.fan_in([done(1), failed("timeout", "slow"), failed("model_error", "x")])
    assert state == StepState(S.FAILED, error=StepError("timeout", "element 1: slow"))


def test_next_elements_respects_max_concurrency() -> None:
    """At most max_concurrency elements are in flight; None means no limit."""
    statuses = [S.RUNNING, S.SUCCEEDED, S.PENDING, S.PENDING, S.PENDING]
    assert fp.next_elements(statuses, 2) == [2]
    assert fp.next_elements(statuses, 1) == []
    assert fp.next_elements(statuses, None) == [2, 3, 4]
    assert fp.next_elements([S.FAILED, S.PENDING], None) == []


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (Status.QUEUED, S.QUEUED),
        (Status.AWAITING_INPUT, S.QUEUED),
        (Status.RUNNING, S.RUNNING),
        (Status.SUCCEEDED, S.SUCCEEDED),
        (Status.FAILED, S.FAILED),
        (Status.CANCELED, S.CANCELED),
        (Status.EXPIRED, S.FAILED),
    ],
)
def test_step_status_of_a_prediction(status: Status, expected: StepStatus) -> None:
    """A step's status follows its prediction's; an expired prediction is a failed step."""
    assert fp.step_status(status) is expected


def test_mermaid_draws_the_dag() -> None:
    """The Mermaid graph has a labelled node per step and edges from dependencies."""
    spec = spec_of(
        {
            "a": {"model": "m1", "input": "$input.x"},
            "b": {"model": "m2", "when": 'steps.a.output == `"x"` && input.y'},
            "c": {"model": "echo", "for_each": "$steps.a.output", "optional": True},
        },
        output="$steps.b.output",
    )
    text = fp.mermaid(spec)
    assert text.splitlines()[0] == "graph TD"
    assert '    s0["a<br/>model: m1"]' in text
    assert "s1{{" in text and "when steps.a.output == `#quot;x#quot;` #amp;#amp; input.y" in text
    assert "for each $steps.a.output<br/>optional" in text
    for edge in ["input --> s0", "s0 -.-> s1", "input -.-> s1", "s0 --> s2", "s1 --> output"]:
        assert f"    {edge}\n" in text


def test_mermaid_marks_nested_pipelines() -> None:
    """A nested pipeline step is drawn as a subroutine box."""
    specs = fp.parse_pipelines(
        {
            "p": {"steps": {"a": {"pipeline": "q"}}, "output": "$input"},
            "q": {"steps": {"b": {"model": "echo"}}},
        },
        targets=MODELS,
    )
    text = fp.mermaid(specs["p"])
    assert '    s0[["a<br/>pipeline: q"]]' in text and "    input --> output\n" in text


# -- properties over random DAGs ------------------------------------------------------

NAMES = st.from_regex(r"[a-z0-9_-]{1,5}", fullmatch=True)


@st.composite
def dags(draw: st.DrawFn) -> tuple[list[str], dict[str, list[str]]]:
    """A random acyclic step graph: declaration order, and each step's dependencies."""
    names = draw(st.lists(NAMES, min_size=1, max_size=8, unique=True))
    needs = {
        name: [dep for dep in names[:i] if draw(st.booleans())] for i, name in enumerate(names)
    }
    declared = draw(st.permutations(names))
    return list(declared), needs


def raw_of(declared: list[str], needs: dict[str, list[str]], **options: Any) -> dict[str, Any]:
    steps = {
        name: {
            "model": "echo",
            "input": {
                "own": name,
                "x": "$input.x",
                **{d: f"$steps.{d}.output" for d in needs[name]},
            },
            **options.get(name, {}),
        }
        for name in declared
    }
    return {"p": {"steps": steps}}


def run_to_end(spec: fp.PipelineSpec, data: st.DataObject, optional: set[str]) -> Decision:
    """Finish any in-flight step, in an order hypothesis picks, until the run ends."""
    states = fp.initial_states(spec)
    counts = fp.unfinished_counts(spec)
    starts: Counter[str] = Counter()
    for _ in range(2 * len(spec.steps) + 1):
        decision = fp.plan(spec, {"x": 1}, states)
        pending = {n for n in spec.order if states[n].status is S.PENDING}
        starts.update(started(decision))
        for name in started(decision):
            states[name] = StepState(S.QUEUED)
        for name in decision.skip:
            states[name] = StepState(S.SKIPPED)
            counts = fp.unblock(spec, name, counts)[0]
        # the counts the durable layer keeps agree with what plan decided
        ready = {n for n in pending if counts[n] == 0}
        assert set(started(decision)) | set(decision.skip) == ready
        if decision.finished:
            assert all(states[n].status.finished for n in spec.steps)
            assert set(starts) | {n for n in spec.steps if states[n].status is S.SKIPPED} == set(
                spec.steps
            )
            assert max(starts.values(), default=1) == 1
            return decision
        flight = sorted(n for n in spec.order if states[n].status is S.QUEUED)
        name = data.draw(st.sampled_from(flight))
        fail = name in optional and data.draw(st.booleans())
        states[name] = failed() if fail else done(name)
        counts = fp.unblock(spec, name, counts)[0]
    raise AssertionError("the run did not end")


@given(dags())
@settings(max_examples=60, deadline=None)
def test_random_dags_validate(dag: tuple[list[str], dict[str, list[str]]]) -> None:
    """Any acyclic step graph passes the checks, with counts equal to in-degrees."""
    declared, needs = dag
    raw = raw_of(declared, needs)
    assert fp.check_pipelines(raw, targets=MODELS) == []
    spec = fp.parse_pipelines(raw, targets=MODELS)["p"]
    assert fp.unfinished_counts(spec) == {n: len(needs[n]) for n in declared}
    assert sorted(spec.order) == sorted(declared)
    position = {n: i for i, n in enumerate(spec.order)}
    assert all(position[d] < position[n] for n in declared for d in needs[n])


@given(dags(), st.data())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_completion_order_finishes_every_step_once(
    dag: tuple[list[str], dict[str, list[str]]], data: st.DataObject
) -> None:
    """Finishing ready steps in any order ends the run succeeded, each step run once."""
    declared, needs = dag
    spec = fp.parse_pipelines(raw_of(declared, needs), targets=MODELS)["p"]
    decision = run_to_end(spec, data, optional=set())
    assert decision.outcome is not None and decision.outcome.status is Status.SUCCEEDED
    assert decision.outcome.output == {n: n for n in declared}


@given(dags(), st.data())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_optional_failures_and_skips_still_succeed(
    dag: tuple[list[str], dict[str, list[str]]], data: st.DataObject
) -> None:
    """With optional steps failing and conditional steps skipped, the run still succeeds."""
    declared, needs = dag
    optional = set(data.draw(st.lists(st.sampled_from(declared), unique=True)))
    skipped = set(data.draw(st.lists(st.sampled_from(declared), unique=True)))
    options = {
        n: {"optional": n in optional, **({"when": "input.never"} if n in skipped else {})}
        for n in declared
    }
    spec = fp.parse_pipelines(raw_of(declared, needs, **options), targets=MODELS)["p"]
    decision = run_to_end(spec, data, optional)
    assert decision.outcome is not None and decision.outcome.status is Status.SUCCEEDED
    assert all(decision.outcome.output[n] is None for n in skipped)


@given(dags(), st.data())
@settings(max_examples=60, deadline=None)
def test_a_back_edge_is_always_a_named_cycle(
    dag: tuple[list[str], dict[str, list[str]]], data: st.DataObject
) -> None:
    """Making a step depend on one of its dependants yields a cycle fault naming a real cycle."""
    declared, needs = dag
    edges = [(d, n) for n in declared for d in needs[n]]
    if not edges:
        needs = {**needs, declared[-1]: [declared[0]]} if len(declared) > 1 else needs
        edges = [(d, n) for n in declared for d in needs[n]]
    if not edges:
        return  # a single step has no edge to turn around (a self-edge is its own fault)
    dep, user = data.draw(st.sampled_from(edges))
    needs = {**needs, dep: [*needs[dep], user]}
    found = fp.check_pipelines(raw_of(declared, needs), targets=MODELS)
    cycles = [f for f in found if f.detail["fault"] == "cycle"]
    assert cycles and len(cycles) == len(found)
    for fault in cycles:
        loop = fault.detail["cycle"]
        assert loop[0] == loop[-1] and len(loop) >= 3
        assert all(a in needs[b] for a, b in itertools.pairwise(loop))
        assert " -> ".join(loop) in fault.message and fault.message.startswith("pipeline 'p'")
