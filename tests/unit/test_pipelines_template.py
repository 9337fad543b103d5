"""Templates and conditions: rendering, references, dependency inference, errors."""

from __future__ import annotations

from typing import Any

import pytest

from freight.pipelines.template import (
    Spot,
    Template,
    TemplateError,
    condition,
    expression,
    quote_step_names,
    reference_text,
    references,
    render,
    scan,
    truthy,
)

CTX: dict[str, Any] = {
    "input": {"image": "img.png", "photos": ["p1", "p2"], "claim_id": 7, "n": 3},
    "steps": {
        "damage": {"output": {"severity": "high", "labels": ["dent"]}, "status": "succeeded"},
        "per-photo": {"output": [1, 2], "status": "succeeded"},
        "skipped": {"output": None, "status": "skipped"},
    },
}


@pytest.mark.parametrize("value", [1, 2.5, True, False, None, "plain", "", "a $ inside"])
def test_literals_render_as_themselves(value: Any) -> None:
    """Numbers, booleans, null and strings not starting with $ are literals."""
    assert render(value, CTX) == value


def test_bare_input_is_the_whole_input() -> None:
    """`$input` alone is the run's whole input."""
    assert render("$input", CTX) == CTX["input"]


def test_input_path() -> None:
    """`$input.image` is the JMESPath `input.image`."""
    assert render("$input.image", CTX) == "img.png"


def test_step_output_path() -> None:
    """`$steps.NAME.output…` reads a step's output."""
    assert render("$steps.damage.output.labels", CTX) == ["dent"]
    assert render("$steps.damage.output.labels[0]", CTX) == "dent"


def test_step_status_reference() -> None:
    """`$steps.NAME.status` reads a step's status."""
    assert render("$steps.skipped.status", CTX) == "skipped"


@pytest.mark.parametrize(
    "ref", ["$input.missing", "$input.image.deeper", "$steps.nope.output", "$input.photos[9]"]
)
def test_missing_paths_render_null(ref: str) -> None:
    """A path that does not exist renders null, never an error."""
    assert render(ref, CTX) is None


def test_skipped_step_output_is_null() -> None:
    """A skipped step's output reference is null."""
    assert render("$steps.skipped.output", CTX) is None


@pytest.mark.parametrize(("raw", "out"), [("$$5", "$5"), ("$$$x", "$$x"), ("$$input", "$input")])
def test_double_dollar_is_a_literal_dollar(raw: str, out: str) -> None:
    """`$$…` is a literal string with one `$` dropped."""
    assert render(raw, CTX) == out


def test_nested_dicts_and_lists_render_recursively() -> None:
    """References anywhere inside dicts and lists are replaced, literals kept."""
    template = {
        "a": {"b": ["$input.claim_id", "x", {"c": "$steps.damage.output.severity"}]},
        "d": [1, None, "$$cash"],
    }
    assert render(template, CTX) == {"a": {"b": [7, "x", {"c": "high"}]}, "d": [1, None, "$cash"]}


def test_tuples_render_as_lists() -> None:
    """A tuple (from Python declarations) renders as a JSON list."""
    assert render(("$input.n", 1), CTX) == [3, 1]


def test_item_is_the_current_element() -> None:
    """`$item` reads the element a for_each step runs for."""
    ctx = {**CTX, "item": {"url": "u"}}
    assert render({"photo": "$item.url", "whole": "$item"}, ctx) == {
        "photo": "u",
        "whole": {"url": "u"},
    }


def test_rendering_makes_fresh_containers() -> None:
    """Each render returns new dicts and lists, so mutating one never changes the next."""
    compiled = Template({"a": [1, 2]})
    first = compiled.render(CTX)
    first["a"].append(3)
    assert compiled.render(CTX) == {"a": [1, 2]}


def test_dash_step_names_are_referenced_without_quotes() -> None:
    """`$steps.per-photo.output` works although `-` is no JMESPath identifier character."""
    assert render("$steps.per-photo.output", CTX) == [1, 2]
    assert render('$steps."per-photo".output', CTX) == [1, 2]


def test_quoting_leaves_strings_and_plain_names_alone() -> None:
    """Only unquoted, non-identifier step names are quoted; literals are skipped."""
    assert quote_step_names("steps.a-b.output") == 'steps."a-b".output'
    assert quote_step_names("steps.1st.output") == 'steps."1st".output'
    assert quote_step_names("steps.plain.output") == "steps.plain.output"
    assert quote_step_names("'steps.a-b' == steps.x-y.status") == (
        "'steps.a-b' == steps.\"x-y\".status"
    )
    assert quote_step_names('`"steps.a-b"`') == '`"steps.a-b"`'
    assert quote_step_names("input.steps.a-b") == "input.steps.a-b"


def test_references_are_the_step_names() -> None:
    """references() returns the step names a template reads, from anywhere inside it."""
    template = {"a": "$steps.damage.output", "b": ["$steps.parts.output.labels", "$input"]}
    assert references(template) == {"damage", "parts"}


