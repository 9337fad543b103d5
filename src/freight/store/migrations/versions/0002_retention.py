"""Retention: a partial index on ``finished_at`` over terminal rows, for the purge.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

TERMINAL = "status IN ('succeeded', 'failed', 'canceled', 'expired')"


def upgrade() -> None:
    predicate = sa.text(TERMINAL)
    op.create_index(
        "ix_predictions_finished",
        "predictions",
        ["finished_at"],
        sqlite_where=predicate,
        postgresql_where=predicate,
    )


def downgrade() -> None:
    op.drop_index("ix_predictions_finished", table_name="predictions")
