"""Backlog counts per target without a table scan: partial indexes on ``target`` for
the running and the awaiting-input rows (the queued ones use the claim index).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

INDEXES = {
    "ix_predictions_running_target": "status = 'running'",
    "ix_predictions_awaiting_target": "status = 'awaiting_input'",
}


def upgrade() -> None:
    for name, predicate in INDEXES.items():
        where = sa.text(predicate)
        op.create_index(name, "predictions", ["target"], sqlite_where=where, postgresql_where=where)


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, table_name="predictions")
