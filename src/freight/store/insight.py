"""What the operator console reads that no other transaction does: the last hour's
finished rows per target, the backlog of one tenant, failing deliveries across
predictions. Run by ``Store.execute`` (read-only), written once for both engines.

Each statement is bounded so that a page stays fast at millions of rows:

* :func:`finished` walks ``ix_predictions_finished`` (terminal rows by
  ``finished_at``; its predicate repeated here *literally*, so both planners use
  the partial index) downwards from now, and reads at most ``cap`` rows: a busy
  hour is summarised from its most recent rows, never by scanning the table.
* :func:`backlog` counts queued rows through ``ix_predictions_claim`` (target,
  tenant, ...) and running ones through ``ix_predictions_running_target``.
* :func:`failing` walks the outbox by id downwards (keyset pagination) and reads
  at most ``scan`` rows of it per page.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from freight.deliveries import DeliveryAttempt, OutboxRow
from freight.prediction import TERMINAL, Status, TargetStats
from freight.store import sql
from freight.store._op import Op, Sql
from freight.store.rows import attempt_row, outbox_row

#: the predicate of ``ix_predictions_finished``, as the schema writes it
_TERMINAL = "status IN (" + ", ".join(f"'{s.value}'" for s in Status if s in TERMINAL) + ")"
#: rows an outbox page reads at most, failing or not
SCAN_CAP = 5000


@dataclass(frozen=True, slots=True)
class Finished:
    """One finished row, as the hour's statistics need it."""

    target: str
    status: Status
    created_at: float
    started_at: float | None
    finished_at: float


@dataclass(slots=True)
class Failing:
    """An outbox row that died, was stopped, or waits for a retry; its prediction's
    target, tenant and subscriptions, and every attempt made on it."""

    row: OutboxRow
    target: str
    tenant: str
    notify: str | None
    attempts: list[DeliveryAttempt]


def _scope(
    where: list[str], params: dict[str, Any], tenant: str | None, targets: Collection[str] | None
) -> None:
    if tenant is not None:
        where.append("tenant = :tenant")
        params["tenant"] = tenant
    if targets is not None:
        in_list, names = sql.expand_in("target_", sorted(targets) or [""])
        where.append(f"target IN {in_list}")
        params |= names


def finished(
    *, since: float, cap: int, tenant: str | None = None, targets: Collection[str] | None = None
) -> Op[list[Finished]]:
    """The rows finished at or after ``since``, newest first, at most ``cap``."""
    where = [_TERMINAL, "finished_at >= :since"]
    params: dict[str, Any] = {"since": since, "cap": cap}
    _scope(where, params, tenant, targets)
    text = (
        "SELECT target, status, created_at, started_at, finished_at FROM predictions "
        f"WHERE {' AND '.join(where)} ORDER BY finished_at DESC LIMIT :cap"
    )
    rows = yield Sql(text, params)
    return [Finished(r[0], Status(r[1]), r[2], r[3], r[4]) for r in rows]


def backlog(
    *, tenant: str | None = None, targets: Collection[str] | None = None
) -> Op[dict[str, TargetStats]]:
    """Queued (with the oldest id), running and awaiting counts per target."""
    parts: list[str] = []
    params: dict[str, Any] = {}
    for status, oldest in (
        (Status.QUEUED, "min(id)"),
        (Status.RUNNING, "NULL"),
        (Status.AWAITING_INPUT, "NULL"),
    ):
        where = [f"status = '{status.value}'"]
        _scope(where, params, tenant, targets)
        parts.append(
            f"SELECT target, '{status.value}', count(*), {oldest} FROM predictions "
            f"WHERE {' AND '.join(where)} GROUP BY target"
        )
    stats: dict[str, TargetStats] = {}
    for target, status, count, oldest in (yield Sql(" UNION ALL ".join(parts), params)):
        entry = stats.setdefault(target, TargetStats())
        setattr(entry, status, int(count))
        if oldest is not None:
            entry.oldest_queued_id = oldest
    return stats


_OUTBOX = ", ".join(f"o.{c.strip()}" for c in sql.OUTBOX_COLUMNS.split(","))
_ATTEMPTS = (
    "SELECT outbox_id, attempt, prediction_id, at, status_code, error, next_at, latency_ms, "
    "response FROM delivery_attempts WHERE outbox_id IN {ids} ORDER BY outbox_id, attempt"
)


def failing(
    *, before: str | None, limit: int, tenant: str | None = None, scan: int = SCAN_CAP
) -> Op[tuple[list[Failing], str | None]]:
    """Up to ``limit`` failing outbox rows with ids below ``before``, newest first, and
    the id to continue from (None: nothing older). At most ``scan`` outbox rows are
    read per call, so a long run of delivered ones costs a page, not the table."""
    where = ["o.id < :before"] if before is not None else []
    params: dict[str, Any] = {"scan": scan, "before": before}
    window = (
        f"SELECT id FROM outbox o {'WHERE ' + where[0] if where else ''} "
        "ORDER BY id DESC LIMIT :scan"
    )
    conditions = [
        f"o.id IN ({window})",
        "(o.status IN ('dead', 'stopped') OR (o.status = 'pending' AND o.attempts > 0))",
    ]
    if tenant is not None:
        conditions.append("p.tenant = :tenant")
        params["tenant"] = tenant
    text = (
        f"SELECT {_OUTBOX}, p.target, p.tenant, p.notify FROM outbox o "
        f"JOIN predictions p ON p.id = o.prediction_id WHERE {' AND '.join(conditions)} "
        "ORDER BY o.id DESC LIMIT :limit"
    )
    rows = yield Sql(text, params | {"limit": limit})
    width = len(sql.OUTBOX_COLUMNS.split(","))
    found = [Failing(outbox_row(r[:width]), r[width], r[width + 1], r[width + 2], []) for r in rows]
    scanned = yield Sql(f"SELECT count(*), min(id) FROM ({window}) w", params)
    count, lowest = scanned[0] if scanned else (0, None)
    if len(found) >= limit:
        after: str | None = found[-1].row.id
    else:
        after = lowest if count >= scan else None
    if found:
        yield from _attach(found)
    return found, after


def _attach(found: Sequence[Failing]) -> Op[None]:
    in_list, params = sql.expand_in("id", [f.row.id for f in found])
    by_id = {f.row.id: f for f in found}
    for row in (yield Sql(_ATTEMPTS.format(ids=in_list), params)):
        attempt = attempt_row(row)
        by_id[attempt.outbox_id].attempts.append(attempt)


__all__ = ["SCAN_CAP", "Failing", "Finished", "backlog", "failing", "finished"]
