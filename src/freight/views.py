"""The prediction object: what every route, notification and event stream shows.

A domain module rather than part of the API: the HTTP routes, the SSE stream and
the notification deliverer all render predictions, and the deliverer runs where
no HTTP face exists (a worker). Rendered with orjson; stored JSON input/output
text is spliced in as a ``Fragment`` instead of being parsed and serialised again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from freight.prediction import Prediction


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def _ms(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else round((end - start) * 1000, 3)


def _fragment(text: str | None) -> Any:
    return None if text is None else orjson.Fragment(text)


def error_of(p: Prediction) -> dict[str, Any] | None:
    if p.error_code is None:
        return None
    detail = orjson.loads(p.error_detail) if p.error_detail else {}
    return {"code": p.error_code, "message": p.error_message, "detail": detail}


def _step(row: Prediction, output_url: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "status": str(row.status),
        "prediction_id": row.id,
        "target": row.target,
        "kind": row.kind,
        "attempts": row.attempts,
        "created_at": iso(row.created_at),
        "started_at": iso(row.started_at),
        "finished_at": iso(row.finished_at),
        "metrics": {
            "queue_ms": _ms(row.queued_at, row.started_at),
            "run_ms": _ms(row.started_at, row.finished_at),
        },
        "output": _fragment(row.output_json),
        "output_url": output_url,
        "error": error_of(row),
        "items": [] if row.kind == "for_each" else None,
    }
    return entry


def _item(row: Prediction) -> dict[str, Any]:
    return {
        "index": row.item_index,
        "prediction_id": row.id,
        "status": str(row.status),
        "error": error_of(row),
    }


def steps_dict(
    rows: Sequence[Prediction], output_urls: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """A run's steps by name, in creation order (ids are time-ordered), from the rows
    whose ``run_id`` is the run's. A for_each step lists its elements under ``items``;
    a nested run is one entry, its own steps left to its own prediction object (a
    client drills down by id) so that one request costs one level of rows."""
    urls = output_urls or {}
    steps: dict[str, dict[str, Any]] = {}
    elements: list[Prediction] = []
    for row in sorted(rows, key=lambda r: r.id):
        if row.step is None:
            continue
        if row.item_index is None:
            steps[row.step] = _step(row, urls.get(row.id))
        else:
            elements.append(row)
    for row in sorted(elements, key=lambda r: (r.item_index or 0, r.id)):
        entry = steps.get(row.step or "")
        if entry is None:  # an element without its step's row: nothing to hang it on
            continue
        if entry["items"] is None:
            entry["items"] = []
        if not entry["items"]:  # the head row names the run; elements name the model
            entry["target"] = row.target
        entry["items"].append(_item(row))
    return steps


def prediction_dict(
    p: Prediction,
    *,
    output_url: str | None = None,
    upload_url: str | None = None,
    steps: Sequence[Prediction] | None = None,
    step_output_urls: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The prediction object; ``steps``: a run's step rows (None for anything else)."""
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
        "error": error_of(p),
        "metadata": _fragment(p.metadata) or {},
        "urls": {
            "self": base,
            "cancel": f"{base}/cancel",
            "output": f"{base}/output",
        },
        "run_id": p.run_id,
        "step": p.step,
        "item_index": p.item_index,
        "steps": None if steps is None else steps_dict(steps, step_output_urls),
    }
