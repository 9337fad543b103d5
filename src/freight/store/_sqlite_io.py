"""How :class:`~freight.store.sqlite.SqliteStore` talks to its file.

SQLite takes one writer at a time, and a commit costs more than the statements
it makes durable. So one connection, owned by the event loop's thread, does
*group commit* (:class:`LoopWriter`): every operation submitted during one loop
iteration runs in one ``BEGIN IMMEDIATE`` transaction, committed once, and only
then are the callers' futures resolved. Each operation runs inside its own
SAVEPOINT, so a domain error (a :class:`~freight.errors.ConflictError`, say)
undoes that operation alone and reaches that caller alone; the others commit.

Point reads use a read-only connection on the loop's thread; scans (lists,
stats) use read-only connections on a small thread pool. In WAL mode readers
see the last commit and never wait behind the writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from freight.errors import ConflictError, FreightError, StoreUnavailableError

T = TypeVar("T")
Op = Callable[[sqlite3.Connection], Any]
_Item = tuple[Op, "asyncio.Future[Any]", asyncio.AbstractEventLoop]

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 5000
#: while another process (a node's deliverer) holds the write lock, how often the
#: loop's writer tries again (SQLite's own busy handler would sleep 1, 2, 5 ms... with
#: the event loop's thread blocked)
LOCK_RETRY_S = 0.0005


def connect(path: str, *, read_only: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode (we issue BEGIN ourselves), WAL, busy timeout."""
    if read_only:
        target, uri = Path(path).resolve().as_uri() + "?mode=ro", True
    else:
        target, uri = path, False
    conn = sqlite3.connect(
        target,
        uri=uri,
        isolation_level=None,
        check_same_thread=False,
        timeout=BUSY_TIMEOUT_MS / 1000,
    )
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    if not read_only:
        conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():  # the caller was cancelled; the operation ran anyway
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


def unavailable(exc: sqlite3.Error) -> StoreUnavailableError:
    return StoreUnavailableError(f"SQLite failed: {exc}", driver_error=type(exc).__name__)


def _one(conn: sqlite3.Connection, op: Op) -> tuple[bool, Any]:
    """One operation in its own SAVEPOINT; a database-level failure aborts the group."""
    conn.execute("SAVEPOINT op")
    try:
        value = op(conn)
    except sqlite3.IntegrityError as exc:
        conn.execute("ROLLBACK TO op")
        conn.execute("RELEASE op")
        return False, ConflictError(f"constraint violated: {exc}")
    except sqlite3.Error:
        raise
    except Exception as exc:  # a domain error (or a bug): this caller's alone
        conn.execute("ROLLBACK TO op")
        conn.execute("RELEASE op")
        if not isinstance(exc, FreightError):
            log.exception("SQLite store operation failed")
        return False, exc
    conn.execute("RELEASE op")
    return True, value


class Readers:
    """A small pool of threads, each with its own read-only connection."""

    def __init__(self, path: str, size: int = 2) -> None:
        self._path = path
        self._size = size
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def start(self) -> None:
        self._pool = ThreadPoolExecutor(self._size, thread_name_prefix="freight-sqlite-read")

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        with self._lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self._path, read_only=True)
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    async def run(self, op: Callable[[sqlite3.Connection], T]) -> T:
        if self._pool is None:
            raise StoreUnavailableError("the SQLite store is not open")

        def call() -> T:
            try:
                return op(self._conn())
            except sqlite3.Error as exc:
                raise unavailable(exc) from exc

        return await asyncio.get_running_loop().run_in_executor(self._pool, call)


