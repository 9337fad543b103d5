"""The prediction object as every route returns it (docs/concepts.md).

Rendered straight to bytes with orjson; the stored JSON input/output text is
spliced in as a ``Fragment`` instead of being parsed and serialised again.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.responses import Response

from freight.prediction import Prediction


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def _ms(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else round((end - start) * 1000, 3)


def _fragment(text: str | None) -> Any:
    return None if text is None else orjson.Fragment(text)


def _error(p: Prediction) -> dict[str, Any] | None:
    if p.error_code is None:
        return None
    detail = orjson.loads(p.error_detail) if p.error_detail else {}
    return {"code": p.error_code, "message": p.error_message, "detail": detail}


def prediction_dict(
    p: Prediction,
    *,
    output_url: str | None = None,
    upload_url: str | None = None,
) -> dict[str, Any]:
    base = f"/v1/predictions/{p.id}"
    return {
        "id": p.id,
        "target": p.target,
        "kind": p.kind,
        "status": str(p.status),
        "created_at": iso(p.created_at),
        "queued_at": iso(p.queued_at),
        "started_at": iso(p.started_at),
        "finished_at": iso(p.finished_at),
        "metrics": {
            "queue_ms": _ms(p.queued_at, p.started_at),
            "run_ms": _ms(p.started_at, p.finished_at),
            "total_ms": _ms(p.created_at, p.finished_at),
            "batch_size": p.batch_size,
        },
        "attempts": p.attempts,
        "priority": p.priority,
        "input": _fragment(p.input_json),
        "input_uri": None if p.input_key is None else f"freight://{p.input_key}",
        "input_content_type": p.input_content_type,
        "input_bytes": p.input_bytes,
        "output": _fragment(p.output_json),
        "output_content_type": p.output_content_type,
        "output_bytes": p.output_bytes,
        "output_url": output_url,
        "upload_url": upload_url,
        "error": _error(p),
        "metadata": _fragment(p.metadata) or {},
        "urls": {
            "self": base,
            "cancel": f"{base}/cancel",
            "output": f"{base}/output",
        },
    }


def json_response(
    body: Any, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps(body),
        status_code=status_code,
        media_type="application/json",
        headers=headers,
    )
