"""The job store: the ``predictions`` table is the queue (see ``base.py``).

:func:`open_store` picks the backend from the database URL; :func:`migrate`
brings a database to the current schema and is safe to call at every start.

    sqlite:///relative/path.db, sqlite:////abs/path.db   -> SqliteStore
    postgresql://user@host:5432/db (or postgres://...)   -> PostgresStore
    memory://                                            -> MemoryStore (SQLite in a
                                                            temporary directory, fresh
                                                            per call: tests)
"""

from __future__ import annotations

from pathlib import Path

from freight.errors import ConfigError
from freight.store import _migrate
from freight.store._migrate import check_schema_version, head_revision
from freight.store.base import Lifecycle, Outbox, Queue, Records, Store

__all__ = [
    "Lifecycle",
    "Outbox",
    "Queue",
    "Records",
    "Store",
    "check_schema_version",
    "head_revision",
    "migrate",
    "open_store",
]

MEMORY_URL = "memory://"


def migrate(url: str) -> None:
    """Bring the database at ``url`` to the head revision (see ``_migrate.migrate``).

    A ``memory://`` store is migrated when it is made: nothing to do here, so that a
    server started on it in a test goes through the same start-up as on a real database.
    """
    if url == MEMORY_URL:
        return
    _migrate.migrate(url)


def sqlite_path(url: str) -> str:
    """The file of a ``sqlite:///`` URL, SQLAlchemy-style (four slashes: absolute)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url == prefix or "?" in url:
        raise ConfigError(f"expected sqlite:///<file path>, got {url!r}", setting="database_url")
    return str(Path(url[len(prefix) :]).resolve())


def open_store(url: str) -> Store:
    """The store for ``url``, not yet opened (``await store.open()``)."""
    scheme = url.partition("://")[0]
    if scheme == "sqlite":
        from freight.store.sqlite import SqliteStore

        return SqliteStore(sqlite_path(url))
    if scheme in ("postgresql", "postgres"):
        from freight.store.postgres import PostgresStore

        return PostgresStore(url)
    if url == MEMORY_URL:
        from freight.store.memory import MemoryStore

        return MemoryStore()
    raise ConfigError(
        f"unsupported database URL {url!r} (use sqlite:///, postgresql:// or memory://)",
        setting="database_url",
    )
