"""Pipeline checks: every fault `freight check` reports, each naming the pipeline and fault."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import freight.pipelines as fp
from freight.errors import FreightError, PipelineDefinitionError
from freight.pipelines.validate import STEP_KEYS, check_pipelines, raise_for

MODELS = {"echo", "detector", "estimator"}


def faults(raw: Any, targets: Any = MODELS) -> list[PipelineDefinitionError]:
    return check_pipelines(raw, targets=targets)


def one(raw: Any, kind: str, targets: Any = MODELS, pipeline: str = "p") -> str:
    """The single fault of ``raw``: asserts its kind and that it names the pipeline."""
    found = faults(raw, targets)
    assert [(f.detail["fault"], f.detail["pipeline"]) for f in found] == [(kind, pipeline)], [
        f.message for f in found
    ]
    message = found[0].message
    assert message.startswith(f"pipeline {pipeline!r}")
    return message


def steps(**steps: Any) -> dict[str, Any]:
    return {"p": {"steps": steps}}


def test_a_valid_section_has_no_faults() -> None:
    """The README example (with every option) passes the checks."""
    raw = {
        "p": {
            "timeout_s": 120,
            "steps": {
                "a": {"model": "echo", "input": "$input.image"},
                "b": {"model": "detector", "input": "$input.image"},
                "c": {
                    "model": "estimator",
                    "input": {"a": "$steps.a.output", "b": "$steps.b.output.labels"},
                    "when": "steps.a.output.severity != 'none'",
                },
                "d": {
                    "model": "echo",
                    "for_each": "$input.photos",
                    "input": {"photo": "$item", "claim": "$input.claim_id"},
                    "max_concurrency": 4,
                    "optional": True,
                    "timeout_s": 30,
                    "max_attempts": 2,
                },
                "e": {"pipeline": "q", "input": "$steps.c.output"},
            },
            "output": {"c": "$steps.c.output", "d": "$steps.d.output"},
        },
        "q": {"steps": {"only": {"model": "echo"}}},
    }
    assert faults(raw) == []


def test_faults_are_freight_errors_with_a_code() -> None:
    """Each fault is a PipelineDefinitionError (a FreightError) with a stable code."""
    found = faults(steps(a={"model": "nope"}))
    assert isinstance(found[0], FreightError)
    assert found[0].code == "pipeline_definition_error"
    assert found[0].detail == {
        "pipeline": "p",
        "step": "a",
        "fault": "unknown_target",
        "target": "nope",
    }


def test_section_must_be_a_mapping() -> None:
    """A `pipelines:` section that is not a mapping is one fault."""
    found = faults(["p"])
    assert [f.message for f in found] == [
        "pipelines: must be a mapping of pipeline names to pipelines"
    ]


def test_pipeline_must_be_a_mapping() -> None:
    """A pipeline that is not a mapping is reported."""
    assert "must be a mapping, got list" in one({"p": ["a"]}, "type")


def test_unknown_pipeline_key() -> None:
    """A misspelt pipeline key is reported with the keys expected."""
    message = one({"p": {"steps": {"a": {"model": "echo"}}, "outptu": 1}}, "unknown_key")
    assert "unknown key 'outptu'" in message and "output" in message


def test_unknown_step_key() -> None:
    """A misspelt step key is reported on its step."""
    message = one(steps(a={"model": "echo", "inptu": 1}), "unknown_key")
    assert message.startswith("pipeline 'p', step 'a': unknown key 'inptu'")


@pytest.mark.parametrize("name", ["Bad", "-x", "a b", "x" * 64])
def test_pipeline_name(name: str) -> None:
    """A pipeline name follows the model-name rule (one namespace)."""
    message = one({name: {"steps": {"a": {"model": "echo"}}}}, "name", pipeline=name)
    assert "pipeline name must be lowercase" in message


def test_declared_name_must_match_its_key() -> None:
    """A Python Pipeline filed under another name is reported."""
    declared = fp.Pipeline("other", steps={"a": fp.Step(model="echo")})
    assert "is declared as 'other'" in one({"p": declared}, "name")


@pytest.mark.parametrize("value", [None, {}, [], "a"])
def test_pipeline_needs_steps(value: Any) -> None:
    """A pipeline with missing, empty or non-mapping steps is reported."""
    raw = {"p": {} if value is None else {"steps": value}}
    assert "needs steps" in one(raw, "no_steps")


@pytest.mark.parametrize("name", ["Upper", "dot.ted", "sp ace", ""])
def test_step_name(name: str) -> None:
    """A step name must match [a-z0-9_-]+."""
    message = one({"p": {"steps": {name: {"model": "echo"}}}}, "step_name")
    assert f"step {name!r}: a step name must be" in message


def test_step_must_be_a_mapping() -> None:
    """A step that is not a mapping is reported."""
    assert "step 'a': must be a mapping, got str" in one(steps(a="echo"), "type")


def test_both_model_and_pipeline() -> None:
    """A step with both model: and pipeline: is reported."""
    message = one({"p": {"steps": {"a": {"model": "echo", "pipeline": "q"}}}}, "both_targets")
    assert "exactly one of model: or pipeline: (has both)" in message


def test_neither_model_nor_pipeline() -> None:
    """A step with neither model: nor pipeline: is reported."""
    assert "(has neither)" in one(steps(a={"input": "$input"}), "no_target")


def test_target_must_be_a_name() -> None:
    """A target that is not a string is reported."""
    assert "model: must be a name, got 3" in one(steps(a={"model": 3}), "target")


def test_unknown_target() -> None:
    """A step running a model or pipeline that does not exist is reported."""
    assert "model: unknown target 'nope'" in one(steps(a={"model": "nope"}), "unknown_target")


def test_model_key_naming_a_pipeline() -> None:
    """`model:` naming a pipeline says to write `pipeline:`."""
    raw = {"p": {"steps": {"a": {"model": "q"}}}, "q": {"steps": {"b": {"model": "echo"}}}}
    assert "'q' is a pipeline; write pipeline: q" in one(raw, "wrong_kind")


def test_pipeline_key_naming_a_model() -> None:
    """`pipeline:` naming a model says to write `model:`."""
    assert "'echo' is a model; write model: echo" in one(
        steps(a={"pipeline": "echo"}), "wrong_kind"
    )


def test_pipeline_named_like_a_model() -> None:
    """A pipeline and a model share one namespace: a clash is reported."""
    message = one({"echo": {"steps": {"a": {"model": "detector"}}}}, "name_clash", pipeline="echo")
    assert "is also the name of a model" in message


def test_targets_mapping_knows_pipelines_declared_elsewhere() -> None:
    """With a kinds mapping, a nested pipeline declared elsewhere is a known target."""
    targets = {"echo": "model", "elsewhere": "pipeline"}
    assert faults(steps(a={"pipeline": "elsewhere"}), targets) == []
    assert "is a pipeline" in one(steps(a={"model": "elsewhere"}), "wrong_kind", targets)


@pytest.mark.parametrize(
    "step",
    [
        {"model": "echo", "input": "$steps.ghost.output"},
        {"model": "echo", "input": {"deep": ["$steps.ghost.output"]}},
        {"model": "echo", "when": "steps.ghost.status == 'succeeded'"},
        {"model": "echo", "for_each": "$steps.ghost.output"},
    ],
)
def test_reference_to_unknown_step(step: dict[str, Any]) -> None:
    """A reference (in input, when or for_each) to a step that does not exist is reported."""
    assert "references unknown step 'ghost'" in one(steps(a=step), "unknown_step")


def test_output_reference_to_unknown_step() -> None:
    """The output template's references are checked too."""
    raw = {"p": {"steps": {"a": {"model": "echo"}}, "output": "$steps.ghost.output"}}
    assert "output: '$steps.ghost.output': references unknown step 'ghost'" in one(
        raw, "unknown_step"
    )


