"""The embedded job store: one SQLite file, one writer connection, group commit.

In the embedded shape this process is the only writer (``exclusive = True``):
every write is a transaction of ``ops.py`` driven synchronously (:func:`drive`) on
the event loop's thread inside the next group transaction
(``_sqlite_io.LoopWriter``); point reads use a read-only connection on the same
thread, scans a small pool of reader threads. Synchronous on purpose: the stdlib
``sqlite3`` driver called from one thread is ~5x faster than an async wrapper
hopping threads per statement (measured on this kind of machine).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from freight import metrics
from freight.access import DEFAULT_TENANT
from freight.deliveries import DeliveryAttempt, DeliveryResult, OutboxRow
from freight.errors import ConflictError
from freight.events import Hands
from freight.pipelines.callback import Answer, Claim
from freight.prediction import (
    RETRY_BACKOFF_S,
    Completion,
    Kind,
    Prediction,
    ReapResult,
    Release,
    Status,
    TargetStats,
)
from freight.store import _op, ops, sql
from freight.store._migrate import check_schema_version
from freight.store._op import Op, T, Told
from freight.store._sqlite_io import LoopReader, LoopWriter, Readers
from freight.store.rows import (
    claim_params,
    input_ready_params,
    outbox_claim_params,
)


def drive(conn: sqlite3.Connection, op: Op[T]) -> T:
    """Run a transaction's statements on this connection (the caller's transaction).
    Lock-only statements are skipped: this connection is the only writer."""
    try:
        statement = next(op)
        while True:
            statement = op.send(_execute(conn, statement))
    except StopIteration as stop:
        result: T = stop.value
        return result


def _execute(conn: sqlite3.Connection, statement: ops.Sql) -> list[tuple[Any, ...]]:
    if statement.lock_only:
        return []
    text = sql.render(statement.text, "sqlite")
    if isinstance(statement.params, list):
        if "RETURNING" not in text:  # nothing to read back: one call for every row
            conn.executemany(text, statement.params)
            return []
        rows: list[tuple[Any, ...]] = []
        for params in statement.params:
            rows += conn.execute(text, params).fetchall()
        return rows
    return conn.execute(text, statement.params).fetchall()


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
        self._on_outbox: Callable[[], None] = _nobody
        #: per target, the tenant dealt the last claimed row (``ops.claim``'s round robin)
        self._turns: dict[str, str] = {}
        self._hands: Hands | None = None

    def hand_off_to(self, hands: Hands | None) -> None:
        """This process's idle replicas: the steps a transaction queues for one of them
        are claimed for it in that transaction (``ops.handing_off``)."""
        self._hands = hands

    def _tell(self, told: Told) -> None:
        """After a commit: give the rows handed off to their replicas, wake claim loops
        of targets whose steps a run's advancement queued, waiters of rows it ended (on
        PostgreSQL, its triggers NOTIFY); count the usage it recorded."""
        metrics.record_usage(told.usage)
        if self._hands is not None:
            for offer, rows in told.handed:
                self._hands.take(offer, rows)
        for target in told.queued:
            self._on_work(target)
        for prediction_id in told.finished:
            self._on_done(prediction_id)
        if told.outbox:
            self._on_outbox()

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
        self._on_outbox = on_outbox or _nobody

    async def ping(self) -> None:
        await self._readers.run(lambda conn: conn.execute("SELECT 1").fetchall())

    async def _write(self, op: Op[T]) -> T:
        return await self._writer.submit(lambda conn: drive(conn, op))

    async def _write_told(self, op: Op[tuple[T, Told]]) -> T:
        op = ops.handing_off(op, self._hands, self._turns, time.time())
        result, told = await self._write(op)
        self._tell(told)
        return result

    def _read(self, op: Op[T]) -> T:
        """A point read on the event loop's thread (index lookups: microseconds)."""
        return self._point.run(lambda conn: drive(conn, op))

    async def _scan(self, op: Op[T]) -> T:
        """A read that may scan: on a reader thread."""
        return await self._readers.run(lambda conn: drive(conn, op))

    async def execute(self, make: Callable[[], Op[T]], *, write: bool = True) -> T:
        """One transaction of the store's other records (keys, audit, usage:
        ``store/tenancy.py``), written once for both engines."""
        return await (self._write(make()) if write else self._scan(make()))

    async def create(self, prediction: Prediction) -> tuple[Prediction, bool]:
        return await self._write(ops.create(prediction))

    async def get(self, prediction_id: str) -> Prediction | None:
        return self._read(_op.get(prediction_id))

    async def get_many(self, ids: Sequence[str]) -> list[Prediction]:
        return self._read(_op.get_many(ids))

    def sibling(self) -> SqliteStore:
        """Another writer connection on the same file (WAL: readers never wait; two
        writers take turns on SQLite's lock, within ``busy_timeout``)."""
        return SqliteStore(self.path)

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
        return await self._write_told(ops.mark_input_ready(params))

    async def create_many(
        self, rows: Sequence[Prediction]
    ) -> list[tuple[Prediction, bool] | ConflictError]:
        return await self._write(ops.create_many(rows))

    async def create_run(
        self, run: Prediction, steps: Sequence[Prediction]
    ) -> tuple[Prediction, bool]:
        return await self._write_told(ops.create_run(run, steps))

    async def steps(self, run_id: str, *, heads: bool = False) -> list[Prediction]:
        statement = sql.RUN_HEADS if heads else sql.RUN_ROWS
        return self._read(_op.fetch(statement, {"run_id": run_id}))

    async def claim(
        self,
        target: str,
        limit: int,
        *,
        worker_id: str,
        lease_s: float,
        now: float,
        caps: Mapping[str, int] | None = None,
    ) -> list[Prediction]:
        params = claim_params(target, limit, worker_id=worker_id, lease_s=lease_s, now=now)
        params["caps"] = caps
        return await self._write(ops.claim(params, self._turns))

    async def complete(self, completions: Sequence[Completion]) -> list[str]:
        return await self._write_told(ops.complete(completions))

    async def release(self, releases: Sequence[Release], *, now: float) -> dict[str, Status]:
        return await self._write_told(ops.release(releases, now))

    async def heartbeat(
        self,
        worker_id: str,
        ids: Sequence[str],
        *,
        lease_s: float,
        now: float,
    ) -> list[str]:
        return await self._write(ops.heartbeat(worker_id, ids, now + lease_s))

    async def save_progress(
        self, prediction_id: str, *, worker_id: str, attempt: int, definition: str
    ) -> bool:
        params = {"id": prediction_id, "worker_id": worker_id, "attempt": attempt}
        return await self._write(ops.save_progress(params | {"definition": definition}))

    async def cancel(self, prediction_id: str, *, now: float) -> tuple[Prediction, Status]:
        return await self._write_told(ops.cancel(prediction_id, now))

    async def redrive(self, run_id: str, *, now: float) -> Prediction:
        return await self._write_told(ops.redrive(run_id, now))

    async def answer_callback(self, claim: Claim, answer: Answer, *, now: float) -> Prediction:
        return await self._write_told(ops.answer_callback(claim, answer, now))

    async def heartbeat_callback(
        self, claim: Claim, *, heartbeat_s: float | None, now: float
    ) -> Prediction:
        return await self._write(ops.heartbeat_callback(claim, heartbeat_s, now))

    async def reap(self, *, now: float, backoff_s: float = RETRY_BACKOFF_S) -> ReapResult:
        return await self._write_told(ops.reap(now, backoff_s))

    async def recover_orphans(self, *, now: float, backoff_s: float = RETRY_BACKOFF_S) -> list[str]:
        return await self._write_told(ops.recover_orphans(now, backoff_s))

    async def purge(self, *, before: float, limit: int) -> list[Prediction]:
        return await self._write(ops.purge(before, limit))

    async def claim_deliveries(
        self, limit: int, *, worker_id: str, lease_s: float, now: float
    ) -> list[OutboxRow]:
        params = outbox_claim_params(limit, worker_id=worker_id, lease_s=lease_s, now=now)
        return await self._write(ops.claim_deliveries(params))

    async def finish_deliveries(self, results: Sequence[DeliveryResult]) -> None:
        await self._write(ops.finish_deliveries(results))

    async def deliveries(self, prediction_id: str) -> tuple[list[OutboxRow], list[DeliveryAttempt]]:
        return self._read(ops.deliveries(prediction_id))

    async def delivery_counts(self, prediction_id: str) -> list[tuple[str, int, int]]:
        # a point read on the loop's thread: as a scan (a reader thread) its hop cost more
        # than the query, on every create's answer under B10's load
        return self._read(ops.delivery_counts(prediction_id))

    async def deliveries_open(self) -> bool:
        return self._read(ops.deliveries_open())

    async def webhook_secrets(
        self, *, now: float, overlap_s: float, tenant: str = DEFAULT_TENANT
    ) -> list[str]:
        return self._read(ops.webhook_secrets(now, overlap_s, tenant))

    async def rotate_webhook_secret(
        self, secret: str, *, now: float, tenant: str = DEFAULT_TENANT
    ) -> None:
        await self._write(ops.rotate_webhook_secret(secret, now, tenant))

    async def stats(self) -> dict[str, TargetStats]:
        return await self._scan(ops.stats())

    # Last in the class on purpose: inside the class body this name shadows the
    # builtin ``list`` used in the annotations of the methods above.
    async def list(
        self,
        *,
        target: str | None = None,
        status: Status | None = None,
        kind: Kind | None = None,
        after_id: str | None = None,
        limit: int = 50,
        tenant: str | None = None,
        targets: Sequence[str] | None = None,
    ) -> list[Prediction]:
        return await self._scan(
            ops.listing(
                target=target,
                status=status,
                kind=kind,
                after_id=after_id,
                limit=limit,
                tenant=tenant,
                targets=targets,
            )
        )


def _ignore(_: str) -> None:
    """No one listens yet."""


def _nobody() -> None:
    """No deliverer listens."""


def _schema_version(conn: sqlite3.Connection) -> str | None:
    try:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.OperationalError:  # no such table: never migrated
        return None
    return None if row is None else str(row[0])


__all__ = ["SqliteStore"]
