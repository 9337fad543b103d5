"""The one SQL schema of freight, declared once with SQLAlchemy Core.

The ``predictions`` table *is* the queue: one row per prediction, its columns
are exactly the fields of :class:`freight.prediction.Prediction` (same names,
same order), so rows map to the dataclass positionally (see ``rows.py``).

This module is the reference the migrations are checked against
(``tests/contract/test_store_migrations.py``: autogenerate finds no difference); the
hot path does not go through SQLAlchemy but through the hand-written SQL of
``sql.py``, measured faster on both drivers.

Index choices, each serving one statement:

* ``ix_predictions_claim`` — the claim, fair between tenants (``ops.claim``): the
  loose index scan of the tenants with queued rows of a target (the greatest tenant
  below the previous one, one backward seek each), then each tenant's share, ``WHERE
  status = 'queued' AND target = ? AND tenant = ? ORDER BY priority DESC, id``:
  (target, tenant, priority DESC, id). Partial, so it only holds the backlog; its
  predicate is a *literal* because both SQLite and PostgreSQL generic plans
  ignore a partial index whose predicate is matched by a bound parameter.
* ``ix_predictions_lease`` / ``ix_predictions_ttl`` / ``ix_predictions_upload``
  — the reaper's three sweeps, each partial on the status it scans.
* ``ix_predictions_running_target`` / ``ix_predictions_awaiting_target`` — the
  backlog counts per target (``STATS``): without them the planner counted
  running and waiting rows by scanning the whole table (18 ms at 4,000 rows,
  0.1 ms with them).
* ``ix_predictions_finished`` — retention's purge: terminal rows, oldest
  ``finished_at`` first; partial on the literal list of terminal statuses.
* ``ix_predictions_target_id`` — listing a target's predictions, newest first.
* ``ix_predictions_run`` — a pipeline run's steps (advancement, the ``steps`` map).
* ``ux_predictions_idempotency_key`` — unique; NULLs are distinct on both
  databases, so rows without a key never collide.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from freight.prediction import TERMINAL, Status

STATUSES: tuple[str, ...] = tuple(s.value for s in Status)

metadata = sa.MetaData()


def _status_check() -> str:
    quoted = ", ".join(f"'{s}'" for s in STATUSES)
    return f"status IN ({quoted})"


def _partial_index(name: str, status: Status, *columns: sa.ColumnElement[Any]) -> sa.Index:
    """An index over the rows of one status, with the status as a *literal* predicate."""
    predicate = sa.text(f"status = '{status.value}'")
    return sa.Index(name, *columns, sqlite_where=predicate, postgresql_where=predicate)


predictions = sa.Table(
    "predictions",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),  # UUIDv7: time-ordered
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
    sa.Column("trace_context", sa.Text),  # a W3C traceparent (migration 0010)
    sa.Column("run_id", sa.Text),
    sa.Column("step", sa.Text),
    sa.Column("item_index", sa.Integer),
    sa.Column("waiting_on", sa.Integer),
    sa.Column("definition", sa.Text),
    sa.Column("notify", sa.Text),
    sa.Column("output_refs", sa.Text),
    sa.Column("tenant", sa.Text, nullable=False, server_default="default"),
    # a requeued row's back-off: not claimed before it (migration 0011)
    sa.Column("not_before", sa.Double),
    # the attempts that ended without completing (migration 0013; prediction.attempts_of)
    sa.Column("attempt_history", sa.Text),
    # a run's redrives (migration 0014; ops.redrive)
    sa.Column("redrives", sa.Integer, nullable=False, server_default="0"),
    sa.CheckConstraint(_status_check(), name="ck_predictions_status"),
)

_partial_index(
    "ix_predictions_claim",
    Status.QUEUED,
    predictions.c.target,
    predictions.c.tenant,
    predictions.c.priority.desc(),
    predictions.c.id,
)
_partial_index("ix_predictions_lease", Status.RUNNING, predictions.c.lease_expires_at)
_partial_index("ix_predictions_ttl", Status.QUEUED, predictions.c.expires_at)
_partial_index("ix_predictions_upload", Status.AWAITING_INPUT, predictions.c.upload_expires_at)
_partial_index("ix_predictions_running_target", Status.RUNNING, predictions.c.target)
_partial_index("ix_predictions_awaiting_target", Status.AWAITING_INPUT, predictions.c.target)
_terminal = sa.text(
    "status IN (" + ", ".join(f"'{s.value}'" for s in Status if s in TERMINAL) + ")"
)
sa.Index(
    "ix_predictions_finished",
    predictions.c.finished_at,
    sqlite_where=_terminal,
    postgresql_where=_terminal,
)
sa.Index("ix_predictions_target_id", predictions.c.target, predictions.c.id)
_in_run = sa.text("run_id IS NOT NULL")
sa.Index("ix_predictions_run", predictions.c.run_id, sqlite_where=_in_run, postgresql_where=_in_run)
sa.Index(
    "ux_predictions_idempotency_key",
    predictions.c.tenant,
    predictions.c.idempotency_key,
    unique=True,
)
sa.Index("ix_predictions_tenant_id", predictions.c.tenant, predictions.c.id)
_heads = sa.text("run_id IS NOT NULL AND item_index IS NULL")
sa.Index("ix_predictions_heads", predictions.c.run_id, sqlite_where=_heads, postgresql_where=_heads)
_partial_index(
    "ix_predictions_pending_elements",
    Status.PENDING,
    predictions.c.run_id,
    predictions.c.step,
    predictions.c.item_index,
)
_jobs = sa.text("kind = 'batch'")
sa.Index("ix_predictions_jobs", predictions.c.id, sqlite_where=_jobs, postgresql_where=_jobs)

# The transactional outbox: one row per event and subscription, written by a
# trigger (migration 0006) in the transaction of the status change itself, so a
# change and its notification commit together; the agents deliver them.
outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),  # <event id>#<subscription>
    sa.Column("event_id", sa.Text, nullable=False),  # <prediction>:<type>:<attempt>
    sa.Column("subscription", sa.Integer, nullable=False),  # index into notify
    sa.Column("prediction_id", sa.Text, nullable=False),
    sa.Column("event_type", sa.Text, nullable=False),  # started | completed
    sa.Column("seq", sa.Integer, nullable=False),  # order of events per prediction
    sa.Column("status", sa.Text, nullable=False),  # pending sending delivered dead stopped
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("next_at", sa.Double, nullable=False),
    sa.Column("lease_expires_at", sa.Double),
    sa.Column("worker_id", sa.Text),
    sa.Column("last_code", sa.Integer),
    sa.Column("last_error", sa.Text),
    sa.Column("finished_at", sa.Double),
)
_pending = sa.text("status = 'pending'")
sa.Index("ix_outbox_due", outbox.c.next_at, sqlite_where=_pending, postgresql_where=_pending)
sa.Index("ix_outbox_prediction", outbox.c.prediction_id, outbox.c.subscription, outbox.c.seq)
_sending = sa.text("status = 'sending'")
sa.Index(
    "ix_outbox_sending", outbox.c.lease_expires_at, sqlite_where=_sending, postgresql_where=_sending
)

# Every delivery attempt, for GET /v1/predictions/{id}/deliveries.
delivery_attempts = sa.Table(
    "delivery_attempts",
    metadata,
    sa.Column("outbox_id", sa.Text, primary_key=True),
    sa.Column("attempt", sa.Integer, primary_key=True),
    sa.Column("prediction_id", sa.Text, nullable=False),
    sa.Column("at", sa.Double, nullable=False),
    sa.Column("status_code", sa.Integer),
    sa.Column("error", sa.Text),
    sa.Column("next_at", sa.Double),
    # how long the sink took, and the first KB of a receiver's answer (migration 0012)
    sa.Column("latency_ms", sa.Double),
    sa.Column("response", sa.Text),
)
sa.Index("ix_delivery_attempts_prediction", delivery_attempts.c.prediction_id)

# Webhook signing secrets: the current one, and retired ones still signing during
# a rotation's overlap (every process signs with the same keys).
webhook_secrets = sa.Table(
    "webhook_secrets",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("secret", sa.Text, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("retired_at", sa.Double),  # signs until retired_at + overlap
    sa.Column("tenant", sa.Text, nullable=False, server_default="default"),
)

# API keys (migration 0008): stored hashed; the token is shown once, at creation.
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),  # the public id inside the token
    sa.Column("tenant", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("scopes", sa.Text, nullable=False),  # JSON list
    sa.Column("targets", sa.Text),  # JSON list; NULL: every model and pipeline
    sa.Column("hash", sa.Text, nullable=False),  # SHA-256 of the token
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("created_by", sa.Text, nullable=False),
    sa.Column("expires_at", sa.Double),
    sa.Column("revoked_at", sa.Double),
    sa.Column("secret", sa.Text),  # a SigV4 pair's secret, sealed; NULL for a bearer key
)

# Who changed keys and secrets, and what admins did.
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Double, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("tenant", sa.Text, nullable=False),  # the tenant acted upon
    sa.Column("action", sa.Text, nullable=False),  # key.create, key.revoke, secret.rotate...
    sa.Column("subject", sa.Text),  # what it acted on (a key id, ...)
    sa.Column("detail", sa.Text),  # JSON
)
sa.Index("ix_audit_log_at", audit_log.c.at)

#: the usage ledger's id: BIGINT (a line per group and ending transaction outgrows
#: 2**31 on a busy cluster), but SQLite's INTEGER rowid (64-bit already)
LEDGER_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# The usage ledger: lines appended in the transaction that ends predictions (never
# updated in place, so concurrent completions contend on no row); summed per
# tenant x target x hour when read.
usage_ledger = sa.Table(
    "usage_ledger",
    metadata,
    sa.Column("id", LEDGER_ID, primary_key=True, autoincrement=True),
    sa.Column("hour", sa.Double, nullable=False),  # epoch seconds of the hour's start
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
sa.Index("ix_usage_ledger_hour", usage_ledger.c.hour, usage_ledger.c.tenant)

# A prediction's logs (``store/logs.py``): (prediction_id, seq) is the primary key, so
# the append's "last line" and the read's "lines after seq" are each one index range.
prediction_logs = sa.Table(
    "prediction_logs",
    metadata,
    sa.Column("prediction_id", sa.Text, primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("at", sa.Double, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("stream", sa.Text, nullable=False),
    sa.Column("level", sa.Text),
    sa.Column("phase", sa.Text, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("total", sa.BigInteger, nullable=False),  # bytes up to this line, inclusive
    sa.Column("dropped", sa.BigInteger),  # the marker line's: bytes dropped
)

# A streaming prediction's chunks (``store/streamed.py``, migration 0016): keyed like the
# logs, so "the last seq" and "the chunks after seq" are each one index range.
prediction_chunks = sa.Table(
    "prediction_chunks",
    metadata,
    sa.Column("prediction_id", sa.Text, primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("at", sa.Double, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),  # text, bytes (base64), json
    sa.Column("data", sa.Text, nullable=False),
)

# Each worker node's last report of its replicas (migration 0011; ``agent/census.py``).
nodes = sa.Table(
    "nodes",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("host", sa.Text, nullable=False),
    sa.Column("started_at", sa.Double, nullable=False),
    sa.Column("seen_at", sa.Double, nullable=False),
    sa.Column("states", sa.Text, nullable=False),  # JSON: waiting.NodeReport.to_json()
)
