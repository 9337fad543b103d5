"""``GET /v1/predictions/{id}/logs``: what the model printed or logged for a prediction.

A page of lines after a seq, as JSON (``data``, ``next_after``: pass it as ``after``
to read on), or as plain text with ``Accept: text/plain`` (the cursor in the
``Freight-Next-After`` header). What is kept and its bound: :mod:`freight.logs`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel
from starlette.responses import PlainTextResponse, Response

from freight.api import deps
from freight.api.errors import responses
from freight.api.render import json_response, line_dict
from freight.errors import NotFoundError
from freight.logs import MAX_PAGE, as_text

router = APIRouter(prefix="/v1/predictions", tags=["predictions"])
NEXT_HEADER = "Freight-Next-After"


class LogLineOut(BaseModel):
    seq: int
    at: float
    attempt: int
    stream: str
    level: str | None
    phase: str
    text: str
    dropped: int | None


class LogPage(BaseModel):
    data: list[LogLineOut]
    next_after: int


@router.get(
    "/{prediction_id}/logs",
    response_model=LogPage,
    responses={
        **responses(NotFoundError),
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
    },
)
async def prediction_logs(
    request: Request,
    who: deps.Reader,
    prediction_id: str,
    after: Annotated[int, Query(ge=0, le=2**62, description="lines whose seq is over this")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = MAX_PAGE,
) -> Response:
    """The lines the model printed or logged while it handled the prediction (stdout,
    stderr, logging records; ``phase`` ``load`` for its replica's load), oldest first;
    ``next_after`` reads on (the same value once there is nothing new yet)."""
    lines = await deps.service(request).logs(who, prediction_id, after=after, limit=limit)
    next_after = lines[-1].seq if lines else after
    if "text/plain" in request.headers.get("accept", ""):
        return PlainTextResponse(as_text(lines), headers={NEXT_HEADER: str(next_after)})
    return json_response({"data": [line_dict(line) for line in lines], "next_after": next_after})
