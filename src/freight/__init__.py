"""freight: self-hosted asynchronous ML inference.

The model contract is imported eagerly (runner processes need only it); the
clients and the pipeline declarations are imported on first use so that a
replica never loads the HTTP stack or JMESPath.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from freight.model import (
    Batching,
    File,
    Model,
    Payload,
    PredictionContext,
    Replicas,
    Resources,
    context,
    contexts,
)
from freight.tensors import Tensor
from freight.version import __version__ as __version__

if TYPE_CHECKING:
    from freight.client import AsyncClient, Client
    from freight.pipelines.declare import Pipeline, Step

__all__ = [
    "AsyncClient",
    "Batching",
    "Client",
    "File",
    "Model",
    "Payload",
    "Pipeline",
    "PredictionContext",
    "Replicas",
    "Resources",
    "Step",
    "Tensor",
    "context",
    "contexts",
]


def __getattr__(name: str) -> Any:
    if name in ("Client", "AsyncClient"):
        from freight import client

        return getattr(client, name)
    if name in ("Pipeline", "Step"):
        from freight.pipelines import declare

        return getattr(declare, name)
    raise AttributeError(name)
