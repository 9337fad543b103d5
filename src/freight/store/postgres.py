"""The cluster job store: PostgreSQL through psycopg 3 async and a small pool.

Many agents claim concurrently (``exclusive = False``): the claim takes rows
with ``FOR UPDATE SKIP LOCKED`` so claimers partition the backlog instead of
queueing on each other's row locks. Each method is one transaction of ``ops.py``
driven on one pooled connection (``pool.connection()`` commits, or rolls back on
error); the lock order is ``ops.py``'s.

Outages: every driver or pool failure to reach the server becomes
:class:`~freight.errors.StoreUnavailableError` (the API answers 503). Connect
and acquire timeouts are short so an outage surfaces within seconds, and the
pool checks a connection before lending it, so after a server restart the dead
connections are dropped and replaced without anyone restarting freight. Once a
transaction failed to reach the server, the next ones wait ``DOWN_ACQUIRE_S`` at
most for a connection (not the whole acquire timeout each) until one succeeds: in
an outage every request gets its 503 at once instead of holding its caller 5 s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import AsyncConnectionPool

from freight import metrics
from freight.access import DEFAULT_TENANT
from freight.deliveries import DeliveryAttempt, DeliveryResult, OutboxRow
from freight.errors import ConflictError, StoreUnavailableError
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
from freight.store.rows import claim_params, input_ready_params, outbox_claim_params

Conn = psycopg.AsyncConnection[tuple[Any, ...]]
OnWork = Callable[[str], None]  # called with a target that has new queued work
OnDone = Callable[[str], None]  # called with the id of a prediction now terminal

log = logging.getLogger(__name__)

#: a transaction that lost a deadlock or a serialization conflict is run again (it is
#: a generator made anew, so it re-reads everything); the lock order of ``ops.py``
#: should make this rare, and each retry is logged with PostgreSQL's own message
RETRIES = 4


async def drive(conn: Conn, op: Op[T]) -> T:
    """Run a transaction's statements on this connection (the caller's transaction)."""
    try:
        statement = next(op)
        while True:
            statement = op.send(await _execute(conn, statement))
    except StopIteration as stop:
        result: T = stop.value
        return result


async def _execute(conn: Conn, statement: ops.Sql) -> list[tuple[Any, ...]]:
    text = sql.render(statement.text, "postgresql")
    if not isinstance(statement.params, list):
        cur = await conn.execute(text, statement.params)
        return await cur.fetchall() if cur.description is not None else []
    rows: list[tuple[Any, ...]] = []
    if not statement.params:
        return rows
    returning = "RETURNING" in text
    async with conn.cursor() as cur:  # one pipeline: one round trip for the whole list
        await cur.executemany(text, statement.params, returning=returning)
        while returning:
            rows += await cur.fetchall()
            if not cur.nextset():
                break
    return rows


#: while PostgreSQL is unreachable, how long a transaction waits for a pooled
#: connection before it fails (the pool keeps reconnecting in the background)
DOWN_ACQUIRE_S = 0.25


class PostgresStore:
    """The :class:`~freight.store.base.Store` on PostgreSQL (the cluster shape)."""

    exclusive = False

    def __init__(
        self,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 8,
        connect_timeout_s: float = 3.0,
        acquire_timeout_s: float = 5.0,
    ) -> None:
        self.url = url
        self._pool = AsyncConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            open=False,
            timeout=acquire_timeout_s,
            kwargs={"connect_timeout": max(1, round(connect_timeout_s))},
            check=AsyncConnectionPool.check_connection,
            name="freight-store",
        )
        self._connect_timeout_s = connect_timeout_s
        self._down = False  # the last transaction could not reach the server
        #: per target, the tenant dealt the last row this process claimed (``ops.claim``'s
        #: round robin; each process keeps its own: each one's claims are fair)
        self._turns: dict[str, str] = {}
        self._hands: Hands | None = None

    def hand_off_to(self, hands: Hands | None) -> None:
        """This process's idle replicas: the steps a transaction queues for one of them
        are claimed for it in that transaction (``ops.handing_off``)."""
        self._hands = hands

    async def open(self) -> None:
        try:
            await self._pool.open(wait=True, timeout=self._connect_timeout_s)
        except psycopg.Error as exc:
            await self._pool.close()
            raise StoreUnavailableError(f"PostgreSQL unreachable: {exc}") from exc
        try:
            async with self._connection() as conn:
                version = await _schema_version(conn)
            check_schema_version(version, self.url)
        except BaseException:
            await self._pool.close()
            raise

    async def close(self) -> None:
        await self._pool.close()

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Conn]:
        """A pooled connection in a transaction; driver failures -> StoreUnavailableError."""
        try:
            async with self._pool.connection(timeout=self._acquire_s()) as conn:
                yield conn
        except psycopg.IntegrityError as exc:
            raise ConflictError(f"constraint violated: {exc}") from exc
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            self._down = True
            raise StoreUnavailableError(f"PostgreSQL unavailable: {exc}") from exc
        self._down = False

    def _acquire_s(self) -> float | None:
        """How long to wait for a pooled connection: the pool's timeout, or
        ``DOWN_ACQUIRE_S`` while the server is unreachable (see the module)."""
        return DOWN_ACQUIRE_S if self._down else None

    async def _run(self, make: Callable[[], Op[T]]) -> T:
        """One transaction of ``ops.py``; run again when it lost a deadlock."""
        for attempt in range(1, RETRIES + 1):
            try:
                async with self._pool.connection(timeout=self._acquire_s()) as conn:
                    result = await drive(conn, make())
                self._down = False
                return result
            except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure) as exc:
                if attempt == RETRIES:
                    raise StoreUnavailableError(f"PostgreSQL: {exc.sqlstate} {exc}") from exc
                log.warning(
                    "transaction lost a lock conflict (%s: %s); running it again (%d/%d)",
                    exc.sqlstate,
                    str(exc).strip().replace("\n", " "),
                    attempt,
                    RETRIES - 1,
                )
            except psycopg.IntegrityError as exc:
                raise ConflictError(f"constraint violated: {exc}") from exc
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                self._down = True
                raise StoreUnavailableError(f"PostgreSQL unavailable: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def execute(self, make: Callable[[], Op[T]], *, write: bool = True) -> T:
        """One transaction of the store's other records (keys, audit, usage:
        ``store/tenancy.py``), written once for both engines."""
        return await self._run(make)

    async def _run_told(self, make: Callable[[], Op[tuple[T, Told]]]) -> T:
        """Who to wake is told by the database's own triggers (NOTIFY); the usage the
        committed transaction recorded is counted here."""
        hands = self._hands
        result, told = await self._run(
            lambda: ops.handing_off(make(), hands, self._turns, time.time())
        )
        metrics.record_usage(told.usage)
        if hands is not None:
            for offer, rows in told.handed:
                hands.take(offer, rows)
        return result

    async def listen(
        self, on_work: OnWork, on_done: OnDone, on_outbox: Callable[[], None] | None = None
    ) -> None:
        """Forward ``freight_work`` / ``freight_done`` notifications (see migration 0003)
        until cancelled; reconnects with back-off. A notification missed during an
        outage costs latency only: claim loops and waiters also poll."""
        backoff_s = 0.5
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.url,
                    autocommit=True,
                    connect_timeout=max(1, round(self._connect_timeout_s)),
                )
                async with conn:
                    await conn.execute("LISTEN freight_work")
                    await conn.execute("LISTEN freight_done")
                    await conn.execute("LISTEN freight_outbox")
                    backoff_s = 0.5
                    async for note in conn.notifies():
                        if note.channel == "freight_work":
                            on_work(note.payload)
                        elif note.channel == "freight_done":
                            on_done(note.payload)
                        elif on_outbox is not None:
                            on_outbox()
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                log.warning("LISTEN connection lost (%s); retrying in %.1fs", exc, backoff_s)
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, 10.0)

    async def ping(self) -> None:
        async with self._connection() as conn:
            await conn.execute("SELECT 1")

    async def create(self, prediction: Prediction) -> tuple[Prediction, bool]:
        return await self._run(lambda: ops.create(prediction))

    async def create_many(
        self, rows: Sequence[Prediction]
    ) -> list[tuple[Prediction, bool] | ConflictError]:
        return await self._run(lambda: ops.create_many(rows))

    async def create_run(
        self, run: Prediction, steps: Sequence[Prediction]
    ) -> tuple[Prediction, bool]:
        return await self._run_told(lambda: ops.create_run(run, steps))

    async def steps(self, run_id: str, *, heads: bool = False) -> list[Prediction]:
        statement = sql.RUN_HEADS if heads else sql.RUN_ROWS
        return await self._run(lambda: _op.fetch(statement, {"run_id": run_id}))

    async def get(self, prediction_id: str) -> Prediction | None:
        return await self._run(lambda: _op.get(prediction_id))

    async def get_many(self, ids: Sequence[str]) -> list[Prediction]:
        return await self._run(lambda: _op.get_many(ids))

    def sibling(self) -> PostgresStore:
        """Its own small pool on the same database (the deliverer's: a claim, a read
        and a record per batch)."""
        return PostgresStore(self.url, min_size=1, max_size=4)

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
        return await self._run_told(lambda: ops.mark_input_ready(params))

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
        return await self._run(lambda: ops.claim(params, self._turns))

    async def complete(self, completions: Sequence[Completion]) -> list[str]:
        return await self._run_told(lambda: ops.complete(completions))

    async def release(self, releases: Sequence[Release], *, now: float) -> dict[str, Status]:
        return await self._run_told(lambda: ops.release(releases, now))

    async def heartbeat(
        self,
        worker_id: str,
        ids: Sequence[str],
        *,
        lease_s: float,
        now: float,
    ) -> list[str]:
        return await self._run(lambda: ops.heartbeat(worker_id, ids, now + lease_s))

    async def save_progress(
        self, prediction_id: str, *, worker_id: str, attempt: int, definition: str
    ) -> bool:
        params = {"id": prediction_id, "worker_id": worker_id, "attempt": attempt}
        params["definition"] = definition
        return await self._run(lambda: ops.save_progress(params))

    async def cancel(self, prediction_id: str, *, now: float) -> tuple[Prediction, Status]:
        return await self._run_told(lambda: ops.cancel(prediction_id, now))

    async def redrive(self, run_id: str, *, now: float) -> Prediction:
        return await self._run_told(lambda: ops.redrive(run_id, now))

    async def answer_callback(self, claim: Claim, answer: Answer, *, now: float) -> Prediction:
        return await self._run_told(lambda: ops.answer_callback(claim, answer, now))

    async def heartbeat_callback(
        self, claim: Claim, *, heartbeat_s: float | None, now: float
    ) -> Prediction:
        return await self._run(lambda: ops.heartbeat_callback(claim, heartbeat_s, now))

    async def reap(self, *, now: float, backoff_s: float = RETRY_BACKOFF_S) -> ReapResult:
        return await self._run_told(lambda: ops.reap(now, backoff_s))

    async def recover_orphans(self, *, now: float, backoff_s: float = RETRY_BACKOFF_S) -> list[str]:
        """Implemented for completeness; a shared PostgreSQL store must not call it
        (other live processes hold those ``running`` rows): the caller checks
        :attr:`exclusive`."""
        return await self._run_told(lambda: ops.recover_orphans(now, backoff_s))

    async def purge(self, *, before: float, limit: int) -> list[Prediction]:
        return await self._run(lambda: ops.purge(before, limit))

    async def claim_deliveries(
        self, limit: int, *, worker_id: str, lease_s: float, now: float
    ) -> list[OutboxRow]:
        params = outbox_claim_params(limit, worker_id=worker_id, lease_s=lease_s, now=now)
        return await self._run(lambda: ops.claim_deliveries(params))

    async def finish_deliveries(self, results: Sequence[DeliveryResult]) -> None:
        await self._run(lambda: ops.finish_deliveries(results))

    async def deliveries(self, prediction_id: str) -> tuple[list[OutboxRow], list[DeliveryAttempt]]:
        return await self._run(lambda: ops.deliveries(prediction_id))

    async def delivery_counts(self, prediction_id: str) -> list[tuple[str, int, int]]:
        return await self._run(lambda: ops.delivery_counts(prediction_id))

    async def deliveries_open(self) -> bool:
        return await self._run(ops.deliveries_open)

    async def webhook_secrets(
        self, *, now: float, overlap_s: float, tenant: str = DEFAULT_TENANT
    ) -> list[str]:
        return await self._run(lambda: ops.webhook_secrets(now, overlap_s, tenant))

    async def rotate_webhook_secret(
        self, secret: str, *, now: float, tenant: str = DEFAULT_TENANT
    ) -> None:
        await self._run(lambda: ops.rotate_webhook_secret(secret, now, tenant))

    async def stats(self) -> dict[str, TargetStats]:
        return await self._run(ops.stats)

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
        return await self._run(
            lambda: ops.listing(
                target=target,
                status=status,
                kind=kind,
                after_id=after_id,
                limit=limit,
                tenant=tenant,
                targets=targets,
            )
        )


async def _schema_version(conn: Conn) -> str | None:
    cur = await conn.execute("SELECT to_regclass('alembic_version') IS NOT NULL")
    row = await cur.fetchone()
    if row is None or not row[0]:
        return None
    cur = await conn.execute("SELECT version_num FROM alembic_version")
    version = await cur.fetchone()
    return None if version is None else str(version[0])
