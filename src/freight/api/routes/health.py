"""Liveness and readiness probes."""

from __future__ import annotations

import contextlib

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from freight import metrics
from freight.api import deps
from freight.api.errors import error_response
from freight.api.render import json_response
from freight.errors import StoreUnavailableError

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> Response:
    """The process is up and serving HTTP."""
    return json_response({"status": "ok"})


@router.get("/metrics", response_class=Response)
async def prometheus_metrics(request: Request) -> Response:
    """Prometheus exposition: counters, timings, backlog and ready replicas."""
    with contextlib.suppress(StoreUnavailableError):  # a scrape still gets the counters
        await deps.service(request).backlog.fresh()
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    """The store answers and (when this process runs an agent) replicas are up."""
    try:
        await deps.service(request).store.ping()
    except StoreUnavailableError as exc:
        return error_response(503, exc.code, exc.message)
    agent = deps.agent(request)
    if agent is not None:
        missing = [
            name
            for name, worker in agent.workers.items()
            if worker.spec.replicas.min > 0 and worker.ready_replicas == 0
        ]
        if missing:
            return error_response(
                503, "not_ready", "models without a ready replica", {"models": missing}
            )
    return json_response({"status": "ready"})
