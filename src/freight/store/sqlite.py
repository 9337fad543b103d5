"""The embedded job store: one SQLite file, one writer connection, group commit.

In the embedded shape this process is the only writer (``exclusive = True``):
every write is a small function run on the event loop's thread inside the next
group transaction (``_sqlite_io.LoopWriter``); point reads use a read-only
connection on the same thread, scans a small pool of reader threads. The
functions below are synchronous on purpose: the stdlib ``sqlite3`` driver called
from one thread is ~5x faster than an async wrapper hopping threads per
statement (measured on this kind of machine).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from freight.deliveries import DeliveryAttempt, DeliveryResult, DeliveryStatus, OutboxRow
from freight.errors import ConflictError, NotFoundError
from freight.ids import new_id
from freight.pipelines.runs import Changes, advance_all
from freight.prediction import Completion, Prediction, ReapResult, Release, Status, TargetStats
from freight.store import sql
from freight.store._migrate import check_schema_version
from freight.store._sqlite_io import LoopReader, LoopWriter, Readers
from freight.store.rows import (
    attempt_row,
    cancel_targets,
    check_idempotent,
    claim_order,
    claim_params,
    completion_params,
    delivery_params,
    input_ready_params,
    not_awaiting_input,
    outbox_claim_params,
    outbox_row,
    prediction_params,
    reap_result,
    reap_runs,
    release_params,
    row_to_prediction,
    secrets_in_use,
    stats_from_rows,
)

_R = sql.rendered("sqlite")


def _ids(conn: sqlite3.Connection, statement: str, params: dict[str, Any]) -> list[str]:
    return [row[0] for row in conn.execute(statement, params).fetchall()]


def _get(conn: sqlite3.Connection, prediction_id: str) -> Prediction | None:
    row = conn.execute(_R["GET"], {"id": prediction_id}).fetchone()
    return None if row is None else row_to_prediction(row)


def _advance(conn: sqlite3.Connection, run_ids: Iterable[str | None], now: float) -> Changes:
    """Advance the pipeline runs these rows belong to, in the caller's transaction."""
    wanted = [r for r in run_ids if r is not None]
    if not wanted:
        return Changes()

    def load(run_id: str) -> tuple[Prediction | None, list[Prediction]]:
        rows = conn.execute(_R["RUN_ROWS"], {"run_id": run_id}).fetchall()
        return _get(conn, run_id), [row_to_prediction(r) for r in rows]

    def save(changes: Changes) -> None:
        for row in changes.updated.values():
            conn.execute(_R["UPDATE_ROW"], prediction_params(row))
        for row in changes.inserted:
            conn.execute(_R["INSERT_STEP"], prediction_params(row))

    return advance_all(wanted, load, save, now=now, new_id=new_id)


def _create_run(
    conn: sqlite3.Connection, run: Prediction, steps: Sequence[Prediction]
) -> tuple[tuple[Prediction, bool], Changes]:
    created, inserted = _create(conn, run)
    if not inserted:
        return (created, False), Changes()
    for step in steps:
        conn.execute(_R["INSERT_STEP"], prediction_params(step))
    changes = _advance(conn, [run.id], run.created_at)
    return ((_get(conn, run.id) or created), True), changes


def _create(conn: sqlite3.Connection, prediction: Prediction) -> tuple[Prediction, bool]:
    rows = conn.execute(_R["INSERT"], prediction_params(prediction)).fetchall()
    if rows:
        return row_to_prediction(rows[0]), True
    key = prediction.idempotency_key
    row = conn.execute(_R["GET_BY_IDEMPOTENCY_KEY"], {"key": key}).fetchone()
    if row is None:  # pragma: no cover - DO NOTHING only fires on this key
        raise ConflictError("insert was ignored", code="conflict", id=prediction.id)
    return check_idempotent(row_to_prediction(row), prediction), False


def _mark_input_ready(
    conn: sqlite3.Connection, params: dict[str, Any]
) -> tuple[Prediction, Changes]:
    rows = conn.execute(_R["MARK_INPUT_READY"], params).fetchall()
    if not rows:
        raise not_awaiting_input(params["id"], _get(conn, params["id"]))
    row = row_to_prediction(rows[0])
    if row.kind != "pipeline":
        return row, Changes()
    changes = _advance(conn, [row.id], params["now"])  # a run got its input: it starts
    return changes.updated.get(row.id, row), changes