def test_self_reference() -> None:
    """A step reading its own output is a self-reference (not reported as a cycle too)."""
    message = one(steps(a={"model": "echo", "input": "$steps.a.output"}), "self_reference")
    assert "step 'a' references itself" in message


@pytest.mark.parametrize(
    ("step", "where"),
    [
        ({"model": "echo", "input": "$item"}, "input"),
        ({"model": "echo", "for_each": "$input.xs", "when": "item.x"}, "when"),
    ],
)
def test_item_outside_for_each(step: dict[str, Any], where: str) -> None:
    """`$item` is defined only in a for_each step's input (not its when)."""
    message = one(steps(a=step), "item_outside_for_each")
    assert where in message and "$item is defined only" in message


def test_item_in_output() -> None:
    """The pipeline output cannot read `$item`."""
    raw = {"p": {"steps": {"a": {"model": "echo"}}, "output": {"x": "$item"}}}
    assert "output.x: '$item'" in one(raw, "item_outside_for_each")


def test_malformed_template_reference() -> None:
    """A JMESPath syntax error in a reference is reported with the text."""
    message = one(steps(a={"model": "echo", "input": {"x": "$input.["}}), "syntax")
    assert "input.x: '$input.[': malformed JMESPath: 'input.['" in message


def test_malformed_condition() -> None:
    """A JMESPath syntax error in `when:` is reported with the text."""
    message = one(steps(a={"model": "echo", "when": "input.x =="}), "syntax")
    assert "when 'input.x ==': malformed JMESPath" in message


