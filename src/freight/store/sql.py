"""The hot-path SQL shared by both backends, and the row <-> Prediction mapping.

Statements are plain text with ``:name`` parameters (what stdlib ``sqlite3``
takes). Where the dialects differ the text holds a ``{lock}`` / ``{skip_locked}``
slot (``{notify_outbox}``: PostgreSQL's wake-up of the deliverers), filled by
:func:`render`; for PostgreSQL :func:`render` also converts the
parameters once, at import time of the backend, to psycopg's ``%(name)s``.
Hand-written SQL rather than SQLAlchemy on this path: ~10x fewer microseconds
per statement, measured on both drivers. Status predicates are *literals* so that the
partial indexes of ``schema.py`` are used (a bound ``status = ?`` defeats them).

Every statement returns whole rows in the column order of ``COLUMNS``, which is
the field order of :class:`~freight.prediction.Prediction`, mapped by ``rows.py``.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from freight.prediction import LEASED, TERMINAL, Kind, Prediction, Status

Dialect = Literal["sqlite", "postgresql"]

COLUMNS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Prediction))
COLS = ", ".join(COLUMNS)
RETURNING = f"RETURNING {COLS}"


def _literals(values: Iterable[object]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in sorted(str(v) for v in values)) + ")"


#: literal lists rendered from the enums (partial indexes need literal predicates)
LEASED_KINDS = _literals(LEASED)
UNFINISHED = _literals(s for s in Status if s not in TERMINAL)
FINISHED = _literals(TERMINAL)

_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


@functools.lru_cache(maxsize=2048)
def render(sql: str, dialect: Dialect) -> str:
    """Fill the dialect slots of ``sql`` and, for PostgreSQL, convert its parameters."""
    if dialect == "sqlite":
        return sql.format(lock="", skip_locked="", notify_outbox="NULL")
    filled = sql.format(
        lock="FOR UPDATE",
        skip_locked="FOR UPDATE SKIP LOCKED",
        notify_outbox="pg_notify('freight_outbox', :id)",
    )
    return to_pyformat(filled)


def to_pyformat(sql: str) -> str:
    """``:name`` -> ``%(name)s``; literal ``%`` doubled; ``::type`` casts left alone."""
    return _PARAM.sub(r"%(\1)s", sql.replace("%", "%%"))


def expand_in(name: str, values: Sequence[Any]) -> tuple[str, dict[str, Any]]:
    """An ``IN (...)`` list of ``len(values)`` parameters ``:name0, :name1, ...``.

    Portable across both drivers (neither ``= ANY`` nor ``json_each`` is), at the
    cost of one statement text per list length, which is bounded by batch sizes.
    An empty list renders ``(NULL)``, which matches nothing.
    """
    if not values:
        return "(NULL)", {}
    params = {f"{name}{i}": v for i, v in enumerate(values)}
    return "(" + ", ".join(f":{k}" for k in params) + ")", params


INSERT = (
    f"INSERT INTO predictions ({COLS}) VALUES ("
    + ", ".join(f":{c}" for c in COLUMNS)
    + f") ON CONFLICT (tenant, idempotency_key) DO NOTHING {RETURNING}"
)

GET = f"SELECT {COLS} FROM predictions WHERE id = :id"
GET_MANY = f"SELECT {COLS} FROM predictions WHERE id IN {{ids}}"
GET_FOR_UPDATE = f"SELECT {COLS} FROM predictions WHERE id = :id {{lock}}"
GET_BY_IDEMPOTENCY_KEY = (
    f"SELECT {COLS} FROM predictions WHERE tenant = :tenant AND idempotency_key = :key"
)

# A pipeline run starts running (its steps queue); a model's prediction is queued.
MARK_INPUT_READY = f"""
UPDATE predictions SET
    status = CASE WHEN kind = 'pipeline' THEN 'running' ELSE 'queued' END,
    started_at = CASE WHEN kind = 'pipeline' THEN :now ELSE started_at END,
    lease_expires_at = CASE WHEN kind = 'pipeline' THEN :now + timeout_s
        ELSE lease_expires_at END,
    queued_at = :now, input_key = :input_key, input_json = :input_json,
    input_content_type = :input_content_type, input_bytes = :input_bytes
