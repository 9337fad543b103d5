"""Each attempt that ended without completing, kept on its row.

``predictions.attempt_history``: one ``attempt,started_at,ended_at,worker,why;`` per
attempt its worker lost (its replica died, its lease lapsed, the process running it
died), appended by the statement that requeued or failed it; the console's timeline
and the prediction object show them (``prediction.attempts_of``). The last attempt's
own times stay in ``started_at`` / ``finished_at``.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision: str | None = "0012"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("predictions", sa.Column("attempt_history", sa.Text))


def downgrade() -> None:
    op.drop_column("predictions", "attempt_history")