def _claim(conn: sqlite3.Connection, params: dict[str, Any]) -> list[Prediction]:
    rows = conn.execute(_R["CLAIM"], params).fetchall()
    return claim_order(row_to_prediction(r) for r in rows)


def _complete(
    conn: sqlite3.Connection, completions: Sequence[Completion]
) -> tuple[list[str], Changes]:
    applied: list[str] = []
    runs: list[str | None] = []
    for completion in completions:
        for prediction_id, run_id in conn.execute(
            _R["COMPLETE"], completion_params(completion)
        ).fetchall():
            applied.append(prediction_id)
            runs.append(run_id)
    finished_at = max((c.finished_at for c in completions), default=0.0)
    return applied, _advance(conn, runs, finished_at)


def _release(
    conn: sqlite3.Connection, releases: Sequence[Release], now: float
) -> tuple[dict[str, Status], Changes]:
    result: dict[str, Status] = {}
    runs: list[str | None] = []
    for release in releases:
        for prediction_id, status, run_id in conn.execute(
            _R["RELEASE"], release_params(release, now)
        ).fetchall():
            result[prediction_id] = Status(status)
            if Status(status).terminal:
                runs.append(run_id)
    return result, _advance(conn, runs, now)


def _heartbeat(
    conn: sqlite3.Connection, worker_id: str, ids: Sequence[str], lease_expires_at: float
) -> list[str]:
    in_list, params = sql.expand_in("id", ids)
    statement = sql.render(sql.HEARTBEAT.format(ids=in_list), "sqlite")
    params |= {"worker_id": worker_id, "lease_expires_at": lease_expires_at}
    held = set(_ids(conn, statement, params))
    return [i for i in ids if i not in held]


def _cancel(
    conn: sqlite3.Connection, prediction_id: str, now: float
) -> tuple[tuple[Prediction, Status], Changes]:
    current = _get(conn, prediction_id)
    if current is None:
        raise NotFoundError("prediction not found", id=prediction_id)
    if current.status.terminal:
        return (current, current.status), Changes()
    params = {"id": prediction_id, "now": now}
    row = row_to_prediction(conn.execute(_R["CANCEL"], params).fetchone())
    # a canceled run cancels its steps; a canceled step moves its run on
    changes = _advance(conn, cancel_targets(row), now)
    return (row, current.status), changes


def _reap(conn: sqlite3.Connection, now: float) -> tuple[ReapResult, Changes]:
    params = {"now": now}
    ended = [
        conn.execute(_R[name], params).fetchall()
        for name in ("REAP_TTL", "REAP_UPLOAD", "REAP_RUN_TIMEOUT", "REAP_LEASE_FAIL")
    ]
    requeued = _ids(conn, _R["REAP_LEASE_REQUEUE"], params)
    result = reap_result(ended, requeued)
    return result, _advance(conn, reap_runs(ended), now)


def _purge(conn: sqlite3.Connection, before: float, limit: int) -> list[Prediction]:
    rows = conn.execute(_R["PURGE"], {"before": before, "limit": limit}).fetchall()
    purged = [row_to_prediction(r) for r in rows]
    in_list, params = sql.expand_in("id", [p.id for p in purged])
    for statement in (sql.PURGE_OUTBOX, sql.PURGE_ATTEMPTS):
        conn.execute(statement.format(ids=in_list), params)
    # RETURNING gives no order on SQLite: oldest first, as on PostgreSQL
    return sorted(purged, key=_finished_order)


def _claim_deliveries(conn: sqlite3.Connection, params: dict[str, Any]) -> list[OutboxRow]:
    conn.execute(_R["REQUEUE_SENDING"], params)
    rows = [outbox_row(r) for r in conn.execute(_R["CLAIM_DELIVERIES"], params).fetchall()]
    return sorted(rows, key=lambda r: (r.next_at, r.id))


