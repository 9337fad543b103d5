"""Traces: a prediction's trace context, so whoever works on it continues its trace.

- ``predictions.trace_context``: the W3C ``traceparent`` of the span that created
  the row (the API request's, continuing a caller's ``traceparent``), stored only
  while tracing is on. A worker, perhaps on another machine, parents its spans for
  the row on it; a run's steps and a for_each step's elements carry their run's.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision: str | None = "0009"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("predictions", sa.Column("trace_context", sa.Text))


def downgrade() -> None:
    op.drop_column("predictions", "trace_context")