def test_unknown_function_in_condition() -> None:
    """An unknown JMESPath function is malformed (JMESPath would fail only when run)."""
    assert "unknown function nope()" in one(
        steps(a={"model": "echo", "when": "nope(input)"}), "syntax"
    )


def test_reference_with_unknown_root() -> None:
    """A `$` string that is not $input/$steps/$item is refused, hinting at `$$`."""
    message = one(steps(a={"model": "echo", "input": "$price"}), "reference")
    assert "must start with $input, $steps or $item" in message and "$$" in message


def test_condition_with_unknown_root() -> None:
    """A condition reading a name that is not in scope (a forgotten `steps.`) is reported."""
    message = one(steps(a={"model": "echo", "when": "severity != 'none'"}), "unknown_root")
    assert "reads 'severity'; only input, steps and item are in scope" in message


def test_reference_to_all_steps() -> None:
    """Reading `steps` without naming a step hides dependencies: refused."""
    assert "must name a step" in one(
        steps(a={"model": "echo", "when": "steps.*.status"}), "whole_steps"
    )


def test_unknown_step_field() -> None:
    """A step exposes only output and status: a typo is reported, not silently null."""
    raw = steps(a={"model": "echo"}, b={"model": "echo", "input": "$steps.a.outptu"})
    assert "steps.a.outptu: a step has only output, status and error" in one(raw, "unknown_field")


@pytest.mark.parametrize("value", [["x"], "$$x", "plain", 3, "$item", "$item.xs", "$foo"])
def test_for_each_must_be_a_reference(value: Any) -> None:
    """for_each must be a $input… or $steps… reference."""
    message = one(steps(a={"model": "echo", "for_each": value}), "for_each")
    assert "for_each must be a reference to a list" in message


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("max_concurrency", 0),
        ("max_concurrency", -1),
        ("max_concurrency", 1.5),
        ("max_concurrency", True),
        ("max_attempts", 0),
        ("max_attempts", "2"),
        ("timeout_s", 0),
        ("timeout_s", -3.0),
        ("timeout_s", float("inf")),
        ("timeout_s", "30"),
    ],
)
def test_bad_step_numbers(key: str, value: Any) -> None:
    """max_concurrency/max_attempts must be integers >= 1, timeout_s a number > 0."""
    step = {"model": "echo", "for_each": "$input.xs", key: value}
    assert f"{key} must be" in one(steps(a=step), "number")


@pytest.mark.parametrize("value", [0, -1, "120", False])
def test_bad_pipeline_timeout(value: Any) -> None:
    """A whole-run timeout_s must be a number > 0."""
    raw = {"p": {"timeout_s": value, "steps": {"a": {"model": "echo"}}}}
    assert "timeout_s must be a number > 0" in one(raw, "number")


def test_max_concurrency_without_for_each() -> None:
    """max_concurrency means nothing on a step that runs once."""
    message = one(steps(a={"model": "echo", "max_concurrency": 2}), "option")
    assert "max_concurrency applies only to a for_each step" in message


def test_optional_must_be_a_boolean() -> None:
    """optional must be true or false."""
    assert "optional must be true or false" in one(
        steps(a={"model": "echo", "optional": "yes"}), "type"
    )


def test_when_must_be_a_string() -> None:
    """when must be a JMESPath string."""
    assert "when must be a JMESPath string" in one(steps(a={"model": "echo", "when": 1}), "type")


def test_template_with_a_non_json_value() -> None:
    """A Python object inside a template is no JSON value."""
    step = fp.Step(model="echo", input={"x": object()})
    message = one({"p": fp.Pipeline("p", steps={"a": step})}, "template")
    assert "input.x: object is not a JSON value" in message


def test_two_step_cycle_is_named() -> None:
    """A cycle is reported once, naming it as `a -> b -> a`."""
    raw = steps(
        a={"model": "echo", "input": "$steps.b.output"},
        b={"model": "echo", "input": "$steps.a.output"},
    )
    message = one(raw, "cycle")
    assert message == "pipeline 'p': steps form a cycle: a -> b -> a"


