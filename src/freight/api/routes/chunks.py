"""``GET /v1/predictions/{id}/chunks``: the chunks a streaming model yielded so far.

A page of chunks after a seq (``data``, ``next_after``: pass it as ``after`` to read
on), oldest first: what a client that missed the live stream reads back, the same
chunks the event stream carries as ``chunk`` events (``?chunks=true``). What a chunk is:
:mod:`freight.streaming`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel
from starlette.responses import Response

from freight.api import deps
from freight.api.errors import responses
from freight.api.render import chunk_dict, json_response
from freight.errors import NotFoundError
from freight.streaming import MAX_PAGE

router = APIRouter(prefix="/v1/predictions", tags=["predictions"])


class ChunkOut(BaseModel):
    prediction_id: str
    seq: int
    at: float
    attempt: int
    kind: str  # text, json, bytes
    data: Any  # the text, the JSON value, or the bytes in base64


class ChunkPage(BaseModel):
    data: list[ChunkOut]
    next_after: int


@router.get("/{prediction_id}/chunks", response_model=ChunkPage, responses=responses(NotFoundError))
async def prediction_chunks(
    request: Request,
    who: deps.Reader,
    prediction_id: str,
    after: Annotated[int, Query(ge=0, le=2**62, description="chunks whose seq is over this")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = MAX_PAGE,
) -> Response:
    """The chunks a streaming model yielded for the prediction, oldest first (empty for a
    model that does not stream); ``next_after`` reads on."""
    svc = deps.service(request)
    await svc.get(prediction_id, who)
    chunks = await svc.chunks(prediction_id, after=after, limit=limit)
    next_after = chunks[-1].seq if chunks else after
    return json_response({"data": [chunk_dict(c) for c in chunks], "next_after": next_after})
