"""Templates and conditions: JSON values with JMESPath references, evaluated purely.

A template is any JSON value. A string starting with ``$`` is a reference: the rest
is a JMESPath expression over the run's context ``{"input": …, "steps": {name:
{"output": …, "status": …}}, "item": …}``, whose root must be ``input``, ``steps``
or ``item`` (``$input.image`` is ``input.image``). ``$$…`` is a literal string that
starts with ``$`` (one ``$`` dropped); every other value is a literal, and dicts and
lists render recursively. A condition (``when:``) is a bare JMESPath expression over
the same context, true unless it yields false, null or an empty string/list/object.

Dependencies are read from the parsed JMESPath tree, not the text: only fields read
from the root of the context count (``steps.a.output[?x == steps.b]`` reads step
``a``; the filter's ``steps.b`` is a field of each element, as JMESPath evaluates it).

Step names may hold ``-`` or start with a digit, which JMESPath identifiers may not,
so ``steps.per-photo`` is quoted to ``steps."per-photo"`` before parsing (it would
otherwise be a syntax error, so no valid expression changes meaning).

Expressions are compiled once per text (an LRU cache); a :class:`Template` compiles
a whole JSON value once, so rendering it per step or per element only evaluates.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import jmespath
from jmespath import exceptions as jmespath_errors
from jmespath.functions import Functions

#: the names a reference or condition may read at the root of the context
ROOTS = frozenset({"input", "steps", "item"})
#: what a step exposes to references (``$steps.NAME.output``, ``.status``, and ``.error``:
#: ``{code, message}`` once it failed, else null)
STEP_FIELDS = frozenset({"output", "status", "error"})

_FUNCTIONS: Mapping[str, Any] = Functions().FUNCTION_TABLE
#: node types evaluated head first: only their first child sees the current value
_SPINE = frozenset(
    {"index_expression", "projection", "value_projection", "filter_projection", "flatten", "pipe"}
)
_REFERENCE = re.compile(r"(input|steps|item)(?![A-Za-z0-9_])")
_STEP_ACCESS = re.compile(r"steps\.([a-z0-9_-]+)")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class TemplateError(ValueError):
    """A template or condition that cannot be compiled or evaluated (the text is in it)."""


@dataclass(frozen=True, slots=True)
class Expression:
    """One compiled JMESPath expression and the root paths it reads."""

    text: str
    parsed: Any  # jmespath.parser.ParsedResult
    reads: tuple[tuple[str, ...], ...]

    @property
    def roots(self) -> frozenset[str]:
        """Names read at the root of the context (``input``, ``steps``, ``item``, ...)."""
        return frozenset(path[0] for path in self.reads)

    @property
    def steps(self) -> frozenset[str]:
        """Step names read, as ``steps.NAME``: the dependencies this expression adds."""
        return frozenset(p[1] for p in self.reads if p[0] == "steps" and len(p) > 1)

    def search(self, context: Mapping[str, Any]) -> Any:
        """Evaluate; a missing path is null, a runtime error (bad function arg) raises."""
        try:
            return self.parsed.search(context)
        except jmespath_errors.JMESPathError as exc:
            raise TemplateError(f"{self.text!r}: {_first_line(exc)}") from exc


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0].removesuffix(" for expression:").rstrip(",: ")


def quote_step_names(text: str) -> str:
    """Quote ``steps.NAME`` where NAME is no JMESPath identifier (``per-photo``, ``1st``).

    String literals (``'…'``, ``"…"``, backquoted JSON) are skipped, and a ``steps``
    that is itself a field of something (``input.steps``) is left alone.
    """
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in "'\"`":
            end = _closing(text, i)
            out.append(text[i:end])
            i = end
            continue
        match = _STEP_ACCESS.match(text, i)
        before = text[i - 1] if i else " "
        if match and not (before.isalnum() or before in "_.") and not _plain(match.group(1)):
            out.append(f'steps."{match.group(1)}"')
            i = match.end()
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _plain(name: str) -> bool:
    return _IDENTIFIER.fullmatch(name) is not None


def _closing(text: str, start: int) -> int:
    """Index just past the quote closing the one at ``start`` (backslash escapes)."""
    quote, i = text[start], start + 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == quote:
            return i + 1
        i += 1
    return len(text)


@functools.lru_cache(maxsize=4096)
def expression(text: str) -> Expression:
    """Compile a JMESPath expression (cached by text); raises TemplateError on bad syntax
    or an unknown function / wrong argument count (JMESPath reports those only when run)."""
    try:
        parsed = jmespath.compile(quote_step_names(text))
    except jmespath_errors.JMESPathError as exc:
        raise TemplateError(f"{text!r}: {_first_line(exc)}") from exc
    problem = _function_problem(parsed.parsed)
    if problem:
        raise TemplateError(f"{text!r}: {problem}")
    return Expression(text=text, parsed=parsed, reads=tuple(dict.fromkeys(_reads(parsed.parsed))))


def _function_problem(node: Mapping[str, Any]) -> str | None:
    if node["type"] == "function_expression":
        name, args = node["value"], node["children"]
        spec = _FUNCTIONS.get(name)
        if spec is None:
            return f"unknown function {name}()"
        signature = spec["signature"]
        variadic = bool(signature) and signature[-1].get("variadic", False)
        if len(args) < len(signature) or (len(args) > len(signature) and not variadic):
            return f"{name}() takes {len(signature)} argument(s), got {len(args)}"
    for child in node["children"]:
        problem = _function_problem(child)
        if problem:
            return problem
    return None


def _lead(node: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The field path a chain reads from its root (``steps.a.output[0]`` → steps, a,
    output), or None when the chain does not start at a field of the root."""
    kind = node["type"]
    if kind == "field":
        return (node["value"],)
    if kind == "current":
        return ("@",)
    if kind in _SPINE:
        return _lead(node["children"][0])
    if kind != "subexpression":
        return None
    head, *rest = node["children"]
    path = _lead(head)
    if path is None:
        return None
    for child in rest:
        more = _lead(child)
        if more is None or more[0] == "@":
            break
        path += more
        if child["type"] != "field":
            break
    return path