WHERE id = :id AND status = 'awaiting_input'
{RETURNING}"""

# The claim is fair between tenants (``ops.claim``): first the tenants with queued rows
# of the target, then a claim per tenant. Both read ``ix_predictions_claim`` (target,
# tenant, priority DESC, id) WHERE status = 'queued', with no sort and no full scan:
#
# * CLAIM_TENANTS is a loose index scan: each step one seek of the greatest tenant
#   below the previous one, from below ``:after`` (the tenant served last) down, then
#   from the top down to it (the wrap), at most TENANTS_CAP of each. Downwards because
#   each seek lands on the *last* entry of a tenant's range, its newest, lowest-priority
#   rows, which are still queued; the first entries are the ones claimed already, and on
#   PostgreSQL those stay in the index until vacuumed: a scan upwards (``min(tenant)
#   ... AND tenant > previous``) walked them, 10, 28, 48, 68 buffers a scan at 0, 600,
#   1,200, 1,800 rows claimed of one tenant; this one reads 5 at each. SQLite 3.40
#   (EXPLAIN QUERY PLAN): every subquery ``SEARCH p USING INDEX ix_predictions_claim
#   (target=? AND tenant<?)`` (``(target=?)`` for the top), no temp b-tree; PostgreSQL
#   15 (EXPLAIN of the generic plan): every one ``Limit -> Index Only Scan Backward
#   using ix_predictions_claim, Index Cond: ((target = $1) AND (tenant < ...))``.
# * CLAIM takes one tenant's rows, priority desc then oldest. SQLite: ``SEARCH
#   predictions USING INDEX ix_predictions_claim (target=? AND tenant=?)``, no temp
#   b-tree; PostgreSQL: ``Limit -> LockRows -> Index Scan using ix_predictions_claim,
#   Index Cond: ((target = $1) AND (tenant = $2))`` (the status filter is the
#   re-check of a locked row).
TENANTS_CAP = 64
# max(tenant), spelled as the claim index's own order backwards: no other index gives
# that order without a sort, so that no statistics lead a planner to walk another
# index that has ``tenant`` first (``ux_predictions_idempotency_key``: PostgreSQL took
# it, with its filter on status and target, on a table of queued rows only)
_LAST_TENANT = (
    "(SELECT p.tenant FROM predictions p"
    " WHERE p.status = 'queued' AND p.target = :target{below}"
    " ORDER BY p.tenant DESC, p.priority, p.id DESC LIMIT 1)"
)
# rows (tenant, n): the n-th tenant to serve (Python sorts by n, keeps TENANTS_CAP)
CLAIM_TENANTS = f"""
WITH RECURSIVE
below(tenant, n) AS (
    SELECT {_LAST_TENANT.format(below=" AND p.tenant < :after")}, 1
    UNION ALL
    SELECT {_LAST_TENANT.format(below=" AND p.tenant < b.tenant")}, b.n + 1
    FROM below b WHERE b.tenant IS NOT NULL AND b.n < {TENANTS_CAP}
),
wrapped(tenant, n) AS (
    SELECT {_LAST_TENANT.format(below="")}, {TENANTS_CAP + 1}
    UNION ALL
    SELECT {_LAST_TENANT.format(below=" AND p.tenant < w.tenant")}, w.n + 1
    FROM wrapped w
    WHERE w.tenant IS NOT NULL AND w.n < {2 * TENANTS_CAP}
        AND (CAST(:after AS TEXT) IS NULL OR w.tenant > :after)
)
SELECT tenant, n FROM below WHERE tenant IS NOT NULL
UNION ALL
SELECT tenant, n FROM wrapped
WHERE tenant IS NOT NULL AND (CAST(:after AS TEXT) IS NULL OR tenant >= :after)"""

CLAIM = f"""
UPDATE predictions SET status = 'running', started_at = :now, attempts = attempts + 1,
    worker_id = :worker_id, lease_expires_at = :lease_expires_at
