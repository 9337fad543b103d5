"""Why work waits: the worker nodes' reports, and a requeued row's back-off.

- ``nodes``: each worker node's last report of its replicas (``agent/census.py``),
  written every ``census_interval_s``; a node not seen for three intervals is gone.
  From them the API tells why a queued prediction waits (``freight/waiting.py``)
  and shows every node's replicas, in whichever process it runs.
- ``predictions.not_before``: a prediction requeued after a failed attempt (its
  replica died, its lease lapsed) is not claimed again before it.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision: str | None = "0010"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("predictions", sa.Column("not_before", sa.Double))
    op.create_table(
        "nodes",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("started_at", sa.Double, nullable=False),
        sa.Column("seen_at", sa.Double, nullable=False),
        sa.Column("states", sa.Text, nullable=False),  # JSON: NodeReport.to_json()
    )


def downgrade() -> None:
    op.drop_table("nodes")
    op.drop_column("predictions", "not_before")
