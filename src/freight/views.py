"""The prediction object: what every route, notification and event stream shows.

A domain module rather than part of the API: the HTTP routes, the SSE stream and
the notification deliverer all render predictions, and the deliverer runs where
no HTTP face exists (a worker). :func:`render` is the one view all of them use;
each brings its own way to presign an object key into an absolute URL. Rendered
with orjson; stored JSON input/output text is spliced in as a ``Fragment``
instead of being parsed and serialised again, except where it holds object
references to add download URLs to.

Object references: a pipeline passes large values by reference, so a run's (or a
step's) inline JSON output may hold ``{"object": "freight://<key>",
"content_type": …, "bytes": …}`` parts. Each reference freight recorded in the
row (``output_refs``, see ``pipelines/refs.py``) is rendered with a presigned
``url`` added, so a caller can download every part; anything else shaped like a
reference (a caller's own JSON passed through) is plain data, left as it is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from freight.pipelines import callback
from freight.pipelines.refs import reference_key, refs_of
from freight.prediction import Prediction, Status, attempts_of

#: an object key -> an absolute, presigned download URL (None: none can be made)
Presign = Callable[[str], Awaitable[str | None]]
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
        "waiting_reason": None,
        "items": [] if row.kind == "for_each" else None,
        "callback": None,  # a waiting callback step: what answers it (:func:`add_callbacks`)
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
        "redrives": p.redrives,  # a pipeline run restarted where it stopped, so many times
        # the attempts its workers lost before this one (replica died, lease lapsed...)
        "attempt_history": [
            {
                "attempt": a.attempt,
                "started_at": iso(a.started_at),
                "ended_at": iso(a.ended_at),
                "why": a.why,
            }
            for a in attempts_of(p.attempt_history)
        ],
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
        # why it waits (``freight/waiting.py``), filled in by the service that knows the
        # worker nodes; None once it runs (and where no one can tell: notifications)
        "waiting_reason": None,
        "waiting_message": None,
        # how its notifications went (``deliveries.summarize``), filled in by the service
        # for a prediction with subscriptions; None in the notifications themselves
        "notifications": None,
        "urls": {
            "self": base,
            "cancel": f"{base}/cancel",
            "output": f"{base}/output",
        },
        "run_id": p.run_id,
        "step": p.step,
        "item_index": p.item_index,
        "steps": None if steps is None else steps_dict(steps, step_output_urls),
        # a waiting callback step: what it asks and where to answer (:func:`add_callbacks`)
        "callback": None,
    }


#: a waiting callback step -> its token (None: this face shows none)
Tokens = Callable[[Prediction], str | None]


def callback_dict(row: Prediction, token: str, absolute: Callable[[str], str]) -> dict[str, Any]:
    """What a waiting callback step publishes (``pipelines/callback.py``): its step, its
    rendered input (what it asks about), its deadline and the absolute URLs that answer
    it. The URLs carry its token: shown only to whom may answer (the run's owner, its
    subscribers)."""
    started = row.started_at or row.created_at
    return {
        "step": row.step,
        "prediction_id": row.id,
        "run_id": row.run_id,
        "attempt": row.attempts,
        "input": _fragment(row.input_json),
        "input_uri": None if row.input_key is None else f"freight://{row.input_key}",
        "deadline": iso(row.lease_expires_at),
        "timeout_at": iso(started + row.timeout_s),
        "urls": {name: absolute(path) for name, path in callback.paths(token).items()},
    }


def add_callbacks(
    body: dict[str, Any],
    row: Prediction,
    steps: Sequence[Prediction] | None,
    tokens: Tokens,
    absolute: Callable[[str], str],
) -> None:
    """Fill ``callback`` of a rendered prediction object that is, or whose steps are,
    a waiting callback step (the rest stay null)."""
    if callback.waits(row) and (token := tokens(row)) is not None:
        body["callback"] = callback_dict(row, token, absolute)
    for step in steps or ():
        if step.item_index is not None or not callback.waits(step):
            continue
        entry = (body.get("steps") or {}).get(step.step or "")
        if entry is not None and entry["prediction_id"] == step.id:
            token = tokens(step)
            entry["callback"] = None if token is None else callback_dict(step, token, absolute)


# -- the one view: presigned URLs, embedded references, late events ----------------------


def has_references(p: Prediction) -> bool:
    """Whether the row's inline output holds references freight recorded."""
    return p.output_json is not None and p.output_refs is not None


async def with_urls(value: Any, presign: Presign, keys: frozenset[str]) -> Any:
    """``value`` with a presigned ``url`` added to each reference among ``keys``."""
    key = reference_key(value)
    if key is not None and key in keys:
        return {**value, "url": await presign(key)}
    if isinstance(value, dict):
        return {k: await with_urls(v, presign, keys) for k, v in value.items()}
    if isinstance(value, list):
        return [await with_urls(v, presign, keys) for v in value]
    return value


async def output_of(p: Prediction, presign: Presign) -> Any:
    """The inline output as rendered: parsed, with URLs, when it holds references;
    else the stored text spliced in as is."""
    if not has_references(p):
        return _fragment(p.output_json)
    value = orjson.loads(p.output_json or "null")
    return await with_urls(value, presign, refs_of(p.output_refs))


async def stored_output_url(p: Prediction, presign: Presign) -> str | None:
    """A presigned URL for an output kept only as an object (too large, or not JSON)."""
    if p.output_key is None or p.output_json is not None:
        return None
    return await presign(p.output_key)


async def render(
    p: Prediction,
    presign: Presign,
    *,
    steps: Sequence[Prediction] | None = None,
    upload_url: str | None = None,
) -> dict[str, Any]:
    """The prediction object every face shows (GET, lists, SSE, notifications): its
    output URL and each step's presigned, references inside outputs given URLs."""
    step_urls: dict[str, str] = {}
    for step in steps or ():
        if step.item_index is None and (url := await stored_output_url(step, presign)):
            step_urls[step.id] = url
    body = prediction_dict(
        p,
        output_url=await stored_output_url(p, presign),
        upload_url=upload_url,
        steps=steps,
        step_output_urls=step_urls,
    )
    body["output"] = await output_of(p, presign)
    for step in steps or ():
        entry = body["steps"].get(step.step or "")
        if entry is not None and entry["prediction_id"] == step.id and has_references(step):
            entry["output"] = await output_of(step, presign)
    return body


def as_started(p: Prediction, attempt: int, at: float) -> Prediction:
    """The row as it was when attempt ``attempt`` started (at ``at``), for a ``started``
    event delivered after the prediction moved on: running, no output, error or end.
    The row's own start time is kept while it is still of that attempt."""
    started_at = p.started_at if p.attempts == attempt and p.started_at is not None else at
    return dataclasses.replace(
        p,
        status=Status.RUNNING,
        attempts=attempt,
        started_at=started_at,
        finished_at=None,
        output_json=None,
        output_key=None,
        output_content_type=None,
        output_bytes=None,
        error_code=None,
        error_message=None,
        error_detail=None,
        batch_size=None,
    )
