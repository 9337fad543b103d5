"""``/v1/deliveries/{id}/redeliver``: send a notification's event again."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from freight.api import deps
from freight.api.errors import responses
from freight.api.render import delivery_dict, json_response
from freight.api.schemas import DeliveryOut
from freight.errors import ConflictError, NotFoundError

router = APIRouter(prefix="/v1/deliveries", tags=["notifications"])


@router.post(
    "/{delivery_id}/redeliver",
    response_model=DeliveryOut,
    responses=responses(NotFoundError, ConflictError),
)
async def redeliver(request: Request, who: deps.Predictor, delivery_id: str) -> Response:
    """Send the event again now, with its original event id: one that died, was stopped
    by a 410 Gone, or waits for its next retry (``id`` of ``GET
    /v1/predictions/{id}/deliveries``). 409 ``invalid_state`` while it is being sent or
    once delivered."""
    view = await deps.service(request).redeliver(delivery_id, who)
    return json_response(delivery_dict(view))