def test_longer_cycle_is_named_in_data_flow_order() -> None:
    """A longer cycle is named in data-flow order, each step feeding the next."""
    raw = steps(
        a={"model": "echo", "input": "$steps.c.output"},
        b={"model": "echo", "input": "$steps.a.output"},
        c={"model": "echo", "when": "steps.b.output"},
        d={"model": "echo", "input": "$steps.c.output"},
    )
    found = faults(raw)
    assert [f.detail["cycle"] for f in found] == [["a", "b", "c", "a"]]
    assert "a -> b -> c -> a" in found[0].message


def test_each_cycle_is_reported() -> None:
    """Two separate cycles are two faults."""
    raw = steps(
        a={"model": "echo", "input": "$steps.b.output"},
        b={"model": "echo", "input": "$steps.a.output"},
        c={"model": "echo", "input": "$steps.d.output"},
        d={"model": "echo", "input": "$steps.c.output"},
    )
    assert [f.detail["cycle"] for f in faults(raw)] == [["a", "b", "a"], ["c", "d", "c"]]


def test_pipeline_nesting_cycle() -> None:
    """p1 uses p2 uses p1 is reported as a nesting cycle."""
    raw = {
        "p1": {"steps": {"a": {"pipeline": "p2"}}},
        "p2": {"steps": {"b": {"pipeline": "p1"}}},
    }
    message = one(raw, "nesting_cycle", pipeline="p1")
    assert "pipelines nest in a cycle: p1 -> p2 -> p1" in message


def test_three_pipeline_nesting_cycle_reads_as_uses() -> None:
    """A longer nesting cycle is named in "uses" order."""
    raw = {
        "p1": {"steps": {"a": {"pipeline": "p2"}}},
        "p2": {"steps": {"b": {"pipeline": "p3"}}},
        "p3": {"steps": {"c": {"pipeline": "p1"}}},
    }
    assert "p1 -> p2 -> p3 -> p1" in one(raw, "nesting_cycle", pipeline="p1")


def test_pipeline_nesting_itself() -> None:
    """A pipeline with a step running itself is a nesting cycle."""
    assert "nests itself: p -> p" in one(steps(a={"pipeline": "p"}), "nesting_cycle")


def test_all_faults_of_all_pipelines_are_collected() -> None:
    """Checks never stop at the first fault: every pipeline's every fault is listed."""
    raw = {
        "p": {"steps": {"a": {"model": "nope", "max_attempts": 0, "input": "$steps.x.output"}}},
        "q": {"steps": {"B": {"model": "echo", "when": "("}}, "timeout_s": -1},
    }
    found = faults(raw)
    assert [(f.detail["pipeline"], f.detail["fault"]) for f in found] == [
        ("p", "unknown_target"),
        ("p", "number"),
        ("p", "unknown_step"),
        ("q", "number"),
        ("q", "step_name"),
        ("q", "syntax"),
    ]


def test_raise_for_nothing_raises_nothing() -> None:
    """No faults: raise_for returns."""
    raise_for([])


def test_raise_for_one_fault_raises_it() -> None:
    """A single fault is raised as is."""
    found = faults(steps(a={"model": "nope"}))
    with pytest.raises(PipelineDefinitionError) as info:
        raise_for(found)
    assert info.value is found[0]


def test_raise_for_many_faults_lists_them_all() -> None:
    """Many faults become one error whose message lists every one."""
    found = faults({"p": {"steps": {"a": {"model": "nope"}}}, "q": {"steps": {}}})
    with pytest.raises(PipelineDefinitionError) as info:
        raise_for(found)
    assert info.value.message.startswith("2 pipeline faults:")
    assert all(f.message in info.value.message for f in found)
    assert info.value.detail["faults"] == [f.message for f in found]
    assert info.value.detail["pipelines"] == ["p", "q"]


def test_parse_pipelines_raises_for_faults() -> None:
    """parse_pipelines refuses a section with faults (with every message)."""
    with pytest.raises(PipelineDefinitionError, match="unknown target 'nope'"):
        fp.parse_pipelines(steps(a={"model": "nope"}), targets=MODELS)


# -- robustness: any input gives faults, never a crash ---------------------------------

