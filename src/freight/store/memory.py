"""``memory://``: a fresh SQLite store in a private temporary directory.

The store every unit test of the layers above runs on. It used to be a twin
in dicts that re-implemented each transaction (and the outbox triggers) in
Python: a third copy of every rule, and where copies drift defects breed. Now
it *is* :class:`~freight.store.sqlite.SqliteStore`, on a copy of a database
migrated once per process (copying a migrated file takes ~1 ms; migrating, ~150
ms), removed with the store object. Like SQLite it is ``exclusive`` and has
nothing to listen to; a closed store raises StoreUnavailableError, which makes an
outage one ``await store.close()`` away in a unit test.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
import weakref
from pathlib import Path

from freight.store import _migrate
from freight.store.sqlite import SqliteStore


@functools.cache
def _template() -> Path:
    """A database at the head revision, made once per process."""
    folder = Path(tempfile.mkdtemp(prefix="freight-template-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = folder / "template.db"
    _migrate.migrate(f"sqlite:///{path}")
    return path


class MemoryStore(SqliteStore):
    """A throwaway SQLite store (see the module docstring)."""

    def __init__(self) -> None:
        folder = Path(tempfile.mkdtemp(prefix="freight-memory-"))
        path = folder / "freight.db"
        shutil.copyfile(_template(), path)
        super().__init__(str(path))
        # closed, it keeps its rows (a test reopens it after an "outage"); gone, its files
        weakref.finalize(self, shutil.rmtree, folder, ignore_errors=True)


__all__ = ["MemoryStore"]
