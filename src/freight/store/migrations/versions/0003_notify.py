"""Wake-ups across processes: NOTIFY on every status change that matters (PostgreSQL).

A trigger rather than statements in each store method, so that every path
that queues or finishes a prediction (create, upload, requeue, reap, cancel,
complete) wakes listeners, in the same transaction, at no extra round trip.
Channel ``freight_work`` carries the target of newly queued work; channel
``freight_done`` the id of a prediction that reached a terminal status.
PostgreSQL folds identical notifications of one transaction into one.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

FUNCTION = """
CREATE OR REPLACE FUNCTION freight_notify() RETURNS trigger AS $$
BEGIN
    IF NEW.status = 'queued' THEN
        PERFORM pg_notify('freight_work', NEW.target);
    ELSIF NEW.status IN ('succeeded', 'failed', 'canceled', 'expired') THEN
        PERFORM pg_notify('freight_done', NEW.id);
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql
"""

TRIGGER = """
CREATE TRIGGER predictions_notify
AFTER INSERT OR UPDATE OF status ON predictions
FOR EACH ROW EXECUTE FUNCTION freight_notify()
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite has one process: in-memory events wake it
    op.execute(FUNCTION)
    op.execute(TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS predictions_notify ON predictions")
    op.execute("DROP FUNCTION IF EXISTS freight_notify()")