WHERE id IN (
    SELECT id FROM predictions
    WHERE status = 'queued' AND target = :target AND tenant = :tenant
        AND (not_before IS NULL OR not_before <= :now)
    ORDER BY priority DESC, id
    LIMIT :limit {{skip_locked}}
)
{RETURNING}"""

# after a claim: whether rows of the target are still queued (due or not, capped or not,
# locked or not: only "none at all" lets a claimer wait for a notification instead of
# claiming again). ``ix_predictions_claim``, one seek.
QUEUED_ANY = "SELECT 1 FROM predictions WHERE status = 'queued' AND target = :target LIMIT 1"

# Fenced: applies only while the row is still held by this worker and attempt.
COMPLETE = f"""
UPDATE predictions SET status = :status, finished_at = :finished_at,
    lease_expires_at = NULL,
    output_json = :output_json, output_key = :output_key,
    output_content_type = :output_content_type, output_bytes = :output_bytes,
    error_code = :error_code, error_message = :error_message,
    error_detail = :error_detail, batch_size = :batch_size
WHERE id = :id AND status = 'running' AND worker_id = :worker_id AND attempts = :attempt
{RETURNING}"""



def _history(why: str) -> str:
    """An attempt that ended without completing, appended to ``attempt_history``
    (``attempt,started_at,ended_at,worker,why;`` per attempt: ``prediction.attempts_of``
    reads it). Plain text concatenation: the same on both engines, no JSON functions."""
    return (
        "COALESCE(attempt_history, '') || attempts || ',' || COALESCE(started_at, 0) || ',' "
        f"|| :now || ',' || COALESCE(worker_id, '') || ',{why};'"
    )


# Failed once the (counted) attempts are spent; otherwise back to the queue.
# ``started_at`` is kept: it tells a requeued prediction has run before.
RELEASE = f"""
UPDATE predictions SET
    status = CASE WHEN :count_attempt AND attempts >= max_attempts
        THEN 'failed' ELSE 'queued' END,
    finished_at = CASE WHEN :count_attempt AND attempts >= max_attempts
        THEN :now ELSE NULL END,
    error_code = CASE WHEN :count_attempt AND attempts >= max_attempts
        THEN :error_code ELSE error_code END,
    error_message = CASE WHEN :count_attempt AND attempts >= max_attempts
        THEN :error_message ELSE error_message END,
    attempts = CASE WHEN :count_attempt THEN attempts ELSE attempts - 1 END,
    not_before = CASE WHEN :count_attempt THEN :now + NULLIF(:backoff_s, 0) * attempts END,
    attempt_history = CASE WHEN :count_attempt
        THEN {_history("replica_died")} ELSE attempt_history END,
    worker_id = NULL, lease_expires_at = NULL
WHERE id = :id AND status = 'running' AND worker_id = :worker_id AND attempts = :attempt
{RETURNING}"""

# The lease renewal never waits for a row lock (SKIP LOCKED): it takes part in no cycle.
HEARTBEAT = """
UPDATE predictions SET lease_expires_at = :lease_expires_at
WHERE id IN (
    SELECT id FROM predictions
    WHERE status = 'running' AND worker_id = :worker_id AND id IN {ids}
    ORDER BY id {{skip_locked}}
)
RETURNING id"""
HELD = """
SELECT id FROM predictions WHERE status = 'running' AND worker_id = :worker_id AND id IN {ids}"""

# A batch job's driver saves its progress (the job's definition) while it holds the job,
# and once more after a cancel (the outputs it finished with what was done).
SAVE_PROGRESS = """
UPDATE predictions SET definition = :definition
WHERE id = :id AND status IN ('running', 'canceled') AND worker_id = :worker_id
    AND attempts = :attempt
RETURNING id"""

CANCEL = f"""
UPDATE predictions SET status = 'canceled', finished_at = :now, lease_expires_at = NULL,
    error_code = 'canceled', error_message = 'canceled on request'
