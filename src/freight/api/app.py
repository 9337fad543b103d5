"""The FastAPI application factories: the whole API, and the probes of a worker."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI

from freight import metrics, tracing
from freight.api import console, docs, errors, openapi
from freight.api.routes import (
    access,
    batch_jobs,
    deliveries,
    events,
    health,
    inference,
    logs,
    models,
    objects,
    pipelines,
    predictions,
    sagemaker,
)
from freight.api.routes import callbacks as callback_routes
from freight.api.routes import chunks as chunk_routes
from freight.api.routes import usage as usage_routes
from freight.api.traced import TraceMiddleware
from freight.sagemaker import SageMakerService
from freight.version import __version__

if TYPE_CHECKING:
    from collections.abc import Callable

    from freight.batch.service import BatchService
    from freight.callbacks import CallbackService
    from freight.insight import InsightService
    from freight.keyring import Keyring
    from freight.service import PredictionService
    from freight.signing import UrlSigner
    from freight.system import SystemService
    from freight.usage import UsageService


def _install_metrics(system: SystemService) -> None:
    metrics.install(
        metrics.StateCollector(
            backlog=system.backlog_snapshot,
            replicas=system.ready_replicas,
            stats=system.queue_stats,
        )
    )


def create_app(
    service: PredictionService,
    system: SystemService,
    signer: UrlSigner,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[Any]] | None = None,
    *,
    batch: BatchService | None = None,
    keyring: Keyring,
    usage: UsageService,
    insight: InsightService | None = None,
    callbacks: CallbackService | None = None,
) -> FastAPI:
    app = FastAPI(
        title="freight",
        version=__version__,
        lifespan=lifespan,
        description="Asynchronous ML inference: models behind endpoints, a durable queue, "
        "inputs and outputs in object storage.",
    )
    app.state.service = service
    app.state.system = system
    app.state.signer = signer
    app.state.batch = batch
    app.state.keyring = keyring
    app.state.usage = usage
    app.state.insight = insight
    app.state.sagemaker = SageMakerService(service)
    app.state.callbacks = callbacks
    app.state.public_url = service.public_url
    errors.install(app)
    _install_metrics(system)
    # routes are matched in order, one regex each and each router's twice (FastAPI
    # finds the router, then the route in it): the hot ones first (real-time predict,
    # SageMaker's invocations, create/get and its long-poll), the docs last
    routers = (
        models,
        sagemaker,
        predictions,
        events,
        inference,
        logs,
        chunk_routes,
        deliveries,
        pipelines,
        batch_jobs,
        access,
        usage_routes,
        callback_routes,
    )
    for module in (*routers, objects, health):
        app.include_router(module.router)
    console.install(app, signer)  # /ui: after the API's routes
    docs.install(app)
    openapi.install(app)
    if tracing.ENABLED:  # off, requests pass no layer at all
        app.add_middleware(TraceMiddleware)
    return app


def create_probe_app(
    system: SystemService,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[Any]] | None = None,
) -> FastAPI:
    """A worker's own HTTP face (``freight worker --port``): ``/healthz``, ``/readyz``
    and ``/metrics`` for Kubernetes probes and Prometheus, nothing else."""
    app = FastAPI(
        title="freight worker",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.system = system
    errors.install(app)
    _install_metrics(system)
    app.include_router(health.router)
    return app
