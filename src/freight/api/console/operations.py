"""``/ui/batch`` (batch jobs: progress, rate, ETA, failed records, outputs, cancel) and
``/ui/deliveries`` (failing notifications across predictions, redelivered)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from freight.access import Scope
from freight.api.console.pages import Console, ConsoleRoute, back, changing, page
from freight.api.deps import service
from freight.batch.service import doc_of
from freight.batch.view import job_dict
from freight.errors import NotFoundError
from freight.prediction import Prediction

if TYPE_CHECKING:
    from freight.batch.service import BatchService
    from freight.insight import InsightService

router = APIRouter(prefix="/ui", route_class=ConsoleRoute, include_in_schema=False)
PAGE = 50


def _batch(request: Request) -> BatchService:
    found: BatchService | None = request.app.state.batch
    if found is None:
        raise NotFoundError("this server runs no batch jobs", code="batch_not_served")
    return found


async def _job(batch: BatchService, row: Prediction, *, urls: bool) -> dict[str, Any]:
    links = await batch.download_urls(row) if urls else None
    return job_dict(row, doc_of(row), urls=links, now=time.time())


@router.get("/batch")
async def jobs(request: Request, session: Console, after: str | None = None) -> Response:
    """Batch jobs, newest first, with their progress."""
    batch = _batch(request)
    rows = await batch.list(after_id=after or None, limit=PAGE + 1, who=session.who)
    shown = [await _job(batch, row, urls=False) for row in rows[:PAGE]]
    next_url = f"?after={rows[PAGE - 1].id}" if len(rows) > PAGE else None
    return page(request, "batch.html", session, jobs=shown, next_url=next_url)


@router.get("/batch/{job_id}")
async def job(request: Request, session: Console, job_id: str) -> Response:
    """One job: progress, records/s, ETA, failed records, its outputs and error files."""
    batch = _batch(request)
    row = await batch.get(job_id, session.who)
    shown = await _job(batch, row, urls=True)
    notice = request.query_params.get("notice")
    return page(
        request, "batch_job.html", session, job=shown, live=not row.status.terminal, notice=notice
    )


@router.post("/batch/{job_id}/cancel")
async def cancel_job(request: Request, session: Console, job_id: str) -> Response:
    """Cancel the job; what it finished stays in its outputs."""
    await changing(request, session, Scope.BATCH)
    row = await _batch(request).cancel(job_id, session.who)
    return back(f"/ui/batch/{row.id}", "canceled")


def _insight(request: Request) -> InsightService:
    found: InsightService = request.app.state.insight
    return found


@router.get("/deliveries")
async def deliveries(request: Request, session: Console, before: str | None = None) -> Response:
    """Notifications that died, were stopped (410) or wait for a retry, across
    predictions, each with its attempts."""
    found, after = await _insight(request).failing_deliveries(
        session.who, before=before or None, limit=PAGE
    )
    notice = request.query_params.get("notice")
    next_url = f"?before={after}" if after else None
    return page(
        request,
        "deliveries.html",
        session,
        deliveries=found,
        next_url=next_url,
        notice=notice,
        now=time.time(),
    )


@router.post("/deliveries/{delivery_id}/redeliver")
async def redeliver(request: Request, session: Console, delivery_id: str) -> Response:
    """Send the event again now, with its original event id."""
    fields = await changing(request, session, Scope.PREDICT)
    view = await service(request).redeliver(delivery_id, session.who)
    where = fields.get("back", "")
    url = where if where.startswith("/ui/") and "//" not in where else "/ui/deliveries"
    return back(url, f"{view.event_type} event sent again")


__all__ = ["router"]