WHERE id = :id AND status IN {UNFINISHED}
{RETURNING}"""

# The reaper's sweeps: each a query of the rows due (bounded: a sweep after a long
# outage takes them in turns) and the change of those still due once locked.
_CHANGE = (
    "WHERE id IN (SELECT id FROM predictions WHERE id IN {{ids}} AND {due} "
    "ORDER BY id {{{{lock}}}})"
)
_REAP_LIMIT = 500


def _reap(due: str, change: str) -> tuple[str, str]:
    # no ORDER BY: it led SQLite to scan the primary key instead of the sweep's partial
    # index (the change locks in id order)
    find = f"SELECT id FROM predictions WHERE {due} LIMIT {_REAP_LIMIT}"
    return find, f"UPDATE predictions SET {change}\n{_CHANGE.format(due=due)}\n{RETURNING}"


_ENDED = "finished_at = :now, lease_expires_at = NULL, waiting_on = 0"
REAPS: dict[str, tuple[str, str]] = {
    "TTL": _reap(
        "status = 'queued' AND expires_at < :now",
        f"status = 'expired', {_ENDED}, error_code = 'expired', "
        "error_message = 'not started before its expiry time'",
    ),
    "UPLOAD": _reap(
        "status = 'awaiting_input' AND upload_expires_at < :now",
        f"status = 'expired', {_ENDED}, error_code = 'expired', "
        "error_message = 'input not uploaded in time'",
    ),
    # a pipeline run's deadline is its lease
    "RUN_TIMEOUT": _reap(
        "status = 'running' AND lease_expires_at < :now AND kind = 'pipeline'",
        f"status = 'failed', {_ENDED}, error_code = 'timeout', "
        "error_message = 'the pipeline did not finish within its timeout_s'",
    ),
    # a callback step's deadline is its lease (pipelines/callback.py): no answer in time
    # (right-hand sides read the row as it was: lease_expires_at before it is cleared)
    "CALLBACK_TIMEOUT": _reap(
        "status = 'running' AND lease_expires_at < :now AND kind = 'callback'",
        f"status = 'failed', {_ENDED}, error_code = 'timeout', error_message = CASE "
        "WHEN lease_expires_at < started_at + timeout_s "
        "THEN 'the callback had no heartbeat within its heartbeat_s' "
        "ELSE 'the callback had no answer within its timeout_s' END",
    ),
    "LEASE_FAIL": _reap(
        "status = 'running' AND lease_expires_at < :now AND attempts >= max_attempts "
        f"AND kind IN {LEASED_KINDS}",
        f"status = 'failed', {_ENDED}, error_code = 'attempts_exhausted', "
        "error_message = 'lease expired and no attempts are left', "
        f"attempt_history = {_history('lease_expired')}",
    ),
    "LEASE_REQUEUE": _reap(
        f"status = 'running' AND lease_expires_at < :now AND kind IN {LEASED_KINDS}",
        f"attempt_history = {_history('lease_expired')}, "
        "status = 'queued', worker_id = NULL, lease_expires_at = NULL, "
        "not_before = :now + NULLIF(:backoff_s, 0) * attempts",
    ),
}

# A callback step answered (store/ops.py answer_callback, the row locked and checked to
# wait under the token's attempt and start): its end, guarded by the attempt it waits in
ANSWER_CALLBACK = f"""
UPDATE predictions SET status = :status, finished_at = :now, lease_expires_at = NULL,
    output_json = :output_json, output_content_type = :output_content_type,
    output_bytes = :output_bytes, error_code = :error_code, error_message = :error_message,
    error_detail = :error_detail
WHERE id = :id AND status = 'running' AND kind = 'callback' AND attempts = :attempt
{RETURNING}"""
# its heartbeat: the deadline moved on (computed from the locked row)
CALLBACK_HEARTBEAT = f"""
UPDATE predictions SET lease_expires_at = :lease_expires_at
WHERE id = :id AND status = 'running' AND kind = 'callback' AND attempts = :attempt
{RETURNING}"""
# the event of a callback step that began a wait, for the top-level run's subscribers
# that asked for it (pipelines/callback.py announcements): the run's own outbox, ordered
# with its events by seq (its ``started``'s: sent before its ``completed``)
INSERT_WAITING = """
INSERT INTO outbox (id, event_id, subscription, prediction_id, event_type, seq, status,
    attempts, created_at, next_at)
VALUES (:id, :event_id, :subscription, :prediction_id, :event_type, :seq, 'pending', 0,
    :now, :now)