WORDS = ["$input", "$input.x", "$steps.a.output", "$steps.b.status", "$item", "$$x", "$foo"]
WORDS += ["steps.a.output", "input.x", "(", "echo", "q", "p", "$steps.a", "$input.xs"]
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-2, 5)
    | st.floats(-1, 10, allow_nan=False)
    | st.sampled_from(WORDS)
)
JSON = st.recursive(
    SCALARS,
    lambda kids: (
        st.lists(kids, max_size=3)
        | st.dictionaries(st.sampled_from(["x", "a", *WORDS[:3]]), kids, max_size=3)
    ),
    max_leaves=8,
)
NOISY_STEP = st.dictionaries(st.sampled_from([*sorted(STEP_KEYS), "junk"]), JSON, max_size=6)
LIKELY_STEP = st.fixed_dictionaries(
    {"model": st.sampled_from(["echo", "estimator"])},
    optional={
        "input": JSON,
        "when": st.sampled_from(["input.x", "steps.a.status == 'failed'", "steps.b.output"]),
        "for_each": st.sampled_from(["$input.xs", "$steps.a.output", "$input", "$input.x"]),
        "optional": st.booleans(),
        "max_attempts": st.integers(1, 3),
    },
)
STEP = LIKELY_STEP | NOISY_STEP
PIPELINE = st.fixed_dictionaries(
    {"steps": st.dictionaries(st.sampled_from(["a", "b", "c", "B"]), STEP | JSON, max_size=4)},
    optional={"output": JSON, "timeout_s": SCALARS},
)
NOISY_SECTION = st.dictionaries(
    st.sampled_from(["p", "q", "echo", "Bad"]), PIPELINE | JSON, max_size=3
)
LIKELY_PIPELINE = st.fixed_dictionaries(
    {"steps": st.dictionaries(st.sampled_from(["a", "b", "c"]), LIKELY_STEP, min_size=1)},
    optional={"output": JSON},
)
SECTION = NOISY_SECTION | st.dictionaries(st.sampled_from(["p", "q"]), LIKELY_PIPELINE)


@given(SECTION, JSON)
@settings(max_examples=300, deadline=None)
def test_checks_never_crash_and_clean_sections_plan(raw: Any, run_input: Any) -> None:
    """Any section yields faults naming their pipeline, or specs whose first plan works."""
    found = check_pipelines(raw, targets=MODELS)
    for f in found:
        assert f.message.startswith(("pipeline '", "pipelines:")) and f.detail["fault"]
    if not found:
        for spec in fp.parse_pipelines(raw, targets=MODELS).values():
            decision = fp.plan(spec, run_input, fp.initial_states(spec))
            decided = [s.step for s in decision.start] + [*decision.skip, *decision.complete]
            assert len(decided) == len(set(decided))


@pytest.mark.parametrize(
    ("retry", "words"),
    [
        ("often", "retry must be a mapping"),
        ({"tries": 3}, "unknown key 'tries'"),
        ({"on": []}, "retry.on must be a list"),
        ({"on": ["canceled"]}, "cannot be retried"),
        ({"max_attempts": 0}, "retry.max_attempts must be an integer from 1 to 100"),
        ({"max_attempts": 101}, "retry.max_attempts must be an integer from 1 to 100"),
        ({"interval_s": -1}, "retry.interval_s must be a number >= 0"),
        ({"backoff": 0.5}, "retry.backoff must be a number >= 1"),
        ({"max_interval_s": 0}, "retry.max_interval_s must be a number > 0"),
        ({"jitter": "yes"}, "retry.jitter must be true or false"),
    ],
)
def test_retry_faults_are_named(retry: Any, words: str) -> None:
    assert words in one(steps(a={"model": "echo", "retry": retry}), "retry")


def test_retry_applies_to_model_steps_with_one_bound_of_attempts() -> None:
    nested = {
        "p": {"steps": {"a": {"pipeline": "q", "retry": {}}}},
        "q": steps(b={"model": "echo"})["p"],
    }
    assert "retry applies to a model step" in one(nested, "retry")
    each = steps(a={"model": "echo", "for_each": "$input", "retry": {}})
    assert faults(each) == []  # each element is retried on its own
    both = steps(a={"model": "echo", "max_attempts": 2, "retry": {"max_attempts": 3}})
    assert "give one" in one(both, "retry")
    assert (
        faults(steps(a={"model": "echo", "retry": {"on": ["model_error"], "jitter": True}})) == []
    )


def test_retry_delays_grow_to_their_bound_and_jitter_is_replayable() -> None:
    from freight.pipelines.retry import parse_retry

    policy = parse_retry({"interval_s": 1, "backoff": 3, "max_interval_s": 5})
    assert policy is not None
    assert [policy.delay_s(n, "k") for n in (1, 2, 3)] == [1, 3, 5]
    jittery = parse_retry({"interval_s": 4, "jitter": True})
    assert jittery is not None
    assert 0 <= jittery.delay_s(1, "row") <= 4
    assert jittery.delay_s(1, "row") == jittery.delay_s(1, "row")