def _reads(node: Mapping[str, Any]) -> Iterator[tuple[str, ...]]:
    """Every field path read from the root of the context (what a dependency is)."""
    path = _lead(node)
    if path is not None:
        yield path
        return
    kind = node["type"]
    children = node["children"]
    if kind in _SPINE or kind == "subexpression":
        children = children[:1]  # the rest sees the head's result, not the root
    for child in children:
        if child["type"] != "expref":  # &expr is applied to each element
            yield from _reads(child)


def reference_text(value: str) -> str | None:
    """The JMESPath text of a reference string (``$input.x`` → ``input.x``); None for a
    literal (``$$x`` or no ``$``). A ``$`` string with no valid root raises."""
    if not value.startswith("$") or value.startswith("$$"):
        return None
    text = value[1:]
    if not _REFERENCE.match(text):
        raise TemplateError(
            f"reference {value!r} must start with $input, $steps or $item "
            "(write $$ for a literal string starting with $)"
        )
    return text


@dataclass(frozen=True, slots=True)
class Spot:
    """One thing found while scanning a raw template: a reference, or a problem."""

    where: str  # e.g. ``input.damage[0]``
    reference: str | None = None  # the reference string as written (``$steps.a.output``)
    problem: str | None = None  # why this part is no JSON value


def scan(template: Any, where: str) -> Iterator[Spot]:
    """Every reference and every non-JSON part of a raw template, in order, without
    stopping at the first problem (so a check can report them all)."""
    if isinstance(template, str):
        if template.startswith("$") and not template.startswith("$$"):
            yield Spot(where, reference=template)
    elif isinstance(template, Mapping):
        for key, value in template.items():
            if not isinstance(key, str):
                yield Spot(where, problem=f"key {key!r} is not a string")
            else:
                yield from scan(value, f"{where}.{key}")
    elif isinstance(template, list | tuple):
        for index, value in enumerate(template):
            yield from scan(value, f"{where}[{index}]")
    elif not (template is None or isinstance(template, bool | int | float)):
        yield Spot(where, problem=f"{type(template).__name__} is not a JSON value")


class Template:
    """A JSON template compiled once: render it against many contexts."""

    __slots__ = ("_node", "expressions", "source")

    def __init__(self, source: Any) -> None:
        self.source = source
        self.expressions: list[Expression] = []
        self._node = self._compile(source)

    def _compile(self, value: Any) -> Any:
        if isinstance(value, str):
            text = reference_text(value)
            if text is None:
                return value[1:] if value.startswith("$$") else value
            compiled = expression(text)
            self.expressions.append(compiled)
            return compiled
        if isinstance(value, Mapping):
            return {_key(k): self._compile(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._compile(v) for v in value]
        if value is None or isinstance(value, bool | int | float):
            return value
        raise TemplateError(f"{type(value).__name__} is not a JSON value")

    @property
    def steps(self) -> frozenset[str]:
        """The step names this template references."""
        return frozenset().union(*(e.steps for e in self.expressions))

    @property
    def roots(self) -> frozenset[str]:
        """The root names this template reads (``input``, ``steps``, ``item``)."""
        return frozenset().union(*(e.roots for e in self.expressions))

    def render(self, context: Mapping[str, Any]) -> Any:
        """The template's value in this context: fresh dicts and lists, references
        replaced by their values (null where the path is missing)."""
        return _render(self._node, context)


def _key(key: Any) -> str:
    if not isinstance(key, str):
        raise TemplateError(f"key {key!r} is not a string")
    return key


def _render(node: Any, context: Mapping[str, Any]) -> Any:
    if isinstance(node, Expression):
        return node.search(context)
    if isinstance(node, dict):
        return {k: _render(v, context) for k, v in node.items()}
    if isinstance(node, list):
        return [_render(v, context) for v in node]
    return node


def truthy(value: Any) -> bool:
    """JMESPath truth: false, null and empty strings, lists and objects are false (0 is true)."""
    if value is None or value is False:
        return False
    if isinstance(value, str | list | dict):
        return len(value) > 0
    return True


def render(template: Any, context: Mapping[str, Any]) -> Any:
    """Render a raw template (expressions are cached by text, so this stays cheap)."""
    return Template(template).render(context)


def references(template: Any) -> set[str]:
    """The step names a raw template references."""
    return set(Template(template).steps)


def condition(expr: str, context: Mapping[str, Any]) -> bool:
    """Evaluate a ``when:`` condition (a bare JMESPath expression, no ``$``)."""
    return truthy(expression(expr).search(context))
