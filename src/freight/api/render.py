"""HTTP rendering: JSON responses of the prediction object (see :mod:`freight.views`)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from freight.views import iso, prediction_dict, steps_dict

__all__ = ["iso", "json_response", "prediction_dict", "steps_dict"]


def json_response(
    body: Any, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps(body),
        status_code=status_code,
        media_type="application/json",
        headers=headers,
    )
