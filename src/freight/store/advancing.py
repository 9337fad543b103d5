"""Advancing pipeline runs inside the transaction that changed their rows.

Every transaction that ends a row of a run, or starts a run, calls
:func:`advance_runs` before it commits: the pure :func:`~freight.pipelines.runs.advance`
decides from the run's step heads (never all of a for_each step's elements),
asking for elements only when a step must start more of them or gather them
all; this module reads what it asks and writes what it returns. A nested run
that starts or ends advances in turn (its steps, its parent), in the same
transaction.

Cost: one run and its heads per advancement, plus the rows each decision
touches, so a for_each step over N elements costs O(N) over its whole life
(each element's end is O(1); the gathering reads the N elements once).

The usage ledger is written here too, being the one place every ending path
goes through: the rows the caller ended and those the advancement ended (steps
skipped or canceled, runs finished) get their lines (``store/usage.py``) in the
same transaction, after the advancement's last write.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from freight import ledger
from freight.ids import new_id
from freight.pipelines import callback
from freight.pipelines.runs import Advancing, Changes, advance
from freight.prediction import Completion, Kind, Prediction, Status
from freight.store import sql, usage
from freight.store._op import Op, Sql, Told, as_rows, fetch, fetch_one
from freight.store.rows import prediction_params

#: a bound on cascades (nested runs inside nested runs ...) within one transaction
MAX_ADVANCES = 10_000


def advance_runs(
    run_ids: Iterable[str],
    rows: Iterable[Prediction],
    *,
    now: float,
    spent: Mapping[str, Completion] | None = None,
) -> Op[Told]:
    """Advance the runs ``run_ids`` and those of ``rows`` (the rows this transaction
    ended: every one of them, of a run or not), then every run their changes touch in
    turn; then append the ledger lines of every row ended (``spent``: the completions
    of the rows a worker ran, by id). The caller holds the locks of these runs
    (``lock_runs_of``)."""
    told = Told()
    elements: dict[str, list[Prediction]] = {}
    todo = list(dict.fromkeys(run_ids))
    ended = list(rows)
    _note_ended(ended, elements, todo)
    for _ in range(MAX_ADVANCES):
        if not todo:
            told.usage = ledger.lines(ended, spent or {}, now)
            yield from usage.append(told.usage)
            return told
        run_id = todo.pop(0)
        run = yield from fetch_one(sql.GET_FOR_UPDATE, {"id": run_id})
        if run is None:
            continue
        told.outbox |= run.notify is not None  # its status may change: the trigger's rows
        heads = yield from fetch(sql.RUN_HEADS, {"run_id": run_id})
        changes = yield from _answer(
            advance(run, heads, elements.pop(run_id, []), now=now, new_id=new_id), run_id
        )
        canceled = yield from _save(run_id, changes, now)
        if changes.waits:
            told.outbox |= yield from _announce(run, changes.waits, now)
        told.queued |= changes.queued
        told.finished += changes.finished + [row.id for row in canceled]
        ended += [changes.updated[i] for i in changes.finished] + canceled
        _note_ended(changes.ended, elements, todo)
        again = changes.again + [row.id for row in canceled if row.kind == Kind.PIPELINE]
        todo += [r for r in again if r not in todo]
    raise RuntimeError("pipeline advancement did not settle")  # pragma: no cover - a bug


def _note_ended(
    rows: Iterable[Prediction], elements: dict[str, list[Prediction]], todo: list[str]
) -> None:
    """Ended rows move their runs on; an ended for_each element is counted by its step."""
    for row in rows:
        if row.run_id is None:
            continue
        if row.item_index is not None:
            elements.setdefault(row.run_id, []).append(row)
        if row.run_id not in todo:
            todo.append(row.run_id)


def _announce(run: Prediction, waits: list[Prediction], now: float) -> Op[bool]:
    """The ``waiting`` events of callback steps that began a wait, for the subscribers
    of the top-level run (a nested run's own row has none): ``pipelines/callback.py``."""
    root: Prediction | None = run
    while root is not None and root.run_id is not None:
        root = yield from fetch_one(sql.GET, {"id": root.run_id})
    if root is None or root.notify is None:
        return False
    rows = callback.announcements(root, waits, now)
    if rows:
        yield Sql(sql.INSERT_WAITING, rows)
        yield Sql(sql.NOTIFY_OUTBOX, {"id": root.id})
    return bool(rows)


def _answer(steps: Advancing, run_id: str) -> Op[Changes]:
    """Run one advancement, reading the elements it asks for."""
    try:
        need = next(steps)
        while True:
            params: dict[str, Any] = {"run_id": run_id, "step": need.step}
            if need.pending:
                params["limit"] = need.limit
                rows = yield from fetch(sql.PENDING_ELEMENTS, params)
            else:
                rows = yield from fetch(sql.ELEMENTS, params)
            need = steps.send(rows)
    except StopIteration as stop:
        changes: Changes = stop.value
        return changes


def write_back(read: Prediction, row: Prediction, was: Status) -> Op[None]:
    """One row of an advancement written back: the columns that differ from the row as
    read, guarded by the status it was read with."""
    before, after = prediction_params(read), prediction_params(row)
    changed = tuple(c for c in sql.COLUMNS if c != "id" and after[c] != before[c])
    if not changed:
        return
    params = {c: after[c] for c in changed} | {"id": row.id, "was": str(was)}
    yield Sql(sql.update_columns(changed), params)


def _save(run_id: str, changes: Changes, now: float) -> Op[list[Prediction]]:
    """Write an advancement; return the rows its cancels ended."""
    for row in sorted(changes.updated.values(), key=lambda r: r.id):
        yield from write_back(changes.read[row.id], row, changes.was[row.id])
    if changes.inserted:
        yield Sql(sql.INSERT_STEP, [prediction_params(r) for r in changes.inserted])
    canceled: list[Prediction] = []
    params: dict[str, Any]
    for row_id, message in sorted(changes.canceled.items()):
        params = {"id": row_id, "now": now, "message": message}
        canceled += as_rows((yield Sql(sql.CANCEL_ROW, params)))
    for step, message in changes.cancel_elements:
        params = {"run_id": run_id, "step": step, "now": now, "message": message}
        canceled += as_rows((yield Sql(sql.CANCEL_ELEMENTS, params)))
    if changes.cancel_rest is not None:
        params = {"run_id": run_id, "now": now, "message": changes.cancel_rest}
        canceled += as_rows((yield Sql(sql.CANCEL_REST, params)))
    return canceled


__all__ = ["MAX_ADVANCES", "advance_runs"]
