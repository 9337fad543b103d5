"""Small objects of the local backend, kept in one SQLite file instead of a file each.

Why: on this kind of machine creating a file costs 60-700 µs of kernel time
(ext4 metadata, journal) and two objects per prediction made file creation the
largest single cost of a 1 KB prediction. An INSERT into a WAL-mode SQLite
file costs a few µs, and writes submitted during one event-loop iteration
share one transaction (group commit, as in the job store). Large objects stay
plain files (streamed, renamed into place, handed to models as paths).

The table lives in the storage root under a name no key can take (``@`` is not
in the key alphabet). Several processes may read it; in practice only the
server process writes (runners hand small outputs back to their agent).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

FILE_NAME = "@small-objects.sqlite"
BUSY_TIMEOUT_MS = 10_000


class SmallObjects:
    """``key -> bytes`` in a SQLite table; lazily opened once per process."""

    def __init__(self, root: Path) -> None:
        self._path = root / FILE_NAME
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._pending: list[tuple[str, bytes, asyncio.Future[None]]] = []
        self._scheduled = False

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(
                self._path,
                isolation_level=None,
                check_same_thread=False,
                timeout=BUSY_TIMEOUT_MS / 1000,
            )
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS objects (key TEXT PRIMARY KEY, data BLOB NOT NULL)"
                " WITHOUT ROWID"
            )
            self._conn = conn
        return self._conn

    async def put(self, key: str, data: bytes) -> None:
        """Write in the next group transaction of this event loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._pending.append((key, data, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        await future

    def _flush(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        try:
            self.put_now([(key, data) for key, data, _ in batch])
        except Exception as exc:
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for _, _, future in batch:
            if not future.done():
                future.set_result(None)

    def put_now(self, items: list[tuple[str, bytes]]) -> None:
        """Write ``items`` in one transaction (synchronously)."""
        with self._lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany("INSERT OR REPLACE INTO objects (key, data) VALUES (?, ?)", items)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def get(self, key: str) -> bytes | None:
        with self._lock:
            row = self._db().execute("SELECT data FROM objects WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def size(self, key: str) -> int | None:
        with self._lock:
            row = (
                self._db()
                .execute("SELECT length(data) FROM objects WHERE key = ?", (key,))
                .fetchone()
            )
        return None if row is None else int(row[0])

    def delete(self, key: str) -> bool:
        with self._lock:
            cursor = self._db().execute("DELETE FROM objects WHERE key = ?", (key,))
        return cursor.rowcount > 0
