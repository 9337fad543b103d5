"""A project directory as freight serves it: its models, its pipelines, checked.

Pipelines come from ``freight.yaml`` (``pipelines:``) and from
:class:`freight.Pipeline` objects defined at the top level of the project's
modules; both go through one parser and one set of checks
(:mod:`freight.pipelines.validate`), against the served models, so a fault in
any of them stops the start with every fault listed (``freight check`` lists
them without serving).

Each pipeline is also packed once into the :class:`~freight.pipelines.runs.Bundle`
its runs carry: the pipeline, the pipelines it nests (transitively), the kinds
of every target, and the timeout and attempts of each model it calls, as the
settings resolve them now.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from freight.config import Settings, read_yaml
from freight.errors import FreightError, PipelineDefinitionError
from freight.pipelines import Pipeline, PipelineSpec, check_pipelines, parse_pipelines
from freight.pipelines.declare import as_raw
from freight.pipelines.runs import Bundle
from freight.pipelines.validate import BUILTIN_TARGETS
from freight.registry import ModelSpec, discover

log = logging.getLogger("freight")


@dataclass
class Pipelines:
    """The checked pipelines of a project and the bundle each run starts with."""

    specs: dict[str, PipelineSpec] = field(default_factory=dict)
    bundles: dict[str, str] = field(default_factory=dict)  # name -> Bundle JSON


def declared(project_dir: Path) -> dict[str, Any]:
    """Every pipeline declaration, raw: ``freight.yaml``'s, then Python ones (already
    imported by model discovery); a name declared twice is a fault of its own."""
    raw = dict(read_yaml(project_dir).get("pipelines") or {})
    root = str(project_dir.resolve())
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None) or ""
        if not path.startswith(root) or Path(path).parent != project_dir.resolve():
            continue
        for value in vars(module).values():
            if isinstance(value, Pipeline):
                if value.name in raw and raw[value.name] is not value:
                    raise PipelineDefinitionError(
                        f"pipeline {value.name!r} is declared twice "
                        f"(in freight.yaml and in {Path(path).name}, or in two modules)",
                        pipeline=value.name,
                    )
                raw[value.name] = value
    return raw


def load_pipelines(
    project_dir: Path, models: dict[str, ModelSpec], settings: Settings
) -> Pipelines:
    """Parse and check the project's pipelines; raise one PipelineDefinitionError
    listing every fault."""
    raw = declared(project_dir)
    if settings.models or settings.serve_models:  # some models only: it runs what it can
        raw = _servable(raw, set(models))
    if not raw:
        return Pipelines()
    specs = parse_pipelines(raw, targets=set(models))
    kinds: dict[str, str] = {name: "model" for name in models}
    kinds |= {name: "pipeline" for name in specs}
    kinds |= {target: kind for kind, target in BUILTIN_TARGETS.items()}  # callback, http
    defaults: dict[str, dict[str, float | int | None]] = {
        name: {
            "timeout_s": min(spec.timeout_s or settings.max_run_s, settings.max_run_s),
            "max_attempts": spec.max_attempts or settings.max_attempts,
        }
        for name, spec in models.items()
    }
    # an http step's call is made again after its caller died, as a model's prediction is
    defaults[BUILTIN_TARGETS["http"]] = {"max_attempts": settings.max_attempts}
    plain = {name: as_raw(value) for name, value in raw.items()}
    bundles = {}
    for name in specs:
        reach = _reachable(name, specs)
        targets = {t for p in reach for t in (s.target for s in specs[p].steps.values())}
        bundles[name] = Bundle(
            pipelines={p: plain[p] for p in sorted(reach)},
            targets={t: kinds[t] for t in sorted(targets | reach)},
            models={t: defaults[t] for t in sorted(targets) if t in defaults},
        ).dumps()
    return Pipelines(specs, bundles)


def _servable(raw: dict[str, Any], models: set[str]) -> dict[str, Any]:
    """With ``models:`` listed explicitly (a process serving a subset), the pipelines
    whose models, nested ones' included, are all served here; the others are left
    out with a warning instead of stopping the start."""
    keep = dict(raw)
    while True:
        dropped = {
            name
            for name, value in keep.items()
            if not _targets(as_raw(value)) <= models | set(keep)
        }
        if not dropped:
            return keep
        for name in sorted(dropped):
            log.warning("pipeline %s is not served here: it needs models not in `models:`", name)
            del keep[name]


def _targets(raw: Any) -> set[str]:
    steps = raw.get("steps") if isinstance(raw, dict) else None
    if not isinstance(steps, dict):
        return set()
    return {
        str(step.get("model") or step.get("pipeline"))
        for step in steps.values()
        if isinstance(step, dict) and not isinstance(step.get("kind"), str)  # kind: no target
    }


def _reachable(name: str, specs: dict[str, PipelineSpec]) -> set[str]:
    seen, todo = set(), [name]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo += list(specs[current].nested)
    return seen


def check(project_dir: Path, settings: Settings) -> list[str]:
    """Every fault of a project's models and pipelines, as messages (empty: it serves)."""
    try:
        models = discover(project_dir, settings.models or None)
    except FreightError as exc:
        return [exc.message]
    try:
        raw = declared(project_dir)
    except FreightError as exc:
        return [exc.message]
    return [fault.message for fault in check_pipelines(raw, targets=set(models))]


__all__ = ["Pipelines", "check", "declared", "load_pipelines"]