def _finish_deliveries(conn: sqlite3.Connection, results: Sequence[DeliveryResult]) -> None:
    for result in results:
        params = delivery_params(result)
        held = conn.execute(_R["FINISH_DELIVERY"], params).fetchone()
        if held is None:
            continue  # lost the lease meanwhile: another worker owns the row now
        prediction_id, subscription = held
        conn.execute(_R["INSERT_ATTEMPT"], params | {"prediction_id": prediction_id})
        if result.status == DeliveryStatus.STOPPED:
            stop = {"prediction_id": prediction_id, "subscription": subscription, "at": result.at}
            conn.execute(_R["STOP_SUBSCRIPTION"], stop)


def _deliveries(
    conn: sqlite3.Connection, prediction_id: str
) -> tuple[list[OutboxRow], list[DeliveryAttempt]]:
    params = {"id": prediction_id}
    rows = [outbox_row(r) for r in conn.execute(_R["OUTBOX_OF"], params).fetchall()]
    attempts = [attempt_row(r) for r in conn.execute(_R["ATTEMPTS_OF"], params).fetchall()]
    return rows, attempts


def _rotate_secret(conn: sqlite3.Connection, secret: str, now: float) -> None:
    conn.execute(_R["RETIRE_SECRETS"], {"now": now})
    conn.execute(_R["INSERT_SECRET"], {"secret": secret, "now": now})


def _finished_order(p: Prediction) -> tuple[float, str]:
    return (p.finished_at or 0.0, p.id)


