"""Per-prediction logs: what a model printed or logged while it handled a prediction.

- ``prediction_logs``: one row per line, keyed by (prediction_id, seq), ``seq``
  increasing per prediction from 1. ``total`` is the running sum of the text's bytes
  up to and including the line, so the append reads the bound's state from the last
  row alone (one index seek, no sum). ``dropped`` is set on the marker line only.
  Deleted with the prediction by the purger (``ops.purge``).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-14
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "prediction_logs",
        sa.Column("prediction_id", sa.Text, primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("at", sa.Double, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("stream", sa.Text, nullable=False),
        sa.Column("level", sa.Text),
        sa.Column("phase", sa.Text, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("total", sa.BigInteger, nullable=False),
        sa.Column("dropped", sa.BigInteger),
    )


def downgrade() -> None:
    op.drop_table("prediction_logs")
