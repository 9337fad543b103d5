"""The cluster job store: PostgreSQL through psycopg 3 async and a small pool.

Many agents claim concurrently (``exclusive = False``): the claim takes rows
with ``FOR UPDATE SKIP LOCKED`` so claimers partition the backlog instead of
queueing on each other's row locks. Each method is one transaction on one
pooled connection (``pool.connection()`` commits, or rolls back on error).

Outages: every driver or pool failure to reach the server becomes
:class:`~freight.errors.StoreUnavailableError` (the API answers 503). Connect
and acquire timeouts are short so an outage surfaces within seconds, and the
pool checks a connection before lending it, so after a server restart the dead
connections are dropped and replaced without anyone restarting freight.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from freight.deliveries import DeliveryAttempt, DeliveryResult, DeliveryStatus, OutboxRow
from freight.errors import ConflictError, NotFoundError, StoreUnavailableError
from freight.ids import new_id
from freight.pipelines.runs import Changes, aadvance_all
from freight.prediction import Completion, Prediction, ReapResult, Release, Status, TargetStats
from freight.store import sql
from freight.store._migrate import check_schema_version
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

Conn = psycopg.AsyncConnection[tuple[Any, ...]]
OnWork = Callable[[str], None]  # called with a target that has new queued work
OnDone = Callable[[str], None]  # called with the id of a prediction now terminal

log = logging.getLogger(__name__)

# Rendered once: ``{skip_locked}`` filled, ``:name`` -> ``%(name)s``.
_R = sql.rendered("postgresql")


async def _ids(conn: Conn, statement: str, params: dict[str, Any]) -> list[str]:
    cur = await conn.execute(statement, params)
    return [row[0] for row in await cur.fetchall()]


async def _rows(conn: Conn, statement: str, params: dict[str, Any]) -> list[Prediction]:
    cur = await conn.execute(statement, params)
    return [row_to_prediction(r) for r in await cur.fetchall()]


async def _executemany_ids(conn: Conn, statement: str, params: list[dict[str, Any]]) -> list[Any]:
    """Run ``statement`` per parameter set in one pipeline; every returned row."""
    rows: list[Any] = []
    if not params:
        return rows
    async with conn.cursor() as cur:
        await cur.executemany(statement, params, returning=True)
        while True:
            rows += await cur.fetchall()
            if not cur.nextset():
                break
    return rows


async def _advance(conn: Conn, run_ids: Sequence[str | None], now: float) -> Changes:
    """Advance the pipeline runs these rows belong to, in the caller's transaction. The
    run row is locked first (FOR UPDATE): two workers finishing steps of one run at
    once advance it one after the other, each seeing the other's step finished."""
    wanted = [r for r in run_ids if r is not None]
    if not wanted:
        return Changes()

    async def load(run_id: str) -> tuple[Prediction | None, list[Prediction]]:
        run = await _rows(conn, _R["GET_FOR_UPDATE"], {"id": run_id})
        return (run[0] if run else None), await _rows(conn, _R["RUN_ROWS"], {"run_id": run_id})

    async def save(changes: Changes) -> None:
        async with conn.cursor() as cur:
            if changes.updated:
                params = [prediction_params(r) for r in changes.updated.values()]
                await cur.executemany(_R["UPDATE_ROW"], params)
            if changes.inserted:
                params = [prediction_params(r) for r in changes.inserted]
                await cur.executemany(_R["INSERT_STEP"], params)

    return await aadvance_all(wanted, load, save, now=now, new_id=new_id)


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
            async with self._pool.connection() as conn:
                yield conn
        except psycopg.IntegrityError as exc:
            raise ConflictError(f"constraint violated: {exc}") from exc
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise StoreUnavailableError(f"PostgreSQL unavailable: {exc}") from exc

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
        async with self._connection() as conn:
            rows = await _rows(conn, _R["INSERT"], prediction_params(prediction))
            if rows:
                return rows[0], True
            key = {"key": prediction.idempotency_key}
            existing = await _rows(conn, _R["GET_BY_IDEMPOTENCY_KEY"], key)
            if not existing:  # pragma: no cover - DO NOTHING only fires on this key
                raise ConflictError("insert was ignored", code="conflict", id=prediction.id)
            return check_idempotent(existing[0], prediction), False

    async def create_run(
        self, run: Prediction, steps: Sequence[Prediction]
    ) -> tuple[Prediction, bool]:
        async with self._connection() as conn:
            rows = await _rows(conn, _R["INSERT"], prediction_params(run))
            if not rows:
                key = {"key": run.idempotency_key}
                existing = await _rows(conn, _R["GET_BY_IDEMPOTENCY_KEY"], key)
                if not existing:  # pragma: no cover - DO NOTHING only fires on this key
                    raise ConflictError("insert was ignored", code="conflict", id=run.id)
                return check_idempotent(existing[0], run), False
            async with conn.cursor() as cur:
                await cur.executemany(_R["INSERT_STEP"], [prediction_params(s) for s in steps])
            changes = await _advance(conn, [run.id], run.created_at)
        return changes.updated.get(run.id, rows[0]), True

    async def steps(self, run_id: str) -> list[Prediction]:
        async with self._connection() as conn:
            return await _rows(conn, _R["RUN_ROWS"], {"run_id": run_id})

    async def get(self, prediction_id: str) -> Prediction | None:
        async with self._connection() as conn:
            rows = await _rows(conn, _R["GET"], {"id": prediction_id})
        return rows[0] if rows else None

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
        async with self._connection() as conn:
            rows = await _rows(conn, _R["MARK_INPUT_READY"], params)
            if not rows:
                current = await _rows(conn, _R["GET"], {"id": prediction_id})
                raise not_awaiting_input(prediction_id, current[0] if current else None)
            if rows[0].kind != "pipeline":
                return rows[0]
            changes = await _advance(conn, [rows[0].id], now)  # a run got its input
        return changes.updated.get(rows[0].id, rows[0])

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
        async with self._connection() as conn:
            return claim_order(await _rows(conn, _R["CLAIM"], params))

    async def complete(self, completions: Sequence[Completion]) -> list[str]:
        params = [completion_params(c) for c in completions]
        async with self._connection() as conn:
            rows = await _executemany_ids(conn, _R["COMPLETE"], params)
            finished_at = max((c.finished_at for c in completions), default=0.0)
            await _advance(conn, [row[1] for row in rows], finished_at)
        return [row[0] for row in rows]

    async def release(self, releases: Sequence[Release], *, now: float) -> dict[str, Status]:
        params = [release_params(r, now) for r in releases]
        async with self._connection() as conn:
            rows = await _executemany_ids(conn, _R["RELEASE"], params)
            await _advance(conn, [row[2] for row in rows if Status(row[1]).terminal], now)
        return {row[0]: Status(row[1]) for row in rows}

    async def heartbeat(
        self,
        worker_id: str,
        ids: Sequence[str],
        *,
        lease_s: float,
        now: float,
    ) -> list[str]:
        in_list, params = sql.expand_in("id", ids)
        statement = sql.render(sql.HEARTBEAT.format(ids=in_list), "postgresql")
        params |= {"worker_id": worker_id, "lease_expires_at": now + lease_s}
        async with self._connection() as conn:
            held = set(await _ids(conn, statement, params))
        return [i for i in ids if i not in held]

    async def save_progress(
        self, prediction_id: str, *, worker_id: str, attempt: int, definition: str
    ) -> bool:
        params = {"id": prediction_id, "worker_id": worker_id, "attempt": attempt}
        params["definition"] = definition
        async with self._connection() as conn:
            return bool(await _ids(conn, _R["SAVE_PROGRESS"], params))

    async def cancel(self, prediction_id: str, *, now: float) -> tuple[Prediction, Status]:
        async with self._connection() as conn:
            current = await _rows(conn, _R["GET_FOR_UPDATE"], {"id": prediction_id})
            if not current:
                raise NotFoundError("prediction not found", id=prediction_id)
            before = current[0]
            if before.status.terminal:
                return before, before.status
            rows = await _rows(conn, _R["CANCEL"], {"id": prediction_id, "now": now})
            await _advance(conn, cancel_targets(rows[0]), now)
            return rows[0], before.status

    async def reap(self, *, now: float) -> ReapResult:
        params = {"now": now}
        names = ("REAP_TTL", "REAP_UPLOAD", "REAP_RUN_TIMEOUT", "REAP_LEASE_FAIL")
        async with self._connection() as conn:
            ended = []
            for name in names:
                cur = await conn.execute(_R[name], params)
                ended.append(await cur.fetchall())
            requeued = await _ids(conn, _R["REAP_LEASE_REQUEUE"], params)
            await _advance(conn, reap_runs(ended), now)
        return reap_result(ended, requeued)

    async def recover_orphans(self, *, now: float) -> list[str]:
        """Implemented for completeness; a shared PostgreSQL store must not call it
        (other live processes hold those ``running`` rows): the caller checks
        :attr:`exclusive`."""
        async with self._connection() as conn:
            return await _ids(conn, _R["RECOVER_ORPHANS"], {"now": now})

    async def purge(self, *, before: float, limit: int) -> list[Prediction]:
        params = {"before": before, "limit": limit}
        async with self._connection() as conn:
            rows = await _rows(conn, _R["PURGE"], params)
            in_list, ids = sql.expand_in("id", [p.id for p in rows])
            for statement in (sql.PURGE_OUTBOX, sql.PURGE_ATTEMPTS):
                await conn.execute(sql.render(statement.format(ids=in_list), "postgresql"), ids)
        # RETURNING's order is not the subquery's: oldest first, as documented
        return sorted(rows, key=lambda p: (p.finished_at or 0.0, p.id))

    async def claim_deliveries(
        self, limit: int, *, worker_id: str, lease_s: float, now: float
    ) -> list[OutboxRow]:
        params = outbox_claim_params(limit, worker_id=worker_id, lease_s=lease_s, now=now)
        async with self._connection() as conn:
            await conn.execute(_R["REQUEUE_SENDING"], params)
            cur = await conn.execute(_R["CLAIM_DELIVERIES"], params)
            rows = [outbox_row(r) for r in await cur.fetchall()]
        return sorted(rows, key=lambda r: (r.next_at, r.id))

    async def finish_deliveries(self, results: Sequence[DeliveryResult]) -> None:
        async with self._connection() as conn:
            for result in results:
                params = delivery_params(result)
                cur = await conn.execute(_R["FINISH_DELIVERY"], params)
                held = await cur.fetchone()
                if held is None:
                    continue  # lost the lease meanwhile: another worker owns the row now
                prediction_id, subscription = held
                await conn.execute(_R["INSERT_ATTEMPT"], params | {"prediction_id": prediction_id})
                if result.status == DeliveryStatus.STOPPED:
                    stop = {"prediction_id": prediction_id, "subscription": subscription}
                    await conn.execute(_R["STOP_SUBSCRIPTION"], stop | {"at": result.at})

    async def deliveries(self, prediction_id: str) -> tuple[list[OutboxRow], list[DeliveryAttempt]]:
        params = {"id": prediction_id}
        async with self._connection() as conn:
            cur = await conn.execute(_R["OUTBOX_OF"], params)
            rows = [outbox_row(r) for r in await cur.fetchall()]
            cur = await conn.execute(_R["ATTEMPTS_OF"], params)
            attempts = [attempt_row(r) for r in await cur.fetchall()]
        return rows, attempts

    async def webhook_secrets(self, *, now: float, overlap_s: float) -> list[str]:
        async with self._connection() as conn:
            cur = await conn.execute(_R["WEBHOOK_SECRETS"])
            return secrets_in_use(await cur.fetchall(), now, overlap_s)

    async def rotate_webhook_secret(self, secret: str, *, now: float) -> None:
        async with self._connection() as conn:
            await conn.execute("LOCK TABLE webhook_secrets IN EXCLUSIVE MODE")
            await conn.execute(_R["RETIRE_SECRETS"], {"now": now})
            await conn.execute(_R["INSERT_SECRET"], {"secret": secret, "now": now})

    async def stats(self) -> dict[str, TargetStats]:
        async with self._connection() as conn:
            cur = await conn.execute(_R["STATS"])
            return stats_from_rows(await cur.fetchall())

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
        async with self._connection() as conn:
            return await _rows(conn, sql.render(statement, "postgresql"), params)


async def _schema_version(conn: Conn) -> str | None:
    cur = await conn.execute("SELECT to_regclass('alembic_version') IS NOT NULL")
    row = await cur.fetchone()
    if row is None or not row[0]:
        return None
    cur = await conn.execute("SELECT version_num FROM alembic_version")
    version = await cur.fetchone()
    return None if version is None else str(version[0])