class SqliteStore:
    """The :class:`~freight.store.base.Store` on one SQLite file (the embedded shape)."""

    exclusive = True

    def __init__(self, path: str, *, readers: int = 2) -> None:
        self.path = path
        self._writer = LoopWriter(path)
        self._point = LoopReader(path)
        self._readers = Readers(path, readers)
        self._on_work: Callable[[str], None] = _ignore
        self._on_done: Callable[[str], None] = _ignore

    def _tell(self, changes: Changes) -> None:
        """After a commit: wake claim loops for steps a run queued, waiters of rows
        (runs, steps) that a run's advancement finished."""
        for target in changes.queued:
            self._on_work(target)
        for prediction_id in changes.finished:
            self._on_done(prediction_id)

    async def open(self) -> None:
        self._writer.start()
        self._point.start()
        self._readers.start()
        try:
            version = await self._readers.run(_schema_version)
            check_schema_version(version, f"sqlite:///{self.path}")
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        self._writer.stop()
        self._point.stop()
        await asyncio.to_thread(self._readers.stop)

    async def listen(
        self,
        on_work: Callable[[str], None],
        on_done: Callable[[str], None],
        on_outbox: Callable[[], None] | None = None,
    ) -> None:
        """No other process writes: the in-memory events of this one wake claim loops
        and waiters. Returns at once, keeping the callbacks for what the store itself
        does inside a transaction (pipeline steps queued or finished by a run's
        advancement)."""
        self._on_work, self._on_done = on_work, on_done

    async def ping(self) -> None:
        await self._readers.run(lambda conn: conn.execute("SELECT 1").fetchall())

    async def create(self, prediction: Prediction) -> tuple[Prediction, bool]:
        return await self._writer.submit(lambda conn: _create(conn, prediction))

    async def get(self, prediction_id: str) -> Prediction | None:
        return self._point.run(lambda conn: _get(conn, prediction_id))

    async def mark_input_ready(
        self,
        prediction_id: str,
        *,
        input_key: str,
        input_content_type: str,
        input_bytes: int,
        now: float,
        input_json: str | None = None,
    ) -> Prediction:
        params = input_ready_params(
            prediction_id,
            input_key=input_key,
            input_content_type=input_content_type,
            input_bytes=input_bytes,
            now=now,
            input_json=input_json,
        )
        row, changes = await self._writer.submit(lambda conn: _mark_input_ready(conn, params))
        self._tell(changes)
        return row

    async def create_run(
        self, run: Prediction, steps: Sequence[Prediction]
    ) -> tuple[Prediction, bool]:
        result, changes = await self._writer.submit(lambda conn: _create_run(conn, run, steps))
        self._tell(changes)
        return result

    async def steps(self, run_id: str) -> list[Prediction]:
        rows = self._point.run(
            lambda conn: conn.execute(_R["RUN_ROWS"], {"run_id": run_id}).fetchall()
        )
        return [row_to_prediction(r) for r in rows]

    async def claim(
        self,
        target: str,
        limit: int,
        *,
        worker_id: str,
        lease_s: float,
        now: float,
    ) -> list[Prediction]:
        params = claim_params(target, limit, worker_id=worker_id, lease_s=lease_s, now=now)
        return await self._writer.submit(lambda conn: _claim(conn, params))

    async def complete(self, completions: Sequence[Completion]) -> list[str]:
        applied, changes = await self._writer.submit(lambda conn: _complete(conn, completions))
        self._tell(changes)
        return applied

    async def release(self, releases: Sequence[Release], *, now: float) -> dict[str, Status]:
        result, changes = await self._writer.submit(lambda conn: _release(conn, releases, now))
        self._tell(changes)
        return result

    async def heartbeat(
        self,
        worker_id: str,
        ids: Sequence[str],
        *,
        lease_s: float,
        now: float,
    ) -> list[str]:
        lease = now + lease_s
        return await self._writer.submit(lambda conn: _heartbeat(conn, worker_id, ids, lease))

    async def save_progress(
        self, prediction_id: str, *, worker_id: str, attempt: int, definition: str
    ) -> bool:
        params = {"id": prediction_id, "worker_id": worker_id, "attempt": attempt}
        params["definition"] = definition
        return bool(await self._writer.submit(lambda conn: _ids(conn, _R["SAVE_PROGRESS"], params)))

    async def cancel(self, prediction_id: str, *, now: float) -> tuple[Prediction, Status]:
        result, changes = await self._writer.submit(lambda conn: _cancel(conn, prediction_id, now))
        self._tell(changes)
        return result

    async def reap(self, *, now: float) -> ReapResult:
        result, changes = await self._writer.submit(lambda conn: _reap(conn, now))
        self._tell(changes)
        return result

    async def recover_orphans(self, *, now: float) -> list[str]:
        return await self._writer.submit(
            lambda conn: _ids(conn, _R["RECOVER_ORPHANS"], {"now": now})
        )

    async def purge(self, *, before: float, limit: int) -> list[Prediction]:
        return await self._writer.submit(lambda conn: _purge(conn, before, limit))

    async def claim_deliveries(
        self, limit: int, *, worker_id: str, lease_s: float, now: float
    ) -> list[OutboxRow]:
        params = outbox_claim_params(limit, worker_id=worker_id, lease_s=lease_s, now=now)
        return await self._writer.submit(lambda conn: _claim_deliveries(conn, params))

    async def finish_deliveries(self, results: Sequence[DeliveryResult]) -> None:
        await self._writer.submit(lambda conn: _finish_deliveries(conn, results))

    async def deliveries(self, prediction_id: str) -> tuple[list[OutboxRow], list[DeliveryAttempt]]:
        return self._point.run(lambda conn: _deliveries(conn, prediction_id))

    async def webhook_secrets(self, *, now: float, overlap_s: float) -> list[str]:
        rows = self._point.run(lambda conn: conn.execute(_R["WEBHOOK_SECRETS"]).fetchall())
        return secrets_in_use(rows, now, overlap_s)

    async def rotate_webhook_secret(self, secret: str, *, now: float) -> None:
        await self._writer.submit(lambda conn: _rotate_secret(conn, secret, now))

    async def stats(self) -> dict[str, TargetStats]:
        rows = await self._readers.run(lambda conn: conn.execute(_R["STATS"]).fetchall())
        return stats_from_rows(rows)

    # Last in the class on purpose: inside the class body this name shadows the
    # builtin ``list`` used in the annotations of the methods above.
    async def list(
        self,
        *,
        target: str | None = None,
        status: Status | None = None,
        after_id: str | None = None,
        limit: int = 50,
    ) -> list[Prediction]:
        statement, params = sql.list_query(
            target=target, status=status, after_id=after_id, limit=limit
        )
        rows = await self._readers.run(lambda conn: conn.execute(statement, params).fetchall())
        return [row_to_prediction(r) for r in rows]


def _ignore(_: str) -> None:
    """No one listens yet."""


def _schema_version(conn: sqlite3.Connection) -> str | None:
    try:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.OperationalError:  # no such table: never migrated
        return None
    return None if row is None else str(row[0])


__all__ = ["SqliteStore"]
