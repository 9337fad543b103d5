"""Migrations: Alembic ``upgrade head``, run programmatically at every start-up.

No ``alembic.ini`` is needed: the configuration is built here, pointing at the
``migrations`` directory shipped in the package. On PostgreSQL several
processes may start at once (``freight api`` x N), so the upgrade runs under a
session-level advisory lock: the first process migrates, the others wait, then
find the database at head and do nothing. Upgrading an up-to-date database is a
no-op, so calling :func:`migrate` on every start is safe.

Alembic narrates each step at INFO ("Context impl SQLiteImpl.", "Running
upgrade 0001 -> 0002, ..."); a server start should not, so while migrating its
loggers only pass warnings and errors (a failed migration still raises).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from freight.errors import ConfigError, StoreUnavailableError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
#: pg_advisory_lock key held while migrating: "freight" in ASCII.
ADVISORY_LOCK_KEY = int.from_bytes(b"freight", "big")
#: The logger Alembic's own messages go to (``alembic.runtime.migration`` and the like).
ALEMBIC_LOGGER = "alembic"


def sqlalchemy_url(url: str) -> str:
    """A freight database URL -> the SQLAlchemy URL (psycopg 3 driver for PostgreSQL)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ConfigError(f"not a database URL: {url!r}", setting="database_url")
    if scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        return f"postgresql+psycopg://{rest}"
    if scheme == "sqlite":
        return url
    raise ConfigError(
        f"unsupported database URL scheme {scheme!r} (use sqlite:/// or postgresql://)",
        setting="database_url",
    )


def alembic_config(url: str | None = None) -> Config:
    """The Alembic configuration, built in memory."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        config.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    return config


@functools.cache
def head_revision() -> str:
    """The revision a database must be at for this version of freight."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def check_schema_version(version: str | None, url: str) -> None:
    """Refuse to run on a database that is not at our head revision."""
    if version != head_revision():
        raise ConfigError(
            f"database schema is at revision {version!r}, this freight needs "
            f"{head_revision()!r}: run `freight migrate DIR` (servers migrate at start-up)",
            setting="database_url",
            url=url,
            revision=version,
        )


def migrate(url: str) -> None:
    """Bring the database at ``url`` to the head revision (idempotent; concurrency-safe).

    An unreachable database raises StoreUnavailableError naming it (no traceback
    for the operator to decode)."""
    try:
        with quiet_alembic():
            _upgrade(url)
    except sa.exc.DBAPIError as exc:
        where = url.split("@")[-1]  # never echo a password
        raise StoreUnavailableError(
            f"cannot reach the database {where}: {exc.orig}", setting="database_url"
        ) from exc


@contextlib.contextmanager
def quiet_alembic() -> Iterator[None]:
    """Drop Alembic's INFO narration for the duration; warnings and errors still show."""
    logger = logging.getLogger(ALEMBIC_LOGGER)
    previous = logger.level
    if logger.getEffectiveLevel() < logging.WARNING:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _upgrade(url: str) -> None:
    config = alembic_config(url)
    engine = sa.create_engine(sqlalchemy_url(url), poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            postgres = conn.dialect.name == "postgresql"
            if postgres:
                conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
                conn.commit()
            try:
                config.attributes["connection"] = conn
                command.upgrade(config, "head")
                conn.commit()
            finally:
                if postgres:
                    conn.rollback()
                    conn.execute(
                        sa.text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY}
                    )
                    conn.commit()
    finally:
        engine.dispose()
