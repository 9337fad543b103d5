"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from freight.api import deps
from freight.api.errors import error_response
from freight.api.render import json_response
from freight.errors import StoreUnavailableError

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> Response:
    """The process is up and serving HTTP."""
    return json_response({"status": "ok"})


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
