"""A pipeline run drawn as its DAG, and the live updates of a prediction's page.

The layout is the pipeline's declared graph (:mod:`freight.api.console.dag`), each
node coloured by its step's state. ``/ui/predictions/{id}/events`` streams the
prediction's history (:mod:`freight.streams`, the API's own event stream) as
server-sent events for the page's script: one small JSON object per change of the
prediction or of one of its steps; the script recolours the node (or the status)
and reloads the page once the prediction ends. The cookie authenticates it like
any console request (``EventSource`` sends it; ``Last-Event-ID`` resumes).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from freight import streams
from freight.api import deps
from freight.api.console.dag import NODE_H, NODE_W, layout
from freight.api.console.pages import Console, ConsoleRoute
from freight.api.params import stream_slots
from freight.errors import FreightError, NotFoundError
from freight.prediction import Prediction
from freight.system import SystemService

router = APIRouter(prefix="/ui/predictions", route_class=ConsoleRoute, include_in_schema=False)
log = logging.getLogger("freight.console")


def run_context(system: SystemService, row: Prediction, view: dict[str, Any]) -> dict[str, Any]:
    """The DAG of a run: its layout, and each step's state, timings and output."""
    steps: dict[str, dict[str, Any]] = view.get("steps") or {}
    try:
        spec = system.pipeline(row.target)
        needs: dict[str, Any] = {name: step.needs for name, step in spec.steps.items()}
    except NotFoundError:  # a pipeline no longer served: its steps, without edges
        needs = {}
    for name in steps:
        needs.setdefault(name, ())
    drawn = layout(needs)
    nodes = []
    for name, node in drawn.nodes.items():
        step = steps.get(name) or {}
        items = step.get("items") or []
        nodes.append(
            {
                "name": name,
                "x": node.x,
                "y": node.y,
                "status": step.get("status", "pending"),
                "step": step,
                "item_counts": dict(Counter(i["status"] for i in items)),
                "item_count": len(items),
                "nested": step.get("kind") == "pipeline",
                "output": _clip(step.get("output")),
            }
        )
    return {"layout": drawn, "nodes": nodes, "node_w": NODE_W, "node_h": NODE_H}


def _clip(value: Any, limit: int = 160) -> str | None:
    if value is None:
        return None
    text = orjson.dumps(value).decode()
    return text if len(text) <= limit else text[:limit] + "…"


def _event(event: streams.StreamEvent) -> bytes:
    row = event.prediction
    body = {
        "type": event.type,
        "id": row.id,
        "step": row.step if event.type.startswith(streams.STEP_PREFIX) else None,
        "status": str(row.status),
        "attempts": row.attempts,
        "final": event.final,
    }
    return f"id: {event.id}\nevent: update\ndata: {orjson.dumps(body).decode()}\n\n".encode()


@router.get("/{prediction_id}/events")
async def events(request: Request, session: Console, prediction_id: str) -> Response:
    """The prediction's changes, live, as server-sent events (for the page's script)."""
    svc = deps.service(request)
    await svc.get(prediction_id, session.who)  # 404 before the stream starts
    held = stream_slots(request, svc.limits.max_event_streams)  # the API's bound, shared
    held.check()
    last = request.headers.get("last-event-id", "")
    after = int(last) if last.isdigit() and len(last) < 19 else None

    async def stream() -> AsyncIterator[bytes]:
        held.open += 1
        try:
            follow = streams.events(
                svc,
                prediction_id,
                after,
                poll_s=svc.limits.event_poll_s,
                max_s=svc.limits.max_wait_s,
            )
            yield b"retry: 1000\n\n"
            async for event in follow:
                yield _event(event)
        except FreightError as exc:  # the store went away: the browser reconnects
            log.warning("console stream of %s ended early: %s", prediction_id, exc)
        finally:
            held.open -= 1

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


__all__ = ["router", "run_context"]
