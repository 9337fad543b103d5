"""Declaring pipelines in Python: ``freight.Pipeline`` and ``freight.Step``.

For users who prefer code to ``freight.yaml``. A declaration is only data: it is
turned into the very dict ``freight.yaml`` would hold (:meth:`Pipeline.to_dict`),
so both kinds go through one parser and one set of checks, and a Python pipeline
reports its faults exactly as a YAML one does. Nothing is checked here, so that
``freight check`` can list every fault at once instead of the first one raised.

    claim = freight.Pipeline(
        "claim-estimate",
        steps={
            "damage": freight.Step(model="damage-classifier", input="$input.image"),
            "estimate": freight.Step(
                model="estimator",
                input={"damage": "$steps.damage.output"},
                when="steps.damage.output.severity != 'none'",
            ),
        },
        output="$steps.estimate.output",
    )
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from freight.pipelines import catch, retry


#: a template left out (``input`` of a step: the run's whole input; ``output`` of a
#: pipeline: every step's output by name); distinct from None, a literal null
class _Unset:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


@dataclass(frozen=True, slots=True)
class Step:
    """One step: a model or a nested pipeline (or a built-in ``kind``: callback, http),
    with its input template and options."""

    model: str | None = None
    pipeline: str | None = None
    kind: str | None = None  # "callback" | "http": a step that runs no target
    input: Any = UNSET
    when: str | None = None
    for_each: str | None = None
    max_concurrency: int | None = None
    optional: bool = False
    timeout_s: float | None = None
    max_attempts: int | None = None
    # run again on failure: {"on": [...], "max_attempts", "interval_s", "backoff",
    # "max_interval_s", "jitter"} (freight.pipelines.retry)
    retry: Mapping[str, Any] | None = None
    # hand a failure on: [{"on": [...], "then": STEP} | {"on": [...], "default": V}]
    # (freight.pipelines.catch); ``default`` alone stands in for any failure
    catch: list[Mapping[str, Any]] | None = None
    default: Any = UNSET
    # for_each only: how many failed elements the step survives ({"count"} | {"percent"})
    tolerate: Mapping[str, Any] | None = None
    # kind: callback
    heartbeat_s: float | None = None
    schema: Mapping[str, Any] | None = None  # a JSON Schema the answer must satisfy
    # kind: http (the body is ``input``)
    method: str | None = None
    url: str | None = None
    headers: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The ``freight.yaml`` form: only the keys that were given."""
        out: dict[str, Any] = {}
        for spec in fields(self):
            value = getattr(self, spec.name)
            templates = spec.name in ("input", "default")  # None there is a literal null
            if value is UNSET or (value is None and not templates):
                continue
            if spec.name == "optional" and not value:
                continue
            if isinstance(value, Mapping):
                value = dict(value)
            elif spec.name == "catch":
                value = [dict(entry) for entry in value]
            out[spec.name] = value
        return out


@dataclass(frozen=True, slots=True)
class Pipeline:
    """A named DAG of steps, its output template and an optional whole-run timeout."""

    name: str
    steps: Mapping[str, Step | Mapping[str, Any]] = field(default_factory=dict)
    output: Any = UNSET
    timeout_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The ``freight.yaml`` form (the value under ``pipelines: NAME:``)."""
        steps = {
            name: step.to_dict() if isinstance(step, Step) else step
            for name, step in self.steps.items()
        }
        out: dict[str, Any] = {"steps": steps}
        if self.output is not UNSET:
            out["output"] = self.output
        if self.timeout_s is not None:
            out["timeout_s"] = self.timeout_s
        return out


def as_raw(value: Any) -> Any:
    """A pipeline's ``freight.yaml`` form, whether it was declared in YAML or in Python
    (``{p.name: p for p in declared}`` can be parsed with the YAML section merged in)."""
    if isinstance(value, Pipeline):
        return value.to_dict()
    return catch.with_yaml_on(retry.with_yaml_on(value))
