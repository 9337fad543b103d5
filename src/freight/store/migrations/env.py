"""Alembic environment: online migrations only, on the connection handed in by
:func:`freight.store.migrate` (which holds the PostgreSQL advisory lock), or on
a fresh engine when run through the ``alembic`` command line."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from freight.store.schema import metadata

config = context.config


def _run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    engine = sa.create_engine(config.get_main_option("sqlalchemy.url") or "", poolclass=sa.NullPool)
    with engine.connect() as conn:
        _run(conn)
        conn.commit()
    engine.dispose()