@pytest.mark.parametrize(
    ("ref", "names"),
    [
        ("$steps.a.output[?x == steps.b.output]", {"a"}),  # the filter reads elements
        ("$steps.a.output | steps.b", {"a"}),  # the right of a pipe reads the left's result
        ("$input.a || steps.b.output | steps.c", {"b"}),
        ("$input.a || input.b.steps.d", set()),
        ("$input.xs[*].steps.c", set()),
        ("$steps.a.output || steps.b.output", {"a", "b"}),
        ("$input.photos[?length(@) > `0`]", set()),
        ("$steps.a-b.output", {"a-b"}),
        ('$steps."q r".output', {"q r"}),
        ("$steps.a", {"a"}),
    ],
)
def test_dependencies_come_from_root_reads_only(ref: str, names: set[str]) -> None:
    """Only fields read from the root of the context are dependencies (as JMESPath evaluates)."""
    assert references(ref) == names


def test_function_arguments_and_multiselects_are_root_reads() -> None:
    """Arguments and multi-select parts are read from the root; `&expr` parts are not."""
    expr = expression("merge(steps.a.output, {k: steps.b.output}) && sort_by(input.x, &steps.c)")
    assert expr.steps == {"a", "b"}
    assert expr.roots == {"steps", "input"}


def test_reads_hold_the_field_paths() -> None:
    """An expression records each root path it reads, down to the step's field."""
    expr = expression("steps.a.output.x[0] && steps.b.status && steps.c")
    assert expr.reads == (("steps", "a", "output", "x"), ("steps", "b", "status"), ("steps", "c"))


def test_current_node_is_a_root_read() -> None:
    """`@` at the root is recorded (so a check can refuse hidden dependencies)."""
    assert expression("@.steps.z").roots == {"@"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        *[(False, False), (None, False), ("", False), ([], False), ({}, False)],
        *[(True, True), (0, True), ("no", True), ([0], True), ({"a": 1}, True), (0.0, True)],
    ],
)
def test_truthiness_follows_jmespath(value: Any, expected: bool) -> None:
    """False, null and empty strings/lists/objects are false; 0 is true (as in JMESPath)."""
    assert truthy(value) is expected


def test_conditions_evaluate_over_the_context() -> None:
    """A `when:` condition is a bare JMESPath expression over the same context."""
    assert condition("steps.damage.output.severity != 'none'", CTX) is True
    assert condition("steps.damage.output.severity == 'none'", CTX) is False
    assert condition("steps.skipped.output", CTX) is False
    assert condition("length(input.photos) > `1`", CTX) is True


def test_syntax_error_raises_with_the_text() -> None:
    """A malformed expression raises TemplateError naming the text."""
    with pytest.raises(TemplateError, match=r"'input\.\[': .*"):
        expression("input.[")


def test_empty_expression_is_a_syntax_error() -> None:
    """An empty condition is malformed, not always-true."""
    with pytest.raises(TemplateError, match="empty"):
        expression("")


def test_unknown_function_raises_at_compile_time() -> None:
    """JMESPath reports unknown functions only when run; we report them when compiled."""
    with pytest.raises(TemplateError, match=r"unknown function nope\(\)"):
        expression("nope(input)")


def test_wrong_argument_count_raises_at_compile_time() -> None:
    """A function called with the wrong number of arguments is malformed."""
    with pytest.raises(TemplateError, match=r"length\(\) takes 1 argument"):
        expression("length(input, input)")


def test_variadic_functions_take_many_arguments() -> None:
    """Variadic functions (merge, not_null) accept any number of arguments."""
    assert expression("not_null(input.a, input.b, input.c)").steps == frozenset()


def test_runtime_error_raises_template_error() -> None:
    """A JMESPath type error while rendering raises TemplateError with the text."""
    with pytest.raises(TemplateError, match=r"input\.n"):
        render("$input.n | length(@)", CTX)


@pytest.mark.parametrize("ref", ["$foo", "$", "$inputs.x", "$ input", "$steps_x"])
def test_references_must_start_at_a_known_root(ref: str) -> None:
    """A `$` string not starting with $input, $steps or $item is refused (hinting at $$)."""
    with pytest.raises(TemplateError, match=r"must start with \$input, \$steps or \$item"):
        reference_text(ref)


def test_reference_text_of_literals_is_none() -> None:
    """Literals (no `$`, or `$$`) have no reference text."""
    assert reference_text("plain") is None
    assert reference_text("$$x") is None
    assert reference_text("$item[0]") == "item[0]"


def test_non_json_values_are_refused() -> None:
    """A set or object inside a template is no JSON value."""
    with pytest.raises(TemplateError, match="set is not a JSON value"):
        Template({"a": {1, 2}})


def test_non_string_keys_are_refused() -> None:
    """Dict keys must be strings, as in JSON."""
    with pytest.raises(TemplateError, match="key 1 is not a string"):
        Template({1: "x"})


def test_expressions_are_compiled_once_per_text() -> None:
    """The same text gives the same compiled expression (the cache)."""
    assert expression("input.some.path") is expression("input.some.path")


def test_scan_reports_every_reference_and_problem() -> None:
    """scan() walks the whole template without stopping at a problem."""
    spots = list(scan({"a": "$input.x", "b": [{1, 2}, "$steps.s"], 3: "x", "c": "$$lit"}, "input"))
    assert spots == [
        Spot("input.a", reference="$input.x"),
        Spot("input.b[0]", problem="set is not a JSON value"),
        Spot("input.b[1]", reference="$steps.s"),
        Spot("input", problem="key 3 is not a string"),
    ]


def test_template_roots_and_steps() -> None:
    """A compiled template knows the roots and steps it reads."""
    compiled = Template({"a": "$input.x", "b": "$steps.s.output", "c": "$item"})
    assert compiled.roots == {"input", "steps", "item"}
    assert compiled.steps == {"s"}
