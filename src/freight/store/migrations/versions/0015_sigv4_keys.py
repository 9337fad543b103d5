"""SigV4 access-key pairs beside bearer keys.

``api_keys.secret``: a pair's secret access key, sealed (AES-GCM under a key derived
from the server's ``secret_key``: :class:`freight.sigv4.Sealer`); NULL for a bearer
key. A signature check recomputes an HMAC with the secret itself, so it cannot be kept
as a hash like a bearer token; the pair's id is its access key id.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-09
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision: str | None = "0014"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("secret", sa.Text))


def downgrade() -> None:
    op.drop_column("api_keys", "secret")