ON CONFLICT (id) DO NOTHING"""
# ... and the deliverers woken, as the outbox trigger wakes them (migration 0006): on
# PostgreSQL a NOTIFY, sent at commit; SQLite's deliverer is this process's (it polls)
NOTIFY_OUTBOX = "SELECT {notify_outbox}"

# After this (only) writer's own crash every running row is an orphan; the crash may
# have been the prediction's doing (an input that kills the server): its attempt counts.
RECOVER_ORPHANS = f"""
UPDATE predictions SET
    status = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'queued' END,
    finished_at = CASE WHEN attempts >= max_attempts THEN :now ELSE NULL END,
    error_code = CASE WHEN attempts >= max_attempts
        THEN 'attempts_exhausted' ELSE error_code END,
    error_message = CASE WHEN attempts >= max_attempts
        THEN 'the process running it died and no attempts are left' ELSE error_message END,
    not_before = :now + NULLIF(:backoff_s, 0) * attempts,
    attempt_history = {_history("process_died")},
    worker_id = NULL, lease_expires_at = NULL
WHERE status = 'running' AND kind IN {LEASED_KINDS}
{RETURNING}"""

# Retention: the oldest terminal rows finished before a cut-off, deleted in one
# statement. The IN list is the literal predicate of ``ix_predictions_finished``.
PURGE = f"""
DELETE FROM predictions
WHERE id IN (
    SELECT id FROM predictions
    WHERE status IN {FINISHED}
        AND finished_at < :before
    ORDER BY finished_at
    LIMIT :limit {{skip_locked}}
)
{RETURNING}"""

# One branch per status, each with a literal predicate, so that each counts only
# its own partial index instead of scanning the whole table (which grows forever
# until retention): an IN (...) over statuses made both engines scan everything.
# min(id) of the queued rows: ids are UUIDv7, so it dates the oldest queued prediction
# from the claim index alone (min(queued_at) would read every queued row)
STATS = f"""
SELECT target, 'queued', count(*), min(id) FROM predictions WHERE status = 'queued'
GROUP BY target
UNION ALL
SELECT target, 'running', count(*), NULL FROM predictions
WHERE status = 'running' AND kind IN {LEASED_KINDS} GROUP BY target
UNION ALL
SELECT target, 'awaiting_input', count(*), NULL FROM predictions
WHERE status = 'awaiting_input' GROUP BY target"""

# Lock order (ops.py): the runs of some rows, their ancestors, then rows, by id. A row
# that is itself a run counts as a run: whoever ends one of its steps locks it as such.
RUNS_OF = (
    "SELECT run_id FROM predictions WHERE id IN {ids} AND run_id IS NOT NULL "
    "UNION SELECT id FROM predictions WHERE id IN {ids} AND kind = 'pipeline'"
)
LOCK_IDS = "SELECT id FROM predictions WHERE id IN {ids} ORDER BY id {{lock}}"
LOCK_SECRETS = "LOCK TABLE webhook_secrets IN EXCLUSIVE MODE"


#: what a listing shows unless asked for a kind: top-level predictions and runs
_TOP_LEVEL = f"run_id IS NULL AND kind IN {_literals((Kind.MODEL, Kind.PIPELINE))}"


def list_query(
    *,
    target: str | None,
    status: Status | None,
    after_id: str | None,
    limit: int,
    kind: Kind | None = None,
    tenant: str | None = None,
    targets: Sequence[str] | None = None,
) -> tuple[str, dict[str, Any]]:
    """The listing statement for the given filters: newest first (ids are UUIDv7).
    Without a ``kind``, top-level predictions and runs only (not steps or chunks).
    ``tenant``: its rows only; ``targets``: of these targets only (a limited key)."""
    # the kind as a literal: batch jobs are listed from the partial ix_predictions_jobs
    where = [_TOP_LEVEL] if kind is None else [f"kind = '{Kind(kind).value}'"]
    params: dict[str, Any] = {"limit": limit}
    if tenant is not None:
        where.append("tenant = :tenant")
        params["tenant"] = tenant
    if targets is not None:
        in_list, names = expand_in("target_", sorted(targets) or [""])
        where.append(f"target IN {in_list}")
        params |= names
    if target is not None:
        where.append("target = :target")
        params["target"] = target
    if status is not None:
        where.append("status = :status")
        params["status"] = Status(status).value
    if after_id is not None:
        where.append("id < :after_id")
        params["after_id"] = after_id
    clause = " AND ".join(where)
    return f"SELECT {COLS} FROM predictions WHERE {clause} ORDER BY id DESC LIMIT :limit", params


# Pipelines: a run's own rows (its steps, for_each elements, nested runs); its step
# heads (partial index ix_predictions_heads: never the elements); a for_each step's
# elements, all or the first pending ones (ix_predictions_pending_elements).
RUN_ROWS = f"SELECT {COLS} FROM predictions WHERE run_id = :run_id ORDER BY id"
RUN_HEADS = (
    f"SELECT {COLS} FROM predictions WHERE run_id = :run_id AND item_index IS NULL ORDER BY id"
)
ELEMENTS = f"""
SELECT {COLS} FROM predictions
WHERE run_id = :run_id AND step = :step AND item_index IS NOT NULL ORDER BY item_index"""
PENDING_ELEMENTS = f"""
SELECT {COLS} FROM predictions
WHERE run_id = :run_id AND step = :step AND item_index IS NOT NULL AND status = 'pending'
ORDER BY item_index LIMIT :limit"""
# an advancement's write-back: whole, unless the row changed since it was read
# (``update_columns``: only the columns it changed)
UPDATE_ROW = (
    "UPDATE predictions SET "
    + ", ".join(f"{c} = :{c}" for c in COLUMNS if c != "id")
    + " WHERE id = :id AND status = :was"
)


@functools.lru_cache(maxsize=256)
def update_columns(columns: tuple[str, ...]) -> str:
    """An advancement's write-back of these columns only, unless the row changed since
    it was read (its status then is not ``:was``). Measured in B4: the whole-row
    UPDATE (39 columns) cost ~0.13 ms; a run's advancement changes 2-8 of them."""
    assignments = ", ".join(f"{c} = :{c}" for c in columns)
    return f"UPDATE predictions SET {assignments} WHERE id = :id AND status = :was"