class LoopWriter:
    """Group commit on the event loop's own thread: no thread hop per operation.

    Measured here, handing each operation to a writer thread cost more (queue,
    wake-up, GIL hand-over) than the SQLite statements themselves, which take
    microseconds with ``synchronous=NORMAL`` in WAL mode (a commit does not
    fsync). Operations submitted during one loop iteration run in the next
    callback, in one transaction. The one slow part of WAL, the checkpoint
    (it fsyncs), is taken off the loop: autocheckpoint is off on this
    connection and a background thread checkpoints passively.
    """

    def __init__(self, path: str, checkpoint_interval_s: float = 1.0) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None
        self._pending: list[tuple[Op, asyncio.Future[Any]]] = []
        self._scheduled = False
        self._locked_since: float | None = None  # another process held the lock then
        self._interval_s = checkpoint_interval_s
        self._stop = threading.Event()
        self._checkpointer: threading.Thread | None = None

    def start(self) -> None:
        try:
            self._conn = connect(self._path)
            self._conn.execute("PRAGMA wal_autocheckpoint = 0")
            # the lock is waited for off the loop's thread (see _flush), not by SQLite
            self._conn.execute("PRAGMA busy_timeout = 0")
        except sqlite3.Error as exc:
            raise unavailable(exc) from exc
        self._stop.clear()
        self._checkpointer = threading.Thread(
            target=self._checkpoint_loop, name="freight-sqlite-checkpoint", daemon=True
        )
        self._checkpointer.start()

    def stop(self) -> None:
        self._stop.set()
        if self._checkpointer is not None:
            self._checkpointer.join()
            self._checkpointer = None
        if self._conn is not None:  # stopping: SQLite may block this thread now
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if self._pending:
            self._flush()
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()
            self._conn = None

    def _checkpoint_loop(self) -> None:
        conn = connect(self._path)
        try:
            while not self._stop.wait(self._interval_s):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:
                    log.warning("SQLite checkpoint failed: %s", exc)
        finally:
            conn.close()

    async def submit(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``op`` in this iteration's group transaction; its result once committed."""
        if self._conn is None:
            raise StoreUnavailableError("the SQLite store is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append((op, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        """Run what is pending in one transaction. While another process holds the
        write lock, try again in ``LOCK_RETRY_S`` with the loop free in between (what
        is submitted meanwhile joins the group), up to the busy timeout."""
        self._scheduled = False
        conn = self._conn
        if conn is not None and self._pending:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if self._wait_for_lock(exc):
                    return
                self._fail_pending(unavailable(exc))
                return
            self._locked_since = None
        batch, self._pending = self._pending, []
        if conn is None:
            outcomes: list[tuple[bool, Any]] = [
                (False, StoreUnavailableError("the SQLite store is closed"))
            ] * len(batch)
        else:
            outcomes = _run_group(conn, [op for op, _ in batch])
        for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
            _settle(future, ok, value)

    def _wait_for_lock(self, exc: sqlite3.OperationalError) -> bool:
        """The lock is taken (SQLITE_BUSY): the flush is scheduled again, unless the
        busy timeout passed since the first try (then False: the group fails)."""
        busy = exc.sqlite_errorcode == sqlite3.SQLITE_BUSY
        if not busy or self._stop.is_set():  # stopping: SQLite itself waited
            return False
        now = time.monotonic()
        if self._locked_since is None:
            self._locked_since = now
        if now - self._locked_since > BUSY_TIMEOUT_MS / 1000:
            self._locked_since = None
            return False
        self._scheduled = True
        asyncio.get_running_loop().call_later(LOCK_RETRY_S, self._flush)
        return True

    def _fail_pending(self, exc: BaseException) -> None:
        batch, self._pending = self._pending, []
        log.warning("SQLite group transaction failed: %s", exc)
        for _, future in batch:
            _settle(future, False, exc)


def _run_group(conn: sqlite3.Connection, ops: list[Op]) -> list[tuple[bool, Any]]:
    """Run ``ops`` in one transaction (begun: BEGIN IMMEDIATE), each in its own
    savepoint (see _one)."""
    try:
        outcomes = [_one(conn, op) for op in ops]
        conn.execute("COMMIT")
        return outcomes
    except sqlite3.Error as exc:
        log.warning("SQLite group transaction failed: %s", exc)
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        return [(False, unavailable(exc))] * len(ops)


class LoopReader:
    """One read-only connection used on the loop's thread, for point reads that take
    microseconds (a thread hop would cost more than the query)."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None

    def start(self) -> None:
        self._conn = connect(self._path, read_only=True)

    def stop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def run(self, op: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            raise StoreUnavailableError("the SQLite store is not open")
        try:
            return op(self._conn)
        except sqlite3.Error as exc:
            raise unavailable(exc) from exc
