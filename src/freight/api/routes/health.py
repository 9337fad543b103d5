"""Liveness, readiness and the Prometheus exposition."""

from __future__ import annotations

import contextlib

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from freight import metrics
from freight.api import deps
from freight.api.errors import responses
from freight.api.render import json_response
from freight.errors import NotReadyError, StoreUnavailableError

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> Response:
    """The process is up and serving HTTP."""
    return json_response({"status": "ok"})


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
async def prometheus_metrics(request: Request, _who: deps.Scraper) -> Response:
    """Prometheus exposition: counters, timings, backlog and ready replicas (with keys:
    a key with the ``metrics`` scope)."""
    with contextlib.suppress(StoreUnavailableError):  # a scrape still gets the counters
        await deps.system(request).refresh_backlog()
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


@router.get("/readyz", responses=responses(NotReadyError))
async def readyz(request: Request) -> Response:
    """The store answers and (where this process runs replicas) every model has one."""
    await deps.system(request).check_ready()
    return json_response({"status": "ready"})
