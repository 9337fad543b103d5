"""A step's catch (``catch:`` and ``default:`` of a pipeline step), like Step Functions'
``Catch``: a failed step hands its error on, and the run goes on.

Two forms, tried in order once the step's retries (``retry:``) are spent:

* ``catch: [{on: [codes], then: STEP}]`` — the step named by ``then`` (its *handler*)
  runs with the error readable as ``$steps.X.error`` (``{code, message}``); its output
  stands in for the failed step's, so the failed step's dependants wait for the handler
  and read its output as ``$steps.X.output``. A handler runs only when its step hands
  it an error: when that step succeeds (or fails with a code no entry covers) the
  handler is skipped. A handler is one step's, and a step's only role is to handle.
* ``catch: [{on: [codes], default: VALUE}]`` or, for every code, ``default: VALUE``
  on the step — the failed step's output is that value, a template that may read
  ``$steps.X.error`` as well as what the step's input may read.

``on`` left out covers every code. A canceled step is never caught (the run is
ending), nor is a step whose handler itself failed (the handler is judged on its
own ``catch``, ``optional`` and so on). The failed step keeps its status
(``failed``) and its error for everyone to see; only what it passes on changes.

Pure: parsed and checked here (:func:`check_catch`), applied by ``plan.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from freight.pipelines.template import Template
from freight.prediction import ErrorCode

#: the keys of one ``catch:`` entry
CATCH_KEYS = frozenset({"on", "then", "default"})
#: the codes a catch may cover (a canceled step is never caught)
CATCHABLE = frozenset(code.value for code in ErrorCode) - {ErrorCode.CANCELED}


@dataclass(frozen=True, slots=True)
class Catcher:
    """One entry: the codes it covers (None: all) and where the error goes."""

    on: frozenset[str] | None
    then: str | None = None  # the handler step, or
    default: Any = field(default=None, hash=False)  # the value declared (a template)
    default_template: Template | None = field(default=None, compare=False, hash=False)

    def covers(self, code: str | None) -> bool:
        return code != ErrorCode.CANCELED and (self.on is None or code in self.on)


def _on(raw: Mapping[Any, Any]) -> Any:
    """YAML 1.1 (PyYAML) reads a bare ``on:`` key as the boolean true."""
    return raw.get("on", raw.get(True))


def entries(raw: Mapping[str, Any]) -> list[Mapping[Any, Any]]:
    """A step's catch entries as declared, its ``default:`` last (an entry for all)."""
    listed = raw.get("catch") or []
    out = [e for e in listed if isinstance(e, Mapping)] if isinstance(listed, list) else []
    if "default" in raw:
        out.append({"default": raw["default"]})
    return out


def check_catch(raw: Mapping[str, Any]) -> list[str]:
    """Every fault of a step's ``catch:`` (and ``default:``), in words."""
    listed = raw.get("catch")
    if listed is None:
        return []
    if not isinstance(listed, list) or not listed:
        return [f"catch must be a list of {{on, then}} or {{on, default}}, got {listed!r}"]
    faults: list[str] = []
    for index, entry in enumerate(listed):
        where = f"catch[{index}]"
        if not isinstance(entry, Mapping):
            faults.append(f"{where} must be a mapping, got {type(entry).__name__}")
            continue
        for key in entry:
            if key is not True and key not in CATCH_KEYS:
                expected = ", ".join(sorted(CATCH_KEYS))
                faults.append(f"{where}: unknown key {key!r} (expected {expected})")
        if ("then" in entry) == ("default" in entry):
            faults.append(f"{where} needs exactly one of then: or default:")
        if "then" in entry and not isinstance(entry["then"], str):
            faults.append(f"{where}.then must name a step, got {entry['then']!r}")
        on = _on(entry)
        if on is not None:
            if not isinstance(on, list) or not on:
                faults.append(f"{where}.on must be a list of error codes, got {on!r}")
            else:
                unknown = sorted(str(c) for c in on if c not in CATCHABLE)
                if unknown:
                    faults.append(
                        f"{where}.on: {unknown} cannot be caught "
                        f"(codes: {', '.join(sorted(CATCHABLE))})"
                    )
    return faults


def parse_catch(raw: Mapping[str, Any]) -> tuple[Catcher, ...]:
    """The entries of a step that passed :func:`check_catch`, in the order tried."""
    out = []
    for entry in entries(raw):
        on = _on(entry)
        if "then" in entry:
            out.append(Catcher(frozenset(on) if on else None, then=entry["then"]))
        else:
            value = entry["default"]
            out.append(
                Catcher(
                    frozenset(on) if on else None, default=value, default_template=Template(value)
                )
            )
    return tuple(out)


def catcher_for(catchers: tuple[Catcher, ...], code: str | None) -> Catcher | None:
    """The first entry covering a failure with ``code``, if any."""
    return next((c for c in catchers if c.covers(code)), None)


def with_yaml_on(pipeline: Any) -> Any:
    """A pipeline's raw form with each catch entry's ``on`` key as written (YAML 1.1
    made it ``true``), so that it serialises as JSON in a run's bundle."""
    if not isinstance(pipeline, Mapping) or not isinstance(pipeline.get("steps"), Mapping):
        return pipeline

    def mended(step: Any) -> Any:
        if not isinstance(step, Mapping) or not isinstance(step.get("catch"), list):
            return step
        fixed = [
            {("on" if k is True else k): v for k, v in e.items()} if isinstance(e, Mapping) else e
            for e in step["catch"]
        ]
        return {**step, "catch": fixed}

    if not any(
        isinstance(s, Mapping)
        and isinstance(s.get("catch"), list)
        and any(isinstance(e, Mapping) and True in e for e in s["catch"])
        for s in pipeline["steps"].values()
    ):
        return pipeline
    return {**pipeline, "steps": {n: mended(s) for n, s in pipeline["steps"].items()}}


__all__ = [
    "CATCHABLE",
    "CATCH_KEYS",
    "Catcher",
    "catcher_for",
    "check_catch",
    "entries",
    "parse_catch",
    "with_yaml_on",
]
