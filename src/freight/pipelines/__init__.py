"""Pipelines: ensembles of models as DAGs, declared in ``freight.yaml`` or Python.

This package is the pure core: declarations (:mod:`declare`), checks
(:mod:`validate`), specs (:mod:`spec`), templates (:mod:`template`), and the
"what next" decision and the Mermaid graph (:mod:`plan`). It does
no I/O and imports only the standard library, ``jmespath``, ``orjson``, ``jsonschema``
(a callback step's answer, :mod:`callback`) and freight's domain,
so the durable layer can call it inside a transaction and tests need no store.
"""

from __future__ import annotations

from freight.pipelines.declare import Pipeline, Step
from freight.pipelines.plan import (
    Decision,
    Outcome,
    Start,
    StepError,
    StepState,
    StepStatus,
    abort,
    fan_in,
    initial_states,
    mermaid,
    next_elements,
    plan,
    step_status,
    unblock,
    unfinished_counts,
)
from freight.pipelines.spec import PipelineSpec, StepSpec, parse_pipelines
from freight.pipelines.template import TemplateError, condition, references, render
from freight.pipelines.validate import TargetKind, Targets, check_pipelines, raise_for

__all__ = [
    "Decision",
    "Outcome",
    "Pipeline",
    "PipelineSpec",
    "Start",
    "Step",
    "StepError",
    "StepSpec",
    "StepState",
    "StepStatus",
    "TargetKind",
    "Targets",
    "TemplateError",
    "abort",
    "check_pipelines",
    "condition",
    "fan_in",
    "initial_states",
    "mermaid",
    "next_elements",
    "parse_pipelines",
    "plan",
    "raise_for",
    "references",
    "render",
    "step_status",
    "unblock",
    "unfinished_counts",
]
