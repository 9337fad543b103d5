"""The FastAPI application factory."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI

from freight import __version__, metrics
from freight.api import errors
from freight.api.routes import health, models, objects, predictions

if TYPE_CHECKING:
    from collections.abc import Callable

    from freight.agent import Agent
    from freight.service import PredictionService
    from freight.signing import UrlSigner


def create_app(
    service: PredictionService,
    signer: UrlSigner,
    agent: Agent | None = None,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[Any]] | None = None,
) -> FastAPI:
    app = FastAPI(
        title="freight",
        version=__version__,
        lifespan=lifespan,
        description="Asynchronous ML inference: models behind endpoints, a durable queue, "
        "inputs and outputs in object storage.",
    )
    app.state.service = service
    app.state.signer = signer
    app.state.agent = agent
    errors.install(app)
    metrics.install(
        metrics.StateCollector(
            backlog=service.backlog.snapshot,
            replicas=lambda: (
                {name: w.ready_replicas for name, w in agent.workers.items()} if agent else {}
            ),
        )
    )
    for module in (predictions, models, objects, health):
        app.include_router(module.router)
    return app
