"""HTTP rendering: JSON responses of the prediction object (see :mod:`freight.views`),
with its presigned URLs made absolute: what every route that answers with a
prediction (or streams one) shares, so that no route imports another."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from freight.api import deps
from freight.prediction import Prediction, Status
from freight.views import iso, prediction_dict, steps_dict

__all__ = [
    "iso",
    "json_response",
    "prediction_dict",
    "rendered",
    "respond",
    "steps_dict",
]


def json_response(
    body: Any, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps(body),
        status_code=status_code,
        media_type="application/json",
        headers=headers,
    )


async def _output_url(request: Request, row: Prediction) -> str | None:
    url = await deps.service(request).output_url(row)
    return deps.absolute(request, url) if url else None


async def rendered(
    request: Request, row: Prediction, upload_url: str | None = None
) -> dict[str, Any]:
    """The prediction object; a pipeline run also gets its steps map (one more query,
    plus a presigned URL per step whose output is not inline)."""
    output_url = await _output_url(request, row)
    if row.kind != "pipeline":
        return prediction_dict(row, output_url=output_url, upload_url=upload_url)
    steps = await deps.service(request).steps(row.id)
    step_urls: dict[str, str] = {}
    for step in steps:
        if step.item_index is None and (url := await _output_url(request, step)):
            step_urls[step.id] = url
    return prediction_dict(
        row,
        output_url=output_url,
        upload_url=upload_url,
        steps=steps,
        step_output_urls=step_urls,
    )


async def respond(request: Request, row: Prediction, status_code: int | None = None) -> Response:
    """Render a prediction with its presigned URLs made absolute."""
    upload_url = None
    if row.status == Status.AWAITING_INPUT and row.upload_expires_at is not None:
        path = f"/v1/predictions/{row.id}/input"
        upload_url = deps.signer(request).sign_until("PUT", path, row.upload_expires_at)
    body = await rendered(request, row, deps.absolute(request, upload_url) if upload_url else None)
    if status_code is None:
        status_code = 200 if row.status.terminal else 202
    return json_response(body, status_code)
