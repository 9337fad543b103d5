"""``/v1/usage``: what each tenant and model cost, from the usage ledger.

A caller sees its own tenant's usage (of its models only, for a key limited to
some); a key with the ``admin`` scope sees every tenant's, or one's with
``?tenant=`` (``freight.usage.tenant_for``).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from starlette.responses import Response

from freight.access import Principal, Scope
from freight.api import deps
from freight.api.errors import responses
from freight.api.render import json_response
from freight.api.schemas import UsageReport
from freight.errors import ForbiddenError
from freight.ledger import UsageLine, group_keys, window
from freight.usage import DEFAULT_GROUPS, UsageService, tenant_for
from freight.views import iso

router = APIRouter(tags=["usage"])

#: the window of a report that names none: the last 24 hours (in whole hours)
DEFAULT_WINDOW_S = 24 * 3600.0
_GROUP = "tenant|target|model|pipeline|kind|hour|status"
GROUP_BY_PATTERN = rf"^ *(({_GROUP}) *(, *({_GROUP}) *)*)?$"
_EPOCH = re.compile(r"^-?\d+(\.\d+)?$")

#: the caller: any key with the read scope (whose tenant and models bound what it sees)
viewer = deps.principal(Scope.READ)
Viewer = Annotated[Principal, Depends(viewer)]


def usage_service(request: Request) -> UsageService:
    """The app's usage service (``app.state.usage``, set where the app is built)."""
    svc: UsageService = request.app.state.usage
    return svc


def _invalid(name: str, message: str, value: str | None) -> RequestValidationError:
    """A 422 ``validation_error`` in the shape FastAPI gives a query parameter's."""
    return RequestValidationError(
        [{"loc": ("query", name), "msg": message, "type": "value_error", "input": value}]
    )


def parse_time(name: str, text: str) -> float:
    """Epoch seconds from ``text``: epoch seconds, or ISO 8601 (UTC unless it says)."""
    value = text.strip()
    try:
        if _EPOCH.match(value):
            at = float(value)
        else:
            moment = datetime.fromisoformat(value)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            at = moment.timestamp()
    except (ValueError, OverflowError):
        at = math.nan
    if not math.isfinite(at):
        raise _invalid(name, "give epoch seconds or an ISO 8601 time", text)
    return at


def _line(line: UsageLine) -> dict[str, Any]:
    return {
        "tenant": line.tenant,
        "target": line.target,
        "kind": line.kind,
        "hour": iso(line.hour),
        "status": line.status,
        "count": line.count,
        "compute_s": round(line.compute_s, 6),
        "gpu_s": round(line.gpu_s, 6),
        "queue_s": round(line.queue_s, 6),
        "cold_start_s": round(line.cold_start_s, 6),
        "bytes_in": line.bytes_in,
        "bytes_out": line.bytes_out,
    }


@router.get(
    "/v1/usage",
    response_model=UsageReport,
    responses=responses(ForbiddenError),
)
async def usage_report(
    request: Request,
    who: Viewer,
    start: Annotated[
        str | None,
        Query(alias="from", description="epoch seconds or ISO 8601 (default: 24 h ago)"),
    ] = None,
    end: Annotated[
        str | None, Query(alias="to", description="epoch seconds or ISO 8601 (default: now)")
    ] = None,
    group_by: Annotated[
        str,
        Query(
            pattern=GROUP_BY_PATTERN,
            description="comma-separated: tenant, target (or model), kind, hour, status; "
            "empty: one line, the total",
        ),
    ] = ",".join(DEFAULT_GROUPS),
    tenant: Annotated[
        str | None, Query(description="this tenant's usage (another's: admin only)")
    ] = None,
) -> Response:
    """Predictions by outcome, compute, GPU, queue and cold-start seconds, bytes in and
    out, summed over the whole hours covering ``[from, to)``."""
    now = datetime.now(UTC).timestamp()
    last = parse_time("to", end) if end is not None else now
    first = parse_time("from", start) if start is not None else last - DEFAULT_WINDOW_S
    if last <= first:
        raise _invalid("to", "`to` must be after `from`", end)
    groups = group_keys(group_by.split(","))  # the pattern let known names alone through
    report = await usage_service(request).report(
        tenant=tenant_for(who, tenant),
        start=first,
        end=last,
        group_by=groups,
        targets=who.targets,
    )
    covered = window(first, last)
    return json_response(
        {
            "from": iso(covered[0]),
            "to": iso(covered[1]),
            "group_by": list(groups),
            "data": [_line(line) for line in report],
        }
    )
