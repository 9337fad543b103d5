"""Tenancy: every row has an owner; API keys, the audit log and the usage ledger.

- ``predictions.tenant`` (``default`` for rows written before): who owns the row.
  Idempotency keys are unique per tenant (one tenant's key must neither collide
  with nor reveal another's); ``ix_predictions_tenant_id`` lists a tenant's rows
  newest first; the claim index gains the tenant, (target, tenant, priority DESC,
  id), for claims shared fairly between tenants (``ops.claim``).
- ``webhook_secrets.tenant``: each tenant signs its webhooks with its own secrets.
- ``api_keys``: keys stored hashed (SHA-256 of the token, shown once).
- ``audit_log``: key and secret changes and admin actions (who, what, when).
- ``usage_ledger``: lines appended in the transaction that ends predictions.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def _claim_index(columns: list[str | sa.TextClause]) -> None:
    op.drop_index("ix_predictions_claim", table_name="predictions")
    where = sa.text("status = 'queued'")
    op.create_index(
        "ix_predictions_claim", "predictions", columns, sqlite_where=where, postgresql_where=where
    )


def upgrade() -> None:
    op.add_column(
        "predictions", sa.Column("tenant", sa.Text, nullable=False, server_default="default")
    )
    _claim_index(["target", "tenant", sa.text("priority DESC"), "id"])
    op.drop_index("ux_predictions_idempotency_key", table_name="predictions")
    op.create_index(
        "ux_predictions_idempotency_key",
        "predictions",
        ["tenant", "idempotency_key"],
        unique=True,
    )
    op.create_index("ix_predictions_tenant_id", "predictions", ["tenant", "id"])
    op.add_column(
        "webhook_secrets",
        sa.Column("tenant", sa.Text, nullable=False, server_default="default"),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("tenant", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("scopes", sa.Text, nullable=False),
        sa.Column("targets", sa.Text),
        sa.Column("hash", sa.Text, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("expires_at", sa.Double),
        sa.Column("revoked_at", sa.Double),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Double, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("tenant", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("subject", sa.Text),
        sa.Column("detail", sa.Text),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_table(
        "usage_ledger",
        # BIGINT (SQLite: its INTEGER rowid, which is 64-bit already)
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("hour", sa.Double, nullable=False),
        sa.Column("tenant", sa.Text, nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("compute_s", sa.Double, nullable=False),
        sa.Column("gpu_s", sa.Double, nullable=False),
        sa.Column("queue_s", sa.Double, nullable=False),
        sa.Column("cold_start_s", sa.Double, nullable=False),
        sa.Column("bytes_in", sa.BigInteger, nullable=False),
        sa.Column("bytes_out", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_usage_ledger_hour", "usage_ledger", ["hour", "tenant"])


def downgrade() -> None:
    op.drop_index("ix_usage_ledger_hour", table_name="usage_ledger")
    op.drop_table("usage_ledger")
    op.drop_index("ix_audit_log_at", table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_table("api_keys")
    op.drop_column("webhook_secrets", "tenant")
    op.drop_index("ix_predictions_tenant_id", table_name="predictions")
    _claim_index(["target", sa.text("priority DESC"), "id"])
    op.drop_index("ux_predictions_idempotency_key", table_name="predictions")
    op.create_index(
        "ux_predictions_idempotency_key", "predictions", ["idempotency_key"], unique=True
    )
    op.drop_column("predictions", "tenant")
