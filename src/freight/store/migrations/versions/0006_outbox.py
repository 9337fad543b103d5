"""Notifications: the transactional outbox, delivery attempts, webhook secrets.

A prediction created with subscriptions carries them in ``notify`` (a JSON
list). A trigger on every status change of such a row writes one ``outbox``
row per event and subscription that asked for it, in the same transaction as
the change: nothing between the change and its notification can be lost, and
predictions without subscriptions pay nothing but the trigger's WHEN test.

Events: ``started`` (a model's prediction claimed, attempt N; a pipeline run
started) and ``completed`` (any terminal status). An event's id is
``<prediction>:<type>:<attempt>``, stable across delivery retries.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None

TERMINAL = "('succeeded', 'failed', 'canceled', 'expired', 'skipped')"

# the event of a status change: started / completed / none
_EVENT = f"""CASE WHEN NEW.status = 'running' THEN 'started'
    WHEN NEW.status IN {TERMINAL} THEN 'completed' END"""
_SEQ = f"NEW.attempts * 2 + CASE WHEN NEW.status IN {TERMINAL} THEN 1 ELSE 0 END"

SQLITE_NOW = "((julianday('now') - 2440587.5) * 86400.0)"
SQLITE_BODY = f"""
    INSERT OR IGNORE INTO outbox (id, event_id, subscription, prediction_id, event_type, seq,
        status, attempts, created_at, next_at)
    SELECT NEW.id || ':' || ev.type || ':' || NEW.attempts || '#' || s.key,
        NEW.id || ':' || ev.type || ':' || NEW.attempts, s.key, NEW.id, ev.type, {_SEQ},
        'pending', 0, {SQLITE_NOW}, {SQLITE_NOW}
    FROM json_each(NEW.notify) AS s, (SELECT {_EVENT} AS type) AS ev
    WHERE ev.type IS NOT NULL AND EXISTS (
        SELECT 1 FROM json_each(json_extract(s.value, '$.events')) AS e WHERE e.value = ev.type
    );"""
SQLITE_TRIGGERS = {
    "predictions_outbox_update": f"""
CREATE TRIGGER predictions_outbox_update AFTER UPDATE OF status ON predictions
FOR EACH ROW WHEN NEW.notify IS NOT NULL AND NEW.status IS NOT OLD.status
BEGIN{SQLITE_BODY}
END""",
    "predictions_outbox_insert": f"""
CREATE TRIGGER predictions_outbox_insert AFTER INSERT ON predictions
FOR EACH ROW WHEN NEW.notify IS NOT NULL
BEGIN{SQLITE_BODY}
END""",
}

PG_FUNCTION = f"""
CREATE OR REPLACE FUNCTION freight_outbox() RETURNS trigger AS $$
DECLARE
    ev text := {_EVENT};
    now_s double precision := extract(epoch from clock_timestamp());
BEGIN
    IF ev IS NULL OR (TG_OP = 'UPDATE' AND NEW.status IS NOT DISTINCT FROM OLD.status) THEN
        RETURN NULL;
    END IF;
    INSERT INTO outbox (id, event_id, subscription, prediction_id, event_type, seq,
        status, attempts, created_at, next_at)
    SELECT NEW.id || ':' || ev || ':' || NEW.attempts || '#' || (s.ord - 1),
        NEW.id || ':' || ev || ':' || NEW.attempts, s.ord - 1, NEW.id, ev, {_SEQ},
        'pending', 0, now_s, now_s
    FROM jsonb_array_elements(NEW.notify::jsonb) WITH ORDINALITY AS s(value, ord)
    WHERE s.value -> 'events' ? ev
    ON CONFLICT (id) DO NOTHING;
    PERFORM pg_notify('freight_outbox', NEW.id);
    RETURN NULL;
END
$$ LANGUAGE plpgsql
"""
PG_TRIGGER = """
CREATE TRIGGER predictions_outbox
AFTER INSERT OR UPDATE OF status ON predictions
FOR EACH ROW WHEN (NEW.notify IS NOT NULL) EXECUTE FUNCTION freight_outbox()
"""


def upgrade() -> None:
    op.add_column("predictions", sa.Column("notify", sa.Text))
    op.create_table(
        "outbox",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("subscription", sa.Integer, nullable=False),
        sa.Column("prediction_id", sa.Text, nullable=False),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("next_at", sa.Double, nullable=False),
        sa.Column("lease_expires_at", sa.Double),
        sa.Column("worker_id", sa.Text),
        sa.Column("last_code", sa.Integer),
        sa.Column("last_error", sa.Text),
        sa.Column("finished_at", sa.Double),
    )
    pending, sending = sa.text("status = 'pending'"), sa.text("status = 'sending'")
    op.create_index(
        "ix_outbox_due", "outbox", ["next_at"], sqlite_where=pending, postgresql_where=pending
    )
    op.create_index("ix_outbox_prediction", "outbox", ["prediction_id", "subscription", "seq"])
    op.create_index(
        "ix_outbox_sending",
        "outbox",
        ["lease_expires_at"],
        sqlite_where=sending,
        postgresql_where=sending,
    )
    op.create_table(
        "delivery_attempts",
        sa.Column("outbox_id", sa.Text, primary_key=True),
        sa.Column("attempt", sa.Integer, primary_key=True),
        sa.Column("prediction_id", sa.Text, nullable=False),
        sa.Column("at", sa.Double, nullable=False),
        sa.Column("status_code", sa.Integer),
        sa.Column("error", sa.Text),
        sa.Column("next_at", sa.Double),
    )
    op.create_index("ix_delivery_attempts_prediction", "delivery_attempts", ["prediction_id"])
    op.create_table(
        "webhook_secrets",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("secret", sa.Text, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("retired_at", sa.Double),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_FUNCTION)
        op.execute(PG_TRIGGER)
    else:
        for statement in SQLITE_TRIGGERS.values():
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS predictions_outbox ON predictions")
        op.execute("DROP FUNCTION IF EXISTS freight_outbox()")
    else:
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.drop_table("webhook_secrets")
    op.drop_table("delivery_attempts")
    op.drop_table("outbox")
    with op.batch_alter_table("predictions") as batch:
        batch.drop_column("notify")
    if op.get_bind().dialect.name == "sqlite":  # the rebuild drops the claim's DESC
        op.drop_index("ix_predictions_claim", table_name="predictions")
        op.create_index(
            "ix_predictions_claim",
            "predictions",
            ["target", sa.text("priority DESC"), "id"],
            sqlite_where=sa.text("status = 'queued'"),
        )
