"""The predictions table (the queue) and the indexes of its hot statements.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

STATUSES = ("awaiting_input", "queued", "running", "succeeded", "failed", "canceled", "expired")


def _partial_index(name: str, status: str, columns: list[str | sa.TextClause]) -> None:
    predicate = sa.text(f"status = '{status}'")
    op.create_index(
        name, "predictions", columns, sqlite_where=predicate, postgresql_where=predicate
    )


def upgrade() -> None:
    op.create_table(
        "predictions",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("queued_at", sa.Double),
        sa.Column("started_at", sa.Double),
        sa.Column("finished_at", sa.Double),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("timeout_s", sa.Double, nullable=False),
        sa.Column("expires_at", sa.Double),
        sa.Column("upload_expires_at", sa.Double),
        sa.Column("lease_expires_at", sa.Double),
        sa.Column("worker_id", sa.Text),
        sa.Column("input_json", sa.Text),
        sa.Column("input_key", sa.Text),
        sa.Column("input_content_type", sa.Text),
        sa.Column("input_bytes", sa.BigInteger),
        sa.Column("output_json", sa.Text),
        sa.Column("output_key", sa.Text),
        sa.Column("output_content_type", sa.Text),
        sa.Column("output_bytes", sa.BigInteger),
        sa.Column("error_code", sa.Text),
        sa.Column("error_message", sa.Text),
        sa.Column("error_detail", sa.Text),
        sa.Column("metadata", sa.Text),
        sa.Column("idempotency_key", sa.Text),
        sa.Column("request_hash", sa.Text),
        sa.Column("batch_size", sa.Integer),
        sa.CheckConstraint(
            "status IN (" + ", ".join(f"'{s}'" for s in STATUSES) + ")",
            name="ck_predictions_status",
        ),
    )
    _partial_index("ix_predictions_claim", "queued", ["target", sa.text("priority DESC"), "id"])
    _partial_index("ix_predictions_lease", "running", ["lease_expires_at"])
    _partial_index("ix_predictions_ttl", "queued", ["expires_at"])
    _partial_index("ix_predictions_upload", "awaiting_input", ["upload_expires_at"])
    op.create_index("ix_predictions_target_id", "predictions", ["target", "id"])
    op.create_index(
        "ux_predictions_idempotency_key", "predictions", ["idempotency_key"], unique=True
    )


def downgrade() -> None:
    op.drop_table("predictions")
