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
from collections.abc import Callable, Sequence
from typing import Any

from freight.errors import ConflictError, NotFoundError
from freight.prediction import Completion, Prediction, ReapResult, Release, Status, TargetStats
from freight.store import sql
from freight.store._migrate import check_schema_version
from freight.store._sqlite_io import LoopReader, LoopWriter, Readers
from freight.store.rows import (
    check_idempotent,
    claim_order,
    claim_params,
    completion_params,
    input_ready_params,
    not_awaiting_input,
    prediction_params,
    release_params,
    row_to_prediction,
    stats_from_rows,
)

_R = sql.rendered("sqlite")


def _ids(conn: sqlite3.Connection, statement: str, params: dict[str, Any]) -> list[str]:
    return [row[0] for row in conn.execute(statement, params).fetchall()]


def _get(conn: sqlite3.Connection, prediction_id: str) -> Prediction | None:
    row = conn.execute(_R["GET"], {"id": prediction_id}).fetchone()
    return None if row is None else row_to_prediction(row)


def _create(conn: sqlite3.Connection, prediction: Prediction) -> tuple[Prediction, bool]:
    rows = conn.execute(_R["INSERT"], prediction_params(prediction)).fetchall()
    if rows:
        return row_to_prediction(rows[0]), True
    key = prediction.idempotency_key
    row = conn.execute(_R["GET_BY_IDEMPOTENCY_KEY"], {"key": key}).fetchone()
    if row is None:  # pragma: no cover - DO NOTHING only fires on this key
        raise ConflictError("insert was ignored", code="conflict", id=prediction.id)
    return check_idempotent(row_to_prediction(row), prediction), False


def _mark_input_ready(conn: sqlite3.Connection, params: dict[str, Any]) -> Prediction:
    rows = conn.execute(_R["MARK_INPUT_READY"], params).fetchall()
    if rows:
        return row_to_prediction(rows[0])
    raise not_awaiting_input(params["id"], _get(conn, params["id"]))


def _claim(conn: sqlite3.Connection, params: dict[str, Any]) -> list[Prediction]:
    rows = conn.execute(_R["CLAIM"], params).fetchall()
    return claim_order(row_to_prediction(r) for r in rows)


def _complete(conn: sqlite3.Connection, completions: Sequence[Completion]) -> list[str]:
    applied: list[str] = []
    for completion in completions:
        applied += _ids(conn, _R["COMPLETE"], completion_params(completion))
    return applied


def _release(
    conn: sqlite3.Connection, releases: Sequence[Release], now: float
) -> dict[str, Status]:
    result: dict[str, Status] = {}
    for release in releases:
        for row in conn.execute(_R["RELEASE"], release_params(release, now)).fetchall():
            result[row[0]] = Status(row[1])
    return result


def _heartbeat(
    conn: sqlite3.Connection, worker_id: str, ids: Sequence[str], lease_expires_at: float
) -> list[str]:
    in_list, params = sql.expand_in("id", ids)
    statement = sql.render(sql.HEARTBEAT.format(ids=in_list), "sqlite")
    params |= {"worker_id": worker_id, "lease_expires_at": lease_expires_at}
    held = set(_ids(conn, statement, params))
    return [i for i in ids if i not in held]


def _cancel(conn: sqlite3.Connection, prediction_id: str, now: float) -> tuple[Prediction, Status]:
    current = _get(conn, prediction_id)
    if current is None:
        raise NotFoundError("prediction not found", id=prediction_id)
    if current.status.terminal:
        return current, current.status
    row = conn.execute(_R["CANCEL"], {"id": prediction_id, "now": now}).fetchone()
    return row_to_prediction(row), current.status


def _reap(conn: sqlite3.Connection, now: float) -> ReapResult:
    params = {"now": now}
    expired = _ids(conn, _R["REAP_TTL"], params) + _ids(conn, _R["REAP_UPLOAD"], params)
    failed = _ids(conn, _R["REAP_LEASE_FAIL"], params)
    requeued = _ids(conn, _R["REAP_LEASE_REQUEUE"], params)
    return ReapResult(requeued=requeued, failed=failed, expired=expired)


def _purge(conn: sqlite3.Connection, before: float, limit: int) -> list[Prediction]:
    rows = conn.execute(_R["PURGE"], {"before": before, "limit": limit}).fetchall()
    # RETURNING gives no order on SQLite: oldest first, as on PostgreSQL
    return sorted((row_to_prediction(r) for r in rows), key=_finished_order)


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

    async def listen(self, on_work: Callable[[str], None], on_done: Callable[[str], None]) -> None:
        """Nothing to listen to: the only writer is this process, whose in-memory
        events already wake claim loops and waiters."""

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
    ) -> Prediction:
        params = input_ready_params(
            prediction_id,
            input_key=input_key,
            input_content_type=input_content_type,
            input_bytes=input_bytes,
            now=now,
        )
        return await self._writer.submit(lambda conn: _mark_input_ready(conn, params))

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
        return await self._writer.submit(lambda conn: _complete(conn, completions))

    async def release(self, releases: Sequence[Release], *, now: float) -> dict[str, Status]:
        return await self._writer.submit(lambda conn: _release(conn, releases, now))

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

    async def cancel(self, prediction_id: str, *, now: float) -> tuple[Prediction, Status]:
        return await self._writer.submit(lambda conn: _cancel(conn, prediction_id, now))

    async def reap(self, *, now: float) -> ReapResult:
        return await self._writer.submit(lambda conn: _reap(conn, now))

    async def recover_orphans(self, *, now: float) -> list[str]:
        return await self._writer.submit(
            lambda conn: _ids(conn, _R["RECOVER_ORPHANS"], {"now": now})
        )

    async def purge(self, *, before: float, limit: int) -> list[Prediction]:
        return await self._writer.submit(lambda conn: _purge(conn, before, limit))

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


def _schema_version(conn: sqlite3.Connection) -> str | None:
    try:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.OperationalError:  # no such table: never migrated
        return None
    return None if row is None else str(row[0])


__all__ = ["SqliteStore"]
