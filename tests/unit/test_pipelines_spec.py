"""Pipeline specs: parsing, defaults, dependency inference, Python declarations, purity."""

from __future__ import annotations

import ast
import dataclasses
import sys
from pathlib import Path
from typing import Any

import pytest

import freight.pipelines as fp
from freight.pipelines import graph
from freight.pipelines.declare import UNSET, as_raw

MODELS = {"damage-classifier", "part-detector", "estimator", "echo"}
PACKAGE = Path(__file__).resolve().parents[2] / "src" / "freight" / "pipelines"

CLAIM: dict[str, Any] = {
    "timeout_s": 120,
    "steps": {
        "damage": {"model": "damage-classifier", "input": "$input.image"},
        "parts": {"model": "part-detector", "input": "$input.image"},
        "estimate": {
            "model": "estimator",
            "input": {"damage": "$steps.damage.output", "parts": "$steps.parts.output.labels"},
            "when": "steps.damage.output.severity != 'none'",
        },
        "per_photo": {
            "model": "damage-classifier",
            "for_each": "$input.photos",
            "input": {"photo": "$item", "claim": "$input.claim_id"},
            "max_concurrency": 4,
            "optional": True,
            "timeout_s": 30,
            "max_attempts": 2,
        },
        "nested": {"pipeline": "other", "input": "$steps.estimate.output"},
    },
    "output": {"estimate": "$steps.estimate.output", "photos": "$steps.per_photo.output"},
}
OTHER: dict[str, Any] = {"steps": {"only": {"model": "echo"}}}


def parse(raw: dict[str, Any] | None = None) -> dict[str, fp.PipelineSpec]:
    return fp.parse_pipelines(raw or {"claim": CLAIM, "other": OTHER}, targets=MODELS)


def test_parse_builds_one_spec_per_pipeline() -> None:
    """parse_pipelines returns specs by name with their options."""
    specs = parse()
    assert set(specs) == {"claim", "other"}
    claim = specs["claim"]
    assert claim.name == "claim" and claim.timeout_s == 120
    assert list(claim.steps) == ["damage", "parts", "estimate", "per_photo", "nested"]


def test_step_options_are_kept() -> None:
    """Every step option lands on its StepSpec."""
    step = parse()["claim"].steps["per_photo"]
    assert (step.target, step.kind, step.for_each) == (
        "damage-classifier",
        "model",
        "$input.photos",
    )
    assert (step.max_concurrency, step.optional, step.timeout_s, step.max_attempts) == (
        4,
        True,
        30,
        2,
    )
    assert step.fan_out and not step.conditional


def test_targets_and_kinds() -> None:
    """A step runs a model or a nested pipeline (one namespace of targets)."""
    claim = parse()["claim"]
    assert (claim.steps["nested"].target, claim.steps["nested"].kind) == ("other", "pipeline")
    assert claim.nested == {"other"}


def test_dependencies_are_inferred_from_input_when_and_for_each() -> None:
    """needs come from the references in input, when and for_each, never declared."""
    raw = {
        "p": {
            "steps": {
                "a": {"model": "echo"},
                "b": {"model": "echo"},
                "c": {"model": "echo"},
                "d": {
                    "model": "echo",
                    "input": {"x": "$steps.a.output"},
                    "when": "steps.b.status == 'succeeded'",
                    "for_each": "$steps.c.output",
                },
            }
        }
    }
    spec = parse(raw)["p"]
    assert spec.steps["d"].needs == {"a", "b", "c"}
    assert spec.steps["a"].needs == frozenset()
    assert spec.dependants == {"a": {"d"}, "b": {"d"}, "c": {"d"}, "d": frozenset()}


def test_order_puts_dependencies_first() -> None:
    """order is topological, with declaration order among steps that are equally ready."""
    assert parse()["claim"].order == ("damage", "parts", "per_photo", "estimate", "nested")


def test_missing_input_is_the_whole_run_input() -> None:
    """A step without input gets `$input`."""
    step = parse()["other"].steps["only"]
    assert step.input == "$input"
    assert step.input_template.render({"input": {"a": 1}, "steps": {}}) == {"a": 1}


def test_missing_input_of_a_for_each_step_is_the_element() -> None:
    """A for_each step without input gets `$item`: each element as it is."""
    step = parse({"p": {"steps": {"a": {"model": "echo", "for_each": "$input.xs"}}}})["p"]
    assert step.steps["a"].input == "$item"


def test_null_timeouts_mean_the_default() -> None:
    """timeout_s: null (an empty YAML value) means no timeout set, not a fault."""
    raw = {"p": {"timeout_s": None, "steps": {"a": {"model": "echo", "timeout_s": None}}}}
    spec = parse(raw)["p"]
    assert spec.timeout_s is None and spec.steps["a"].timeout_s is None