INSERT_STEP = (
    f"INSERT INTO predictions ({COLS}) VALUES (" + ", ".join(f":{c}" for c in COLUMNS) + ")"
)
_CANCELED = (
    "status = 'canceled', finished_at = :now, lease_expires_at = NULL, waiting_on = 0, "
    "error_code = 'canceled', error_message = :message"
)
# a step head an advancement cancels (also when claimed meanwhile)
CANCEL_ROW = f"""
UPDATE predictions SET {_CANCELED} WHERE id = :id AND status IN {UNFINISHED}
{RETURNING}"""
# what is left of a for_each step's elements, of an ended run's rows
CANCEL_ELEMENTS = f"""
UPDATE predictions SET {_CANCELED}
WHERE id IN (
    SELECT id FROM predictions
    WHERE run_id = :run_id AND step = :step AND item_index IS NOT NULL
        AND status IN {UNFINISHED}
    ORDER BY id {{lock}}
)
{RETURNING}"""
CANCEL_REST = f"""
UPDATE predictions SET {_CANCELED}
WHERE id IN (
    SELECT id FROM predictions WHERE run_id = :run_id AND status IN {UNFINISHED}
    ORDER BY id {{lock}}
)
{RETURNING}"""

# -- the outbox (migration 0006) --------------------------------------------------
OUTBOX_COLUMNS = (
    "id, event_id, subscription, prediction_id, event_type, seq, status, attempts, "
    "created_at, next_at, lease_expires_at, worker_id, last_code, last_error, finished_at"
)
# a worker that died while sending: its rows are due again
REQUEUE_SENDING = """
UPDATE outbox SET status = 'pending', worker_id = NULL, lease_expires_at = NULL
WHERE status = 'sending' AND lease_expires_at < :now"""
# Due rows, each the oldest unfinished event of its prediction and subscription: a
# receiver gets one prediction's events in order, never two of them at once.
CLAIM_DELIVERIES = f"""
UPDATE outbox SET status = 'sending', attempts = attempts + 1, worker_id = :worker_id,
    lease_expires_at = :lease_expires_at
WHERE id IN (
    SELECT o.id FROM outbox o
    WHERE o.status = 'pending' AND o.next_at <= :now AND NOT EXISTS (
        SELECT 1 FROM outbox e
        WHERE e.prediction_id = o.prediction_id AND e.subscription = o.subscription
            AND e.seq < o.seq AND e.status IN ('pending', 'sending'))
    ORDER BY o.next_at
    LIMIT :limit {{skip_locked}}
)
RETURNING {OUTBOX_COLUMNS}"""
FINISH_DELIVERY = """
UPDATE outbox SET status = :status, next_at = COALESCE(:next_at, next_at),
    worker_id = NULL, lease_expires_at = NULL, last_code = :status_code, last_error = :error,
    finished_at = CASE WHEN :status IN ('delivered', 'dead', 'stopped') THEN :at END
WHERE id = :id AND status = 'sending' AND worker_id = :worker_id AND attempts = :attempt
RETURNING prediction_id, subscription"""
INSERT_ATTEMPT = """
INSERT INTO delivery_attempts (outbox_id, attempt, prediction_id, at, status_code, error, next_at,
    latency_ms, response)
VALUES (:id, :attempt, :prediction_id, :at, :status_code, :error, :next_at, :latency_ms,
    :response)"""
