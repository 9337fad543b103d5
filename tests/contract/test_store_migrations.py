"""Migrations: they build exactly what ``schema.py`` declares, run idempotently
and concurrently, and a store refuses a database that is not at head."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from freight.errors import ConfigError
from freight.store import head_revision, migrate, open_store
from freight.store._migrate import sqlalchemy_url
from freight.store.schema import metadata
from tests.fixtures.postgres import _admin, _drop, pg_url


def _engine(url: str) -> sa.Engine:
    return sa.create_engine(sqlalchemy_url(url), poolclass=sa.NullPool)


def test_migrations_match_schema(sql_store_url: str) -> None:
    """Autogenerate finds no difference between the migrated database and schema.py."""
    engine = _engine(sql_store_url)
    try:
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    finally:
        engine.dispose()


def test_partial_indexes_have_literal_predicates(sql_store_url: str) -> None:
    """The claim, reaper and purge indexes are partial on literal statuses, on both databases."""
    engine = _engine(sql_store_url)
    try:
        with engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                query = "SELECT name, sql FROM sqlite_master WHERE type = 'index'"
            else:
                query = "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'predictions'"
            defs = {name: text for name, text in conn.execute(sa.text(query)) if text}
    finally:
        engine.dispose()
    assert "status = 'queued'" in defs["ix_predictions_claim"]
    assert "priority DESC" in defs["ix_predictions_claim"]
    assert "status = 'running'" in defs["ix_predictions_lease"]
    assert "status = 'awaiting_input'" in defs["ix_predictions_upload"]
    assert "UNIQUE" in defs["ux_predictions_idempotency_key"].upper()
    finished = defs["ix_predictions_finished"]
    assert "finished_at" in finished
    assert all(f"'{s}'" in finished for s in ("succeeded", "failed", "canceled", "expired"))
    assert "'queued'" not in finished and "'running'" not in finished


def test_migrate_is_idempotent(sql_store_url: str) -> None:
    """migrate() on a database already at head changes nothing and does not fail."""
    migrate(sql_store_url)
    migrate(sql_store_url)
    engine = _engine(sql_store_url)
    try:
        with engine.connect() as conn:
            version = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        engine.dispose()
    assert version == head_revision()


@pytest.fixture
def empty_postgres_url(_postgres_template: str) -> Iterator[str]:
    """A fresh PostgreSQL database with no schema at all."""
    name = f"freight_empty_{uuid.uuid4().hex[:8]}"
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield pg_url(name)
    finally:
        _drop(name)


def test_concurrent_migrations_on_postgres(empty_postgres_url: str) -> None:
    """Four processes' worth of migrate() at once: one migrates, the others wait and no-op."""
    with ThreadPoolExecutor(4) as pool:
        for future in [pool.submit(migrate, empty_postgres_url) for _ in range(4)]:
            future.result()
    with psycopg.connect(empty_postgres_url) as conn:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    assert row == [(head_revision(),)]


async def test_open_refuses_unmigrated_postgres(empty_postgres_url: str) -> None:
    """A PostgresStore on a database without the schema fails to open with ConfigError."""
    store = open_store(empty_postgres_url)
    with pytest.raises(ConfigError):
        await store.open()
    await store.close()


async def test_open_refuses_unmigrated_sqlite(tmp_path: Path) -> None:
    """A SqliteStore on a file without the schema fails to open with ConfigError."""
    store = open_store(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(ConfigError):
        await store.open()
    await store.close()


def test_open_store_rejects_unknown_scheme() -> None:
    """open_store names the unsupported URL instead of guessing."""
    with pytest.raises(ConfigError):
        open_store("mysql://x/y")
