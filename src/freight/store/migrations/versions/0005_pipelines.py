"""Pipelines: steps are prediction rows carrying their run's id; two new statuses.

``pending`` (a step waiting on its dependencies) and ``skipped`` (a step whose
condition was false, terminal) join the status check; retention's partial
index covers ``skipped`` as a terminal status.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

OLD = ("awaiting_input", "queued", "running", "succeeded", "failed", "canceled", "expired")
NEW = ("pending", *OLD, "skipped")
TERMINAL_OLD = ("succeeded", "failed", "canceled", "expired")
TERMINAL_NEW = (*TERMINAL_OLD, "skipped")
COLUMNS = {
    "run_id": sa.Text,
    "step": sa.Text,
    "item_index": sa.Integer,
    "waiting_on": sa.Integer,
    "definition": sa.Text,
}


def _in(values: tuple[str, ...]) -> str:
    return "status IN (" + ", ".join(f"'{v}'" for v in values) + ")"


def _finished_index(statuses: tuple[str, ...]) -> None:
    op.drop_index("ix_predictions_finished", table_name="predictions")
    where = sa.text(_in(statuses))
    op.create_index(
        "ix_predictions_finished",
        "predictions",
        ["finished_at"],
        sqlite_where=where,
        postgresql_where=where,
    )


def _claim_index() -> None:
    """SQLite's table rebuild re-creates reflected indexes without their DESC: put the
    claim's ``priority DESC`` back."""
    if op.get_bind().dialect.name != "sqlite":
        return
    op.drop_index("ix_predictions_claim", table_name="predictions")
    where = sa.text("status = 'queued'")
    op.create_index(
        "ix_predictions_claim",
        "predictions",
        ["target", sa.text("priority DESC"), "id"],
        sqlite_where=where,
    )


def _check(statuses: tuple[str, ...]) -> None:
    with op.batch_alter_table("predictions") as batch:  # SQLite: one table rebuild
        batch.drop_constraint("ck_predictions_status", type_="check")
        batch.create_check_constraint("ck_predictions_status", _in(statuses))
    _claim_index()


def upgrade() -> None:
    for name, type_ in COLUMNS.items():
        op.add_column("predictions", sa.Column(name, type_))
    _check(NEW)
    where = sa.text("run_id IS NOT NULL")
    op.create_index(
        "ix_predictions_run", "predictions", ["run_id"], sqlite_where=where, postgresql_where=where
    )
    _finished_index(TERMINAL_NEW)


def downgrade() -> None:
    _finished_index(TERMINAL_OLD)
    op.drop_index("ix_predictions_run", table_name="predictions")
    _check(OLD)
    with op.batch_alter_table("predictions") as batch:
        for name in COLUMNS:
            batch.drop_column(name)
    _claim_index()
