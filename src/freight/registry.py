"""Model discovery: which ``freight.Model`` classes a project serves.

``freight serve DIR`` serves every Model subclass *defined* in the ``*.py``
modules at the top of DIR, unless ``freight.yaml`` lists them explicitly
(``models: ["module:Class", …]``). Runner processes import a model by the same
``module:Class`` reference, with DIR on ``sys.path``.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from dataclasses import dataclass, field
from pathlib import Path

from freight.errors import ModelDefinitionError
from freight.model import Batching, Model, Replicas, Resources
from freight.tensors import Tensor


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What the server needs to know of a model without loading it."""

    name: str
    ref: str  # "module:Class"
    input_kind: str
    batching: Batching
    replicas: Replicas
    timeout_s: float | None
    max_attempts: int | None
    resources: Resources = field(default_factory=Resources)  # per replica; default: no GPU
    # a tensor model's declared tensors (the Open Inference Protocol's metadata)
    inputs: tuple[Tensor, ...] = ()
    outputs: tuple[Tensor, ...] = ()
    # predict is a generator: its chunks are streamed (freight.streaming)
    streams: bool = False
    stream_output: str = "concat"

    @classmethod
    def of(cls, model: type[Model], ref: str) -> ModelSpec:
        model.validate()
        return cls(
            name=model.model_name(),
            ref=ref,
            input_kind=model.input_kind(),
            batching=model.batching,
            replicas=model.replicas,
            timeout_s=model.timeout_s,
            max_attempts=model.max_attempts,
            resources=model.resources,
            inputs=tuple(model.inputs),
            outputs=tuple(model.outputs),
            streams=model.streams(),
            stream_output=model.stream_output,
        )


def _add_to_path(project_dir: Path) -> None:
    path = str(project_dir.resolve())
    if path not in sys.path:
        sys.path.insert(0, path)


def import_model(ref: str, project_dir: Path) -> type[Model]:
    """Import ``module:Class`` from the project directory."""
    _add_to_path(project_dir)
    module_name, _, class_name = ref.partition(":")
    if not module_name or not class_name:
        raise ModelDefinitionError(f"model reference {ref!r} is not 'module:Class'", ref=ref)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelDefinitionError(f"cannot import {module_name!r}: {exc}", ref=ref) from exc
    obj = getattr(module, class_name, None)
    if not (inspect.isclass(obj) and issubclass(obj, Model)):
        raise ModelDefinitionError(f"{ref!r} is not a freight.Model subclass", ref=ref)
    return obj


def _discover_refs(project_dir: Path) -> list[str]:
    _add_to_path(project_dir)
    refs: list[str] = []
    for path in sorted(project_dir.glob("*.py")):
        try:
            module = importlib.import_module(path.stem)
        except Exception as exc:
            raise ModelDefinitionError(
                f"cannot import {path}: {type(exc).__name__}: {exc}", path=str(path)
            ) from exc
        for name, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, Model)
                and obj is not Model
                and obj.__module__ == module.__name__
                and not inspect.isabstract(obj)
                and not name.startswith("_")
            ):
                refs.append(f"{path.stem}:{name}")
    return refs


def discover(project_dir: Path, refs: list[str] | None = None) -> dict[str, ModelSpec]:
    """Specs by model name; two models with one name is an error naming both."""
    if not project_dir.is_dir():
        raise ModelDefinitionError(f"project directory {project_dir} does not exist")
    specs: dict[str, ModelSpec] = {}
    for ref in refs or _discover_refs(project_dir):
        spec = ModelSpec.of(import_model(ref, project_dir), ref)
        if spec.name in specs:
            raise ModelDefinitionError(
                f"two models are named {spec.name!r}: {specs[spec.name].ref} and {ref}",
                name=spec.name,
                refs=[specs[spec.name].ref, ref],
            )
        specs[spec.name] = spec
    return specs