def test_missing_output_is_every_step_output() -> None:
    """A pipeline without output outputs every step's output by name."""
    raw = {"p": {"steps": {"a-1": {"model": "echo"}, "b": {"model": "echo"}}}}
    spec = parse(raw)["p"]
    ctx = {"steps": {"a-1": {"output": 1}, "b": {"output": 2}}}
    assert spec.output_template.render(ctx) == {"a-1": 1, "b": 2}
    assert spec.output_needs == {"a-1", "b"}


def test_output_needs() -> None:
    """output_needs lists the steps the output template reads."""
    assert parse()["claim"].output_needs == {"estimate", "per_photo"}


def test_specs_are_frozen() -> None:
    """Specs cannot be changed after parsing."""
    spec = parse()["claim"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.steps["x"] = spec.steps["damage"]  # type: ignore[index]


def test_specs_are_hashable_and_compare_by_declaration() -> None:
    """Two parses of one declaration give equal, hashable specs."""
    first, second = parse()["claim"], parse()["claim"]
    assert first == second
    assert hash(first.steps["damage"]) == hash(second.steps["damage"])


def test_python_declaration_gives_the_same_spec_as_yaml() -> None:
    """freight.Pipeline/Step declare exactly what the YAML form does."""
    declared = fp.Pipeline(
        "claim",
        timeout_s=120,
        steps={
            "damage": fp.Step(model="damage-classifier", input="$input.image"),
            "parts": fp.Step(model="part-detector", input="$input.image"),
            "estimate": fp.Step(
                model="estimator",
                input={"damage": "$steps.damage.output", "parts": "$steps.parts.output.labels"},
                when="steps.damage.output.severity != 'none'",
            ),
            "per_photo": fp.Step(
                model="damage-classifier",
                for_each="$input.photos",
                input={"photo": "$item", "claim": "$input.claim_id"},
                max_concurrency=4,
                optional=True,
                timeout_s=30,
                max_attempts=2,
            ),
            "nested": {"pipeline": "other", "input": "$steps.estimate.output"},
        },
        output={"estimate": "$steps.estimate.output", "photos": "$steps.per_photo.output"},
    )
    assert declared.to_dict() == CLAIM
    assert parse({"claim": declared, "other": OTHER}) == parse()


def test_step_to_dict_holds_only_given_keys() -> None:
    """A Step's YAML form has only the keys given; input=None is a literal null."""
    assert fp.Step(model="echo").to_dict() == {"model": "echo"}
    assert fp.Step(model="echo", input=None).to_dict() == {"model": "echo", "input": None}
    assert fp.Step(pipeline="q", optional=True).to_dict() == {"pipeline": "q", "optional": True}


def test_pipeline_to_dict_leaves_out_unset_output() -> None:
    """An unset output is left out (the default applies), null is kept."""
    assert fp.Pipeline("p", steps={}).to_dict() == {"steps": {}}
    assert fp.Pipeline("p", steps={}, output=None).to_dict() == {"steps": {}, "output": None}
    assert repr(UNSET) == "UNSET"


def test_as_raw_passes_dicts_through() -> None:
    """as_raw turns Pipelines into their YAML form and leaves dicts alone."""
    assert as_raw(OTHER) is OTHER
    assert as_raw(fp.Pipeline("p", steps={"a": fp.Step(model="echo")})) == {
        "steps": {"a": {"model": "echo"}}
    }


def test_targets_may_be_a_kinds_mapping() -> None:
    """targets may map names to kinds, including pipelines declared elsewhere."""
    raw = {"p": {"steps": {"a": {"pipeline": "elsewhere"}, "b": {"model": "echo"}}}}
    spec = fp.parse_pipelines(raw, targets={"elsewhere": "pipeline", "echo": "model"})["p"]
    assert spec.steps["a"].kind == "pipeline" and spec.steps["b"].kind == "model"


def test_topological_breaks_ties_by_declaration() -> None:
    """graph.topological keeps declaration order among ready nodes."""
    assert graph.topological({"c": [], "a": ["c"], "b": []}) == ("c", "b", "a")


def test_topological_appends_nodes_on_cycles() -> None:
    """Nodes on a cycle still appear once, at the end (the checks report the cycle)."""
    assert graph.topological({"a": ["b"], "b": ["a"], "c": []}) == ("c", "a", "b")


def test_graph_ignores_unknown_nodes_and_self_loops() -> None:
    """Edges to unknown nodes and self-loops are not counted (reported elsewhere)."""
    needs = {"a": ["ghost", "a"], "b": ["a"]}
    assert graph.in_degrees(needs) == {"a": 0, "b": 1}
    assert graph.cycles(needs) == []


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_package_is_pure(path: Path) -> None:
    """The package imports only the stdlib, jmespath, orjson, jsonschema (a callback's
    answer) and freight's domain (no I/O layers): the stores call it inside their
    transactions."""
    allowed_freight = {"freight.errors", "freight.prediction", "freight.media"}
    for name in _imports(path):
        top = name.split(".")[0]
        if top == "freight":
            assert name in allowed_freight or name.startswith("freight.pipelines"), name
        else:
            assert top in sys.stdlib_module_names or top in ("jmespath", "orjson", "jsonschema"), (
                name
            )