STOP_SUBSCRIPTION = """
UPDATE outbox SET status = 'stopped', finished_at = :at,
    last_error = 'the receiver answered 410 Gone to an earlier event'
WHERE prediction_id = :prediction_id AND subscription = :subscription AND status = 'pending'"""
# Claimed rows of a subscription a receiver stopped (410 Gone) before they existed: the
# event was written after the stop (ix_outbox_prediction), so the stop never saw it
AFTER_GONE = """
SELECT o.id FROM outbox o WHERE o.id IN {ids} AND EXISTS (
    SELECT 1 FROM outbox e
    WHERE e.prediction_id = o.prediction_id AND e.subscription = o.subscription
        AND e.seq < o.seq AND e.status = 'stopped')"""
STOP_CLAIMED = """
UPDATE outbox SET status = 'stopped', finished_at = :now, worker_id = NULL,
    lease_expires_at = NULL,
    last_error = 'the receiver answered 410 Gone to an earlier event'
WHERE id IN {ids} AND status = 'sending'"""
OUTBOX_ROW = f"SELECT {OUTBOX_COLUMNS} FROM outbox WHERE id = :id"
# sent again, now, with its event id: one that died, was stopped by a 410, or waits
# for its next retry (a row being sent, or delivered, is left alone)
REDELIVER = f"""
UPDATE outbox SET status = 'pending', next_at = :now, worker_id = NULL,
    lease_expires_at = NULL, finished_at = NULL
WHERE id = :id AND status IN ('dead', 'stopped', 'pending')
RETURNING {OUTBOX_COLUMNS}"""
OUTBOX_OF = (
    f"SELECT {OUTBOX_COLUMNS} FROM outbox WHERE prediction_id = :id ORDER BY subscription, seq"
)
ATTEMPTS_OF = """
SELECT outbox_id, attempt, prediction_id, at, status_code, error, next_at, latency_ms,
    response
FROM delivery_attempts WHERE prediction_id = :id ORDER BY at, outbox_id, attempt"""
# is any row waiting to be sent or being sent (the partial indexes of each status)?
OUTBOX_OPEN = """
SELECT 1 FROM outbox WHERE status = 'pending'
UNION ALL SELECT 1 FROM outbox WHERE status = 'sending' LIMIT 1"""
# a prediction's outbox rows counted by status and attempts (its ix_outbox_prediction
# index; no attempts read): what ``deliveries.summarize`` makes the summary of
DELIVERY_COUNTS = """
SELECT status, attempts, count(*) FROM outbox WHERE prediction_id = :id GROUP BY status, attempts"""
WEBHOOK_SECRETS = (
    "SELECT secret, created_at, retired_at FROM webhook_secrets WHERE tenant = :tenant ORDER BY id"
)
INSERT_SECRET = (
    "INSERT INTO webhook_secrets (secret, created_at, tenant) VALUES (:secret, :now, :tenant)"
)
RETIRE_SECRETS = (
    "UPDATE webhook_secrets SET retired_at = :now WHERE retired_at IS NULL AND tenant = :tenant"
)
PURGE_OUTBOX = "DELETE FROM outbox WHERE prediction_id IN {ids}"
PURGE_ATTEMPTS = "DELETE FROM delivery_attempts WHERE prediction_id IN {ids}"
PURGE_LOGS = "DELETE FROM prediction_logs WHERE prediction_id IN {ids}"
PURGE_CHUNKS = "DELETE FROM prediction_chunks WHERE prediction_id IN {ids}"
