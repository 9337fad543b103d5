"""Indexes for advancing runs in O(1) per ended step, and for listing by kind;
the object references a row's inline output holds.

- ``output_refs``: the keys of the references freight wrote into ``output_json`` (a
  JSON list): only those are references, never a caller's value shaped like one.
- ``ix_predictions_heads``: a run's step heads without its for_each elements (an
  advancement reads the heads; 10,000 elements must not be scanned per element).
- ``ix_predictions_pending_elements``: the next pending elements of a for_each step
  with ``max_concurrency``, in element order.
- ``ix_predictions_jobs``: batch jobs listed newest first from their own rows, not
  by scanning every row. Partial (a literal ``kind``): a whole-table index on
  ``kind`` led SQLite's planner to scan every model row for the reaper's
  lease sweeps and to sort every top-level row for a listing.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None

HEADS = sa.text("run_id IS NOT NULL AND item_index IS NULL")
PENDING = sa.text("status = 'pending'")
JOBS = sa.text("kind = 'batch'")


def upgrade() -> None:
    op.add_column("predictions", sa.Column("output_refs", sa.Text))
    op.create_index(
        "ix_predictions_heads",
        "predictions",
        ["run_id"],
        sqlite_where=HEADS,
        postgresql_where=HEADS,
    )
    op.create_index(
        "ix_predictions_pending_elements",
        "predictions",
        ["run_id", "step", "item_index"],
        sqlite_where=PENDING,
        postgresql_where=PENDING,
    )
    op.create_index(
        "ix_predictions_jobs", "predictions", ["id"], sqlite_where=JOBS, postgresql_where=JOBS
    )


def downgrade() -> None:
    for name in (
        "ix_predictions_jobs",
        "ix_predictions_pending_elements",
        "ix_predictions_heads",
    ):
        op.drop_index(name, table_name="predictions")
