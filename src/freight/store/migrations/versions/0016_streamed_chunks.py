"""Streamed outputs: the chunks a streaming model yielded (``freight.streaming``).

- ``prediction_chunks``: one row per chunk, keyed by (prediction_id, seq), ``seq``
  increasing per prediction from 1; ``kind`` (``text``, ``bytes``, ``json``) and its
  ``data`` as text (bytes in base64, JSON as its text); ``attempt`` the attempt that
  yielded it. Deleted with the prediction by the purger (``ops.purge``).
- PostgreSQL: every insert NOTIFYs ``freight_done`` with ``chunks:<prediction id>``
  (PostgreSQL folds those of one transaction into one), so the event streams of
  another process wake at the chunk instead of their next poll.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision: str | None = "0015"
branch_labels: str | None = None
depends_on: str | None = None

FUNCTION = """
CREATE OR REPLACE FUNCTION freight_notify_chunk() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('freight_done', 'chunks:' || NEW.prediction_id);
    RETURN NULL;
END
$$ LANGUAGE plpgsql
"""

TRIGGER = """
CREATE TRIGGER prediction_chunks_notify
AFTER INSERT ON prediction_chunks
FOR EACH ROW EXECUTE FUNCTION freight_notify_chunk()
"""


def upgrade() -> None:
    op.create_table(
        "prediction_chunks",
        sa.Column("prediction_id", sa.Text, primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("at", sa.Double, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("data", sa.Text, nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(FUNCTION)
        op.execute(TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS prediction_chunks_notify ON prediction_chunks")
        op.execute("DROP FUNCTION IF EXISTS freight_notify_chunk()")
    op.drop_table("prediction_chunks")
