"""What a pipeline needs of its input: whether its templates read *into* it.

A run's input reads in templates exactly like an inline one when it is JSON the
service could parse and keep on the row (any JSON body up to ``max_json_bytes``,
sent inline, uploaded or named by ``input_uri``). Any other input — bytes, or
JSON too large to keep inline — is an object reference
(``{"object": "freight://…", …}``), which a step can take whole (``$input``) but
which has no fields to read. A pipeline that reads a field, element or condition
of its input (``$input.rows``, ``input[0]``, ``when: "input.x > 1"``, ``for_each:
"$input"``), directly or through a nested pipeline it hands its whole input to,
cannot run on such an input: the service refuses it up front (415, 413) rather
than let every such template read null.
"""

from __future__ import annotations

from collections.abc import Callable

from freight.pipelines.spec import PipelineSpec, StepSpec
from freight.pipelines.template import Expression, Template


def _bare_input(expr: Expression) -> bool:
    """``$input`` itself (the reference taken whole), not a read into it."""
    parsed: dict[str, object] = expr.parsed.parsed
    return parsed.get("type") == "field" and parsed.get("value") == "input"


def _reads_into(expressions: list[Expression], *, whole_ok: bool) -> bool:
    for expr in expressions:
        if "input" not in expr.roots:
            continue
        if not (whole_ok and _bare_input(expr)):
            return True
    return False


def _passes_whole_input(template: Template) -> bool:
    """Whether the template is exactly ``$input`` (a nested run gets the input as is)."""
    found = template.expressions
    return isinstance(template.source, str) and len(found) == 1 and _bare_input(found[0])


def _step_reads_into(
    step: StepSpec, spec_for: Callable[[str], PipelineSpec], seen: frozenset[str]
) -> bool:
    if _reads_into(step.input_template.expressions, whole_ok=True):
        return True
    extras = [e for e in (step.when_expression, step.for_each_expression) if e is not None]
    if _reads_into(extras, whole_ok=False):
        return True
    if step.kind == "pipeline" and _passes_whole_input(step.input_template):
        return reads_into_input(spec_for(step.target), spec_for, seen)
    return False


def reads_into_input(
    spec: PipelineSpec,
    spec_for: Callable[[str], PipelineSpec],
    seen: frozenset[str] = frozenset(),
) -> bool:
    """Whether a run of ``spec`` reads into its input (see the module docstring);
    ``spec_for`` names the pipelines it nests."""
    if spec.name in seen:  # checked pipelines never nest themselves; guard anyway
        return False
    seen = seen | {spec.name}
    if _reads_into(spec.output_template.expressions, whole_ok=True):
        return True
    return any(_step_reads_into(step, spec_for, seen) for step in spec.steps.values())


__all__ = ["reads_into_input"]
