"""Redrive: a failed or canceled pipeline run restarted where it stopped.

``predictions.redrives``: how many times a run was redriven (``ops.redrive``); its
steps that succeeded keep their outputs, the others run again. A redriven run's
``attempts`` counts its starts too, so that the outbox's event ids
(``<id>:<event>:<attempts>``, migration 0006) differ from one start to the next and a
redriven run's ``started`` and ``completed`` events are sent again.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision: str | None = "0013"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column(
        "predictions", sa.Column("redrives", sa.Integer, nullable=False, server_default="0")
    )


def downgrade() -> None:
    op.drop_column("predictions", "redrives")
