"""``/ui`` (the overview) and ``/ui/usage``: each model's and pipeline's replicas,
backlog and last hour; the usage ledger by tenant and model over time."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from freight.api import deps
from freight.api.console import charts
from freight.api.console.pages import Console, ConsoleRoute, page
from freight.errors import InvalidRequestError
from freight.fleet import ModelState
from freight.insight import TargetHour
from freight.usage import tenant_for

if TYPE_CHECKING:
    from freight.insight import InsightService
    from freight.usage import UsageService

router = APIRouter(prefix="/ui", route_class=ConsoleRoute, include_in_schema=False)


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the overview."""

    name: str
    kind: str  # model | pipeline
    state: ModelState | None  # None: this process runs no replicas (freight api)
    hour: TargetHour
    oldest_age_s: float | None
    charts: dict[str, str]


def _row(name: str, kind: str, state: ModelState | None, hour: TargetHour, now: float) -> Row:
    oldest = hour.backlog.oldest_queued_at
    drawn = {
        "throughput": charts.bars(hour.counts, css="bars", title="finished per 2 min"),
        "errors": charts.bars(hour.errors, css="bars errors", title="failed per 2 min"),
        "p99": charts.line(hour.p99s_ms, css="line", title="p99 latency per 2 min"),
    }
    return Row(name, kind, state, hour, None if oldest is None else now - oldest, drawn)


def insight(request: Request) -> InsightService:
    found: InsightService = request.app.state.insight
    return found


@router.get("")
async def overview(request: Request, session: Console) -> Response:
    """Per model and pipeline: replicas, the autoscaler's last decision, backlog, and the
    last hour's throughput, latency and errors."""
    who, now = session.who, time.time()
    system = deps.system(request)
    hour = await insight(request).hour(who, now)
    rows = [
        _row(
            m.spec.name,
            "model",
            m.state,
            hour.targets.get(m.spec.name, TargetHour(m.spec.name)),
            now,
        )
        for m in await system.models()
        if who.may_use(m.spec.name)
    ]
    rows += [
        _row(p.name, "pipeline", None, hour.targets.get(p.name, TargetHour(p.name)), now)
        for p in system.pipelines()
        if who.may_use(p.name)
    ]
    fleet = any(r.state is not None for r in rows)
    return page(
        request, "overview.html", session, rows=rows, sampled=hour.sampled, fleet=fleet, now=now
    )


# -- usage ----------------------------------------------------------------------------

_GROUPS = {"tenant": ("tenant", "target"), "target": ("target",), "kind": ("kind", "target")}


def _day(text: str | None, default: float) -> float:
    if not text:
        return default
    try:
        return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()
    except ValueError:
        raise InvalidRequestError(
            f"{text!r} is not a date (YYYY-MM-DD or YYYY-MM-DDTHH:MM)", code="invalid_time"
        ) from None


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M")


@router.get("/usage")
async def usage(
    request: Request,
    session: Console,
    start: str | None = None,
    end: str | None = None,
    tenant: str | None = None,
) -> Response:
    """The usage ledger per tenant and model over the window, with each line's hours."""
    who, now = session.who, time.time()
    to = _day(end, now)
    since = _day(start, to - 24 * 3600)
    ledger: UsageService = request.app.state.usage
    scoped = tenant_for(who, tenant or None)
    targets = who.targets
    totals = await ledger.report(
        tenant=scoped, start=since, end=to, group_by=("tenant", "target"), targets=targets
    )
    hourly = await ledger.report(
        tenant=scoped, start=since, end=to, group_by=("tenant", "target", "hour"), targets=targets
    )
    hours = int((to - since) // 3600) + 1
    first = since - since % 3600
    series: dict[tuple[str, str], list[float | None]] = {}
    for line in hourly:
        key = (line.tenant or "", line.target or "")
        slot = int(((line.hour or first) - first) // 3600)
        values = series.setdefault(key, [None] * hours)
        if 0 <= slot < hours:
            values[slot] = float(line.count)
    lines: list[dict[str, Any]] = [
        {
            "line": line,
            "chart": charts.bars(series.get((line.tenant or "", line.target or ""), [])),
        }
        for line in totals
    ]
    return page(
        request,
        "usage.html",
        session,
        lines=lines,
        start=_iso(since),
        end=_iso(to),
        tenant=tenant or "",
    )


__all__ = ["router"]
