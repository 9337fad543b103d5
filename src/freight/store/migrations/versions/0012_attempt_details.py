"""Each delivery attempt's latency and the start of the receiver's answer.

``delivery_attempts.latency_ms``: how long the sink took (send to answer, or to the
failure); ``response``: the first KB of a webhook receiver's body, so an operator
sees why it refused without the receiver's logs.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision: str | None = "0011"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("delivery_attempts", sa.Column("latency_ms", sa.Double))
    op.add_column("delivery_attempts", sa.Column("response", sa.Text))


def downgrade() -> None:
    op.drop_column("delivery_attempts", "response")
    op.drop_column("delivery_attempts", "latency_ms")
