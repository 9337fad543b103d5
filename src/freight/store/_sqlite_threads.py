"""The threads behind :class:`~freight.store.sqlite.SqliteStore`.

SQLite takes one writer at a time, and a commit (an fsync of the WAL) costs far
more than the statements it makes durable. So one thread owns the only write
connection and does *group commit*: it takes every operation waiting in its
queue, runs them all in one ``BEGIN IMMEDIATE`` transaction, commits once, and
only then resolves each caller's future. Each operation runs inside its own
SAVEPOINT, so a domain error (a :class:`~freight.errors.ConflictError`, say)
undoes that operation alone and reaches that caller alone; the others commit.

Reads use separate read-only connections on a small thread pool: in WAL mode
they see the last commit and never wait behind the writer's queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
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
MAX_GROUP = 512  # operations per transaction: bounds a commit's latency


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


class Writer:
    """One thread, one write connection, group commit of queued operations."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None

    def start(self) -> None:
        """Open the connection here (so failures raise in the caller), then start."""
        try:
            self._conn = connect(self._path)
        except sqlite3.Error as exc:
            raise unavailable(exc) from exc
        self._thread = threading.Thread(target=self._run, name="freight-sqlite-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish what is queued, then close (blocking: call it from a thread)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def submit(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``op`` in the next group transaction; its result once committed."""
        if self._thread is None:
            raise StoreUnavailableError("the SQLite store is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((op, future, loop))
        return await future

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < MAX_GROUP:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            self._execute(batch)

    def _execute(self, batch: list[_Item]) -> None:
        conn = self._conn
        assert conn is not None
        outcomes: list[tuple[bool, Any]]
        try:
            conn.execute("BEGIN IMMEDIATE")
            outcomes = [self._one(conn, op) for op, _, _ in batch]
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            log.warning("SQLite group transaction failed: %s", exc)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            outcomes = [(False, unavailable(exc))] * len(batch)
        for (_, future, loop), (ok, value) in zip(batch, outcomes, strict=True):
            with contextlib.suppress(RuntimeError):  # the caller's loop is closed
                loop.call_soon_threadsafe(_settle, future, ok, value)

    @staticmethod
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
