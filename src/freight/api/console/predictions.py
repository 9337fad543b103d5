"""``/ui/predictions``: find, filter and open predictions; cancel, retry and redrive them; their
inputs and outputs downloaded through the console (the session's tenant checked)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response, StreamingResponse

from freight.access import Principal, Scope
from freight.api import deps
from freight.api.console.pages import Console, ConsoleRoute, back, changing, page
from freight.api.console.runs import run_context
from freight.errors import InvalidRequestError, NotFoundError
from freight.pipelines import callback
from freight.prediction import Kind, Prediction, Status, attempts_of
from freight.service import Download, PredictionService
from freight.views import error_of

router = APIRouter(prefix="/ui/predictions", route_class=ConsoleRoute, include_in_schema=False)

PAGE = 50
#: how much of an input or output a page shows
PREVIEW_BYTES = 4096


def id_floor(ts: float) -> str:
    """The lowest UUIDv7 of the millisecond ``ts``: ids below it were created before
    (listing by time is a keyset on the primary key, never a scan of created_at)."""
    hexa = f"{max(0, int(ts * 1000)):012x}"
    return f"{hexa[:8]}-{hexa[8:12]}-0000-0000-000000000000"


def _time(text: str | None) -> float | None:
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequestError(
            f"{text!r} is not a time (YYYY-MM-DDTHH:MM)", code="invalid_time"
        ) from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def _status(text: str | None) -> Status | None:
    if not text:
        return None
    try:
        return Status(text)
    except ValueError:
        raise InvalidRequestError(f"no status {text!r}", code="invalid_status") from None


@router.get("")
async def listing(
    request: Request,
    session: Console,
    target: str | None = None,
    status: str | None = None,
    since: str | None = None,
    until: str | None = None,
    id: str | None = None,
    after: str | None = None,
) -> Response:
    """Newest first, filtered by target, status and creation time; ``id``: open it."""
    if id:
        return RedirectResponse(f"/ui/predictions/{id.strip()}", status_code=303)
    svc, who = deps.service(request), session.who
    wanted = _status(status)
    start, end = _time(since), _time(until)
    cursor = after or (id_floor(end) if end is not None else None)
    rows = await svc.list(
        target=target or None, status=wanted, after_id=cursor, limit=PAGE + 1, who=who
    )
    floor = id_floor(start) if start is not None else None
    if floor is not None:
        rows = [r for r in rows if r.id >= floor]
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    query = {"target": target or "", "status": status or "", "since": since or ""}
    query["until"] = until or ""
    next_url = f"?{urlencode({**query, 'after': rows[-1].id})}" if more and rows else None
    targets = sorted(
        {*(m.spec.name for m in await deps.system(request).models())}
        | {p.name for p in deps.system(request).pipelines()}
    )
    return page(
        request,
        "predictions.html",
        session,
        rows=rows,
        query=query,
        next_url=next_url,
        targets=[t for t in targets if who.may_use(t)],
        statuses=[s.value for s in Status],
    )


def timeline(row: Prediction) -> list[tuple[str, float | None, str]]:
    """What happened to the row, in order: label, when, a note."""
    steps: list[tuple[str, float | None, str]] = [("created", row.created_at, "")]
    if row.upload_expires_at is not None:
        steps.append(("input arrived", row.queued_at, "uploaded"))
    steps.append(("queued", row.queued_at, f"priority {row.priority}"))
    why = {
        "replica_died": "its replica died",
        "lease_expired": "its worker's lease lapsed",
        "process_died": "the process running it died",
    }
    for past in attempts_of(row.attempt_history):
        steps.append((f"attempt {past.attempt} started", past.started_at, past.worker))
        steps.append((f"attempt {past.attempt} lost", past.ended_at, why.get(past.why, past.why)))
    if row.started_at is not None and row.status != Status.QUEUED:
        note = f"attempt {row.attempts} of {row.max_attempts}"
        steps.append(("claimed and started", row.started_at, note))
    if row.finished_at is not None:
        steps.append((str(row.status), row.finished_at, row.error_code or ""))
    return steps


def _preview(text: str | None) -> str | None:
    if text is None:
        return None
    try:
        pretty = orjson.dumps(orjson.loads(text), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        pretty = text
    return pretty if len(pretty) <= PREVIEW_BYTES else pretty[:PREVIEW_BYTES] + "\n…"


async def _detail(svc: PredictionService, row: Prediction, who: Principal) -> dict[str, Any]:
    view = await svc.view(row)
    error = error_of(row)
    logs = await svc.logs(who, row.id, limit=1000)
    return {
        "row": row,
        "view": view,
        "error": error,
        "traceback": (error or {}).get("detail", {}).get("traceback"),
        "timeline": timeline(row),
        "input_preview": _preview(row.input_json),
        "output_preview": _preview(row.output_json),
        "logs": logs,
        "deliveries": await svc.deliveries(row.id, who),
        "waiting_reason": view.get("waiting_reason"),
        "waiting_message": view.get("waiting_message"),
        "callback": view.get("callback"),  # a waiting callback step: what answers it
    }


@router.get("/{prediction_id}")
async def detail(request: Request, session: Console, prediction_id: str) -> Response:
    """A prediction (or a pipeline run, drawn as its DAG): timeline, error, logs,
    input and output, deliveries."""
    svc = deps.service(request)
    row = await svc.get(prediction_id, session.who)
    context = await _detail(svc, row, session.who)
    if context["callback"]:  # its answer URLs as a caller reaches them
        urls = context["callback"]["urls"]
        context["callback"]["urls"] = {k: deps.absolute(request, u) for k, u in urls.items()}
    if row.kind == Kind.PIPELINE:
        context["run"] = run_context(deps.system(request), row, context["view"])
    notice = request.query_params.get("notice")
    return page(request, "prediction.html", session, notice=notice, now=time.time(), **context)


@router.post("/{prediction_id}/cancel")
async def cancel(request: Request, session: Console, prediction_id: str) -> Response:
    """Cancel it (a run: with its steps)."""
    await changing(request, session, Scope.PREDICT)
    row = await deps.service(request).cancel(prediction_id, session.who)
    return back(f"/ui/predictions/{row.id}", f"{row.status}")


@router.post("/{prediction_id}/redrive")
async def redrive(request: Request, session: Console, prediction_id: str) -> Response:
    """Restart a failed or canceled run where it stopped (its succeeded steps kept)."""
    await changing(request, session, Scope.PREDICT)
    row = await deps.service(request).redrive(prediction_id, session.who)
    return back(f"/ui/predictions/{row.id}", f"redriven ({row.redrives} in all)")


@router.post("/{prediction_id}/answer")
async def answer(request: Request, session: Console, prediction_id: str) -> Response:
    """Answer a waiting callback step from its page, as its URLs would: ``approve`` (it
    succeeds, the JSON given its output, checked against its schema) or ``reject`` (it
    fails with ``callback_failed``, the reason given its cause)."""
    fields = await changing(request, session, Scope.PREDICT)
    svc = deps.service(request)
    row = await svc.get(prediction_id, session.who)
    if not callback.waits(row):
        raise InvalidRequestError(
            f"{row.id} is no callback step waiting for its answer", code="invalid_form"
        )
    token = svc.callback_token(row)
    if fields.get("answer") == "reject":
        cause = fields.get("cause", "").strip() or "rejected in the console"
        body = {"error": "Rejected", "cause": cause}
        done = await deps.callbacks(request).fail(token, body)
    else:
        try:
            value = orjson.loads(fields.get("output", "").strip() or "{}")
        except orjson.JSONDecodeError as exc:
            raise InvalidRequestError(
                f"the output is not JSON: {exc}", code="invalid_form"
            ) from None
        done = await deps.callbacks(request).succeed(token, value)
    return back(f"/ui/predictions/{row.id}", f"answered: {done.status}")


@router.post("/{prediction_id}/retry")
async def retry(request: Request, session: Console, prediction_id: str) -> Response:
    """A new prediction of the same target, input, priority and notifications."""
    await changing(request, session, Scope.PREDICT)
    new = await deps.service(request).retry(prediction_id, session.who)
    return back(f"/ui/predictions/{new.id}", f"retry of {prediction_id}")


def _download(found: Download, name: str) -> StreamingResponse:
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    if found.size is not None:
        headers["Content-Length"] = str(found.size)
    return StreamingResponse(found.chunks, media_type=found.content_type, headers=headers)


@router.get("/{prediction_id}/input")
async def download_input(request: Request, session: Console, prediction_id: str) -> Response:
    """The input as stored."""
    svc = deps.service(request)
    row = await svc.get(prediction_id, session.who)
    if row.input_key is None:
        raise NotFoundError(f"prediction {prediction_id} has no input object", code="no_input")
    return _download(await svc.open_object(row.input_key), f"{row.id}-input")


@router.get("/{prediction_id}/output")
async def download_output(request: Request, session: Console, prediction_id: str) -> Response:
    """The output (an object, or a run's JSON with its references' URLs)."""
    svc = deps.service(request)
    row = await svc.get(prediction_id, session.who)
    return _download(svc.open_output(row), f"{row.id}-output")


__all__ = ["id_floor", "router", "timeline"]
