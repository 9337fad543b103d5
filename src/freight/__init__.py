"""freight: self-hosted asynchronous ML inference.

The model contract is imported eagerly (runner processes need only it); the
clients are imported on first use so that a replica never loads the HTTP stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from freight.model import Batching, File, Model, Payload, Replicas

if TYPE_CHECKING:
    from freight.client import AsyncClient, Client

__all__ = ["AsyncClient", "Batching", "Client", "File", "Model", "Payload", "Replicas"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in ("Client", "AsyncClient"):
        from freight import client

        return getattr(client, name)
    raise AttributeError(name)
