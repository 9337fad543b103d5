"""The SQLite store's group-commit writer when another process holds the write lock
(a node's deliverer writes the same file): the event loop is not blocked while it
waits, what is submitted meanwhile joins the group, and past the busy timeout the
group fails as unavailable. The other writer is a second connection, as another
process's would be; every wait has a deadline."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from freight.errors import StoreUnavailableError
from freight.store import _sqlite_io
from freight.store._sqlite_io import LoopWriter, connect

DEADLINE_S = 30.0


def insert(value: int):  # type: ignore[no-untyped-def]
    def op(conn: sqlite3.Connection) -> int:
        conn.execute("INSERT INTO t (v) VALUES (?)", (value,))
        return value

    return op


@pytest.fixture
def path(tmp_path: Path) -> str:
    file = str(tmp_path / "db.sqlite")
    conn = connect(file)
    conn.execute("CREATE TABLE t (v INTEGER)")
    conn.close()
    return file


async def test_the_loop_runs_while_another_writer_holds_the_lock(path: str) -> None:
    """While another connection holds BEGIN IMMEDIATE, a submitted write waits without
    blocking the loop (other tasks run: ticks counted), a second submit joins it; once
    the lock is released both commit, in order."""
    writer = LoopWriter(path)
    writer.start()
    other = connect(path)
    other.execute("BEGIN IMMEDIATE")
    try:
        first = asyncio.ensure_future(writer.submit(insert(1)))
        ticks = 0
        async with asyncio.timeout(DEADLINE_S):
            while ticks < 20:  # the loop turns while the write waits for the lock
                await asyncio.sleep(0.001)
                ticks += 1
        assert not first.done()
        second = asyncio.ensure_future(writer.submit(insert(2)))
        await asyncio.sleep(0.005)
        assert not second.done()
    finally:
        other.execute("COMMIT")
        other.close()
    async with asyncio.timeout(DEADLINE_S):
        assert await asyncio.gather(first, second) == [1, 2]
    writer.stop()
    check = connect(path)
    assert [r[0] for r in check.execute("SELECT v FROM t ORDER BY rowid")] == [1, 2]
    check.close()


async def test_past_the_busy_timeout_the_group_fails_unavailable(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lock held past the busy timeout fails the waiting group with
    StoreUnavailableError (nothing written); the next write, once free, commits."""
    monkeypatch.setattr(_sqlite_io, "BUSY_TIMEOUT_MS", 50)
    writer = LoopWriter(path)
    writer.start()
    other = connect(path)
    other.execute("BEGIN IMMEDIATE")
    try:
        async with asyncio.timeout(DEADLINE_S):
            with pytest.raises(StoreUnavailableError):
                await writer.submit(insert(1))
    finally:
        other.execute("COMMIT")
        other.close()
    async with asyncio.timeout(DEADLINE_S):
        assert await writer.submit(insert(2)) == 2
    writer.stop()
    check = connect(path)
    assert [r[0] for r in check.execute("SELECT v FROM t")] == [2]
    check.close()
