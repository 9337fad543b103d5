"""Every store transaction, written once, for both engines.

A transaction is a generator (sans-I/O, like the client's request flows): it
yields :class:`Sql` statements and receives each one's rows, and its return value
is the method's result. ``sqlite.py`` runs it on its one writer connection,
``postgres.py`` on a pooled async connection; neither holds a rule of its own.
The dialects differ only in fragments rendered by ``sql.render`` (row locks,
``SKIP LOCKED``) and in who wakes whom after the commit (PostgreSQL triggers
NOTIFY; SQLite's store calls back with the :class:`Told` a transaction returns).

**Lock order, one rule** (PostgreSQL; SQLite has one writer): a transaction that
ends or changes rows of pipeline runs first locks the runs those rows belong to,
their ancestors included, in id order (:func:`lock_runs_of`); then the rows
themselves, in id order (every multi-row UPDATE locks through an ``ORDER BY id``
sub-select). Ids are UUIDv7 and a run's rows are created after it, so id order
*is* "runs before their steps". Write-backs of an advancement are guarded by the
status that was read. The lease renewal never waits for a lock (``SKIP
LOCKED``), so it takes part in no cycle. The usage ledger's lines, which every
ending transaction appends (``advancing.py``), are inserts only: they lock
nothing another transaction waits on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from freight.bounds import cap_of
from freight.deliveries import DeliveryAttempt, DeliveryResult, DeliveryStatus, OutboxRow
from freight.errors import ConflictError, NotFoundError
from freight.events import Claimed, Hands
from freight.ids import new_id
from freight.pipelines import callback
from freight.pipelines.callback import Answer, Claim
from freight.pipelines.redrive import redrive as redriven
from freight.pipelines.redrive import refusal
from freight.prediction import (
    RETRY_BACKOFF_S,
    Completion,
    Kind,
    Prediction,
    ReapResult,
    Release,
    Status,
    TargetStats,
)
from freight.store import sql
from freight.store._op import Op, Sql, Told, as_rows, fetch, fetch_one, get, lock_runs_of
from freight.store.advancing import advance_runs
from freight.store.rows import (
    attempt_row,
    check_idempotent,
    claim_order,
    claim_params,
    completion_params,
    delivery_params,
    fair_shares,
    not_awaiting_input,
    prediction_params,
    release_params,
    secrets_in_use,
    stats_from_rows,
)
from freight.store.rows import (
    outbox_row as outbox_row_of,
)

# -- records ----------------------------------------------------------------------


def create(prediction: Prediction) -> Op[tuple[Prediction, bool]]:
    inserted = yield from fetch(sql.INSERT, prediction_params(prediction))
    if inserted:
        return inserted[0], True
    key = {"tenant": prediction.tenant, "key": prediction.idempotency_key}
    existing = yield from fetch_one(sql.GET_BY_IDEMPOTENCY_KEY, key)
    if existing is None:  # pragma: no cover - DO NOTHING only fires on this key
        raise ConflictError("insert was ignored", code="conflict", id=prediction.id)
    return check_idempotent(existing, prediction), False


def create_many(rows: Sequence[Prediction]) -> Op[list[tuple[Prediction, bool] | ConflictError]]:
    """Insert many predictions in one transaction (the bulk route): those without an
    idempotency key in one statement, each other one as :func:`create` (its replay
    is the row stored under its key; a different request under it, its error)."""
    plain = [row for row in rows if row.idempotency_key is None]
    if plain:
        yield Sql(sql.INSERT_STEP, [prediction_params(row) for row in plain])
    out: list[tuple[Prediction, bool] | ConflictError] = []
    for row in rows:
        if row.idempotency_key is None:
            out.append((row, True))
            continue
        try:
            out.append((yield from create(row)))
        except ConflictError as exc:
            out.append(exc)
    return out


def create_run(
    run: Prediction, steps: Sequence[Prediction]
) -> Op[tuple[tuple[Prediction, bool], Told]]:
    created, inserted = yield from create(run)
    if not inserted:
        return (created, False), Told()
    yield Sql(sql.INSERT_STEP, [prediction_params(s) for s in steps])
    told = yield from advance_runs([run.id], [], now=run.created_at)
    return ((yield from get(run.id)) or created, True), told


def mark_input_ready(params: dict[str, Any]) -> Op[tuple[Prediction, Told]]:
    yield from lock_runs_of([params["id"]])
    row = yield from fetch_one(sql.MARK_INPUT_READY, params)
    if row is None:
        raise not_awaiting_input(params["id"], (yield from get(params["id"])))
    if row.kind != Kind.PIPELINE:
        return row, Told()
    told = yield from advance_runs([row.id], [], now=params["now"])  # a run got its input
    return (yield from get(row.id)) or row, told


def cancel(prediction_id: str, now: float) -> Op[tuple[tuple[Prediction, Status], Told]]:
    yield from lock_runs_of([prediction_id])
    current = yield from fetch_one(sql.GET_FOR_UPDATE, {"id": prediction_id})
    if current is None:
        raise NotFoundError("prediction not found", id=prediction_id)
    if current.status.terminal:
        return (current, current.status), Told()
    row = yield from fetch_one(sql.CANCEL, {"id": prediction_id, "now": now})
    assert row is not None  # locked above, and not terminal
    told = yield from advance_runs([row.id] if row.kind == Kind.PIPELINE else [], [row], now=now)
    return (row, current.status), told


def redrive(run_id: str, now: float) -> Op[tuple[Prediction, Told]]:
    """Restart a failed or canceled run where it stopped (``pipelines/redrive.py``):
    its succeeded steps kept, the others pending again, then advanced, so the steps
    that are ready are queued by the commit. Locks the run (its ancestors: none, it is
    top-level), reads its rows and those of its nested runs that did not succeed, then
    locks their runs and the rows by id; the write-backs are guarded by the status
    read. ConflictError ``invalid_state`` for a row that is not such a run."""
    yield from lock_runs_of([run_id])
    run = yield from fetch_one(sql.GET_FOR_UPDATE, {"id": run_id})
    if run is None:
        raise NotFoundError("prediction not found", id=run_id)
    why = refusal(run)
    if why is not None:
        raise ConflictError(why, code="invalid_state", status=str(run.status))
    rows_of: dict[str, list[Prediction]] = {}
    wanted = [run.id]
    while wanted:
        of = wanted.pop(0)
        rows = rows_of[of] = yield from fetch(sql.RUN_ROWS, {"run_id": of})
        wanted += [r.id for r in rows if r.kind == Kind.PIPELINE and r.status != Status.SUCCEEDED]
    every = sorted(r.id for rows in rows_of.values() for r in rows)
    if every:
        yield from lock_runs_of(every)
        in_list, params = sql.expand_in("id", every)
        yield Sql(sql.LOCK_IDS.format(ids=in_list), params, lock_only=True)
    changes = redriven(run, rows_of, now=now, new_id=new_id)
    rows = sorted(changes.updated.values(), key=lambda r: r.id)
    written = [prediction_params(r) | {"was": str(changes.was[r.id])} for r in rows]
    yield Sql(sql.UPDATE_ROW, written)
    if changes.inserted:
        yield Sql(sql.INSERT_STEP, [prediction_params(r) for r in changes.inserted])
    told = yield from advance_runs(changes.runs, [], now=now)
    told.queued |= changes.queued
    return (yield from get(run.id)) or run, told


def answer_callback(claim: Claim, answer: Answer, now: float) -> Op[tuple[Prediction, Told]]:
    """A callback step answered (``pipelines/callback.py``): the step ends as ``answer``
    says and its run advances, in one transaction; the answer is taken once. Locks the
    run (its ancestors), then the row, and checks that it still waits under the token's
    attempt and start, before its deadline: ConflictError ``callback_superseded`` (an
    earlier wait's token) or ``callback_closed`` (answered, timed out, canceled);
    NotFoundError ``callback_not_found`` for a row no longer stored. Returns the row
    after the advancement (a failure its ``retry:`` covers waits again)."""
    yield from lock_runs_of([claim.row_id])
    row = yield from _waiting(claim, now)
    params = answer.params() | {"id": row.id, "attempt": row.attempts, "now": now}
    ended = yield from fetch(sql.ANSWER_CALLBACK, params)
    told = yield from advance_runs([], ended, now=now)
    return (yield from get(row.id)) or ended[0], told


def heartbeat_callback(claim: Claim, heartbeat_s: float | None, now: float) -> Op[Prediction]:
    """A waiting callback step heard of: its deadline moves to ``now + heartbeat_s``
    (never past ``started_at + timeout_s``). Refused as an answer is."""
    row = yield from _waiting(claim, now)
    started = row.started_at if row.started_at is not None else now
    lease = callback.deadline(started, row.timeout_s, heartbeat_s, now)
    params = {"id": row.id, "attempt": row.attempts, "lease_expires_at": lease}
    return (yield from fetch_one(sql.CALLBACK_HEARTBEAT, params)) or row


def _waiting(claim: Claim, now: float) -> Op[Prediction]:
    """The row ``claim`` names, locked, still waiting under it (else the refusal)."""
    row = yield from fetch_one(sql.GET_FOR_UPDATE, {"id": claim.row_id})
    if row is None:
        raise NotFoundError("the callback's step no longer exists", code="callback_not_found")
    refused = callback.refusal(row, claim, now)
    if refused is not None:
        raise refused
    return row


def purge(before: float, limit: int) -> Op[list[Prediction]]:
    purged = yield from fetch(sql.PURGE, {"before": before, "limit": limit})
    in_list, params = sql.expand_in("id", [p.id for p in purged])
    for statement in (sql.PURGE_OUTBOX, sql.PURGE_ATTEMPTS, sql.PURGE_LOGS, sql.PURGE_CHUNKS):
        yield Sql(statement.format(ids=in_list), params)
    # RETURNING's order is the engine's: oldest first, as documented
    return sorted(purged, key=lambda p: (p.finished_at or 0.0, p.id))


def stats() -> Op[dict[str, TargetStats]]:
    return stats_from_rows((yield Sql(sql.STATS)))


def listing(
    *,
    target: str | None,
    status: Status | None,
    kind: Kind | None,
    after_id: str | None,
    limit: int,
    tenant: str | None = None,
    targets: Sequence[str] | None = None,
) -> Op[list[Prediction]]:
    statement, params = sql.list_query(
        target=target,
        status=status,
        kind=kind,
        after_id=after_id,
        limit=limit,
        tenant=tenant,
        targets=targets,
    )
    return (yield from fetch(statement, params))


# -- the claim / lease cycle --------------------------------------------------------


def claim(params: dict[str, Any], turns: dict[str, str]) -> Op[Claimed]:
    """Up to ``params["limit"]`` queued rows of ``params["target"]``, shared fairly
    between the tenants that have some queued (round robin, like Hatchet's concurrency
    keys: a backlog AAAAABBBBB is claimed ABAB...).

    **Priority** orders a tenant's own rows (highest first, then oldest); between
    tenants the share is equal whatever their rows' priorities: a tenant sets the
    priority of its own requests, so a priority that crossed tenants would let any
    of them opt out of the fair share (and starve the others) by raising it.

    The rows are dealt one at a time to the tenants in turn (at most
    ``sql.TENANTS_CAP`` per claim, found by a loose index scan of
    ``ix_predictions_claim``: ``sql.CLAIM_TENANTS``), each tenant's share claimed in
    one statement in its own priority-then-age order: ``limit // k`` each and one
    more for the first ``limit % k``. The turn goes round from one claim to the
    next: ``turns`` (the store's, per target) holds the tenant dealt the last row,
    and the next claim starts after it, so that a batch smaller than the number of
    tenants (or the one row a batching worker tops up with) still reaches every
    tenant, those past the cap included. What a tenant could not fill (too few
    queued, or rows another claimer holds) is topped up in a second round from the
    tenants that filled theirs, in turn. One tenant costs one statement more than
    the claim of old (its scan). Every statement is ``SKIP LOCKED``: a claim never
    waits for a row lock, so it takes part in no lock-order cycle however many
    statements it makes.

    The rows come as :class:`~freight.events.Claimed`, which says whether rows of the
    target were still queued after it (``sql.QUEUED_ANY``): a worker that knows
    there were none waits for a notification instead of claiming again.
    """
    rows = yield from _claim(params, turns)
    left = yield Sql(sql.QUEUED_ANY, {"target": params["target"]})
    return Claimed(rows, more=bool(left))


def _claim(params: dict[str, Any], turns: dict[str, str]) -> Op[list[Prediction]]:
    limit, target = params["limit"], params["target"]
    caps: dict[str, int] = params.get("caps") or {}
    found = yield Sql(sql.CLAIM_TENANTS, {"target": target, "after": turns.get(target)})
    tenants = [tenant for tenant, _ in sorted(found, key=lambda r: r[1])][: sql.TENANTS_CAP]
    # a tenant at its in-flight bound (freight/bounds.py) is passed over this time
    room = {t: cap_of(caps, t) for t in tenants}
    tenants = [t for t in tenants if room[t] != 0]
    if not tenants or limit <= 0:
        return []
    shares: dict[str, int] = {}
    for t, n in zip(tenants, fair_shares(limit, len(tenants)), strict=True):
        cap = room[t]
        shares[t] = n if cap is None else min(n, cap)
    base = {k: params[k] for k in ("target", "now", "worker_id", "lease_expires_at")}
    dealt = [base | {"tenant": t, "limit": n} for t, n in shares.items() if n]
    rows = as_rows((yield Sql(sql.CLAIM, dealt[0] if len(dealt) == 1 else dealt)))
    last = (limit - 1) % len(tenants)  # the tenant dealt the last row
    turns[target] = tenants[last]
    if len(rows) < limit:
        got = {t: 0 for t in tenants}
        for row in rows:
            got[row.tenant] += 1
        # the deal goes on after the last tenant dealt, among those that filled theirs
        after = tenants[last + 1 :] + tenants[: last + 1]
        for tenant in (t for t in after if got[t] >= shares[t]):
            more_of = limit - len(rows)
            if (cap := room[tenant]) is not None:
                more_of = min(more_of, cap - got[tenant])
            if more_of <= 0:
                continue
            wanted = base | {"tenant": tenant, "limit": more_of}
            more = yield from fetch(sql.CLAIM, wanted)
            rows += more
            if more:
                turns[target] = tenant
            if len(rows) >= limit:
                break
    return claim_order(rows)


R = TypeVar("R")


def handing_off(
    op: Op[tuple[R, Told]], hands: Hands | None, turns: dict[str, str], now: float
) -> Op[tuple[R, Told]]:
    """``op``, then, for each target whose rows its run advancement queued (a run's
    ready steps) and that has an idle replica in this process (``hands.offer``), a claim
    of them for that replica in the same transaction: the step goes to the replica
    without a wake-up and a claim of its own. The claim is :func:`claim` itself, so
    fairness, the lease, the attempt count and fencing are a claim's, and a crash after
    the hand-off leaves a ``running`` row with a lease, taken again when it expires.
    A target left with nothing queued is not notified (``Told.queued``); the claimed
    rows are given to the replicas once committed (``Told.handed``)."""
    result, told = yield from op
    if hands is None:
        return result, told
    for target in sorted(told.queued):
        offer = hands.offer(target)
        if offer is None:
            continue
        params = claim_params(
            target, offer.limit, worker_id=offer.worker_id, lease_s=offer.lease_s, now=now
        )
        rows = yield from claim(params, turns)
        told.handed.append((offer, rows))
        if not rows.more:
            told.queued.discard(target)
    return result, told


def complete(completions: Sequence[Completion]) -> Op[tuple[list[str], Told]]:
    ordered = sorted(completions, key=lambda c: c.id)
    yield from lock_runs_of(c.id for c in ordered)
    ended = as_rows((yield Sql(sql.COMPLETE, [completion_params(c) for c in ordered])))
    finished_at = max((c.finished_at for c in completions), default=0.0)
    spent = {c.id: c for c in ordered}
    told = yield from advance_runs([], ended, now=finished_at, spent=spent)
    return [row.id for row in ended], told


def release(releases: Sequence[Release], now: float) -> Op[tuple[dict[str, Status], Told]]:
    ordered = sorted(releases, key=lambda r: r.id)
    yield from lock_runs_of(r.id for r in ordered)
    rows = as_rows((yield Sql(sql.RELEASE, [release_params(r, now) for r in ordered])))
    ended = [row for row in rows if row.status.terminal]
    told = yield from advance_runs([], ended, now=now)
    return {row.id: row.status for row in rows}, told


def heartbeat(worker_id: str, ids: Sequence[str], lease_expires_at: float) -> Op[list[str]]:
    """Extend what this worker holds; a row locked by another transaction right now
    (its completion, a cancel) is skipped, not waited for, and counts as held if it
    still was at the start of this statement: the next beat extends it."""
    in_list, params = sql.expand_in("id", sorted(ids))
    params |= {"worker_id": worker_id, "lease_expires_at": lease_expires_at}
    extended = {r[0] for r in (yield Sql(sql.HEARTBEAT.format(ids=in_list), params))}
    if len(extended) < len(ids):
        extended |= {r[0] for r in (yield Sql(sql.HELD.format(ids=in_list), params))}
    return [i for i in ids if i not in extended]


def save_progress(params: dict[str, Any]) -> Op[bool]:
    return bool((yield Sql(sql.SAVE_PROGRESS, params)))


def reap(now: float, backoff_s: float = RETRY_BACKOFF_S) -> Op[tuple[ReapResult, Told]]:
    """The sweeps, in this order: TTL first, so that a row requeued by the lease sweep
    is not expired in the same sweep (each id lands in one list). The rows due in every
    sweep are found first and locked at once (their runs, then themselves, by id: one
    lock order for the whole transaction); then each sweep changes the rows still due."""
    names = ("TTL", "UPLOAD", "RUN_TIMEOUT", "CALLBACK_TIMEOUT", "LEASE_FAIL", "LEASE_REQUEUE")
    due: dict[str, list[str]] = {}
    for name in names:
        due[name] = [r[0] for r in (yield Sql(sql.REAPS[name][0], {"now": now}))]
    every = sorted({i for ids in due.values() for i in ids})
    if every:
        yield from lock_runs_of(every)
        in_list, params = sql.expand_in("id", every)
        yield Sql(sql.LOCK_IDS.format(ids=in_list), params, lock_only=True)
    ended: dict[str, list[Prediction]] = {}
    backoff = {"now": now, "backoff_s": backoff_s}
    for name in names:
        ended[name] = []
        if due[name]:
            in_list, params = sql.expand_in("id", due[name])
            change = sql.REAPS[name][1].format(ids=in_list)
            ended[name] = as_rows((yield Sql(change, params | backoff)))
    requeued = ended.pop("LEASE_REQUEUE")
    rows = [row for sweep in ended.values() for row in sweep]
    runs = [row.id for row in rows if row.kind == Kind.PIPELINE]
    told = yield from advance_runs(runs, rows, now=now)
    result = ReapResult(
        requeued=[r.id for r in requeued],
        failed=[
            r.id for r in ended["RUN_TIMEOUT"] + ended["CALLBACK_TIMEOUT"] + ended["LEASE_FAIL"]
        ],
        expired=[r.id for r in ended["TTL"] + ended["UPLOAD"]],
    )
    return result, told


def recover_orphans(now: float, backoff_s: float = RETRY_BACKOFF_S) -> Op[tuple[list[str], Told]]:
    """After this exclusive store's own crash, every ``running`` row is an orphan.
    The crash may have been the prediction's doing (an input that kills the server),
    so its attempt counts: spent attempts end it as ``attempts_exhausted``."""
    rows = as_rows((yield Sql(sql.RECOVER_ORPHANS, {"now": now, "backoff_s": backoff_s})))
    ended = [row for row in rows if row.status.terminal]
    told = yield from advance_runs([], ended, now=now)
    return [row.id for row in rows], told


# -- the outbox ---------------------------------------------------------------------


def claim_deliveries(params: dict[str, Any]) -> Op[list[OutboxRow]]:
    yield Sql(sql.REQUEUE_SENDING, params)
    rows = [outbox_row_of(r) for r in (yield Sql(sql.CLAIM_DELIVERIES, params))]
    if rows:  # an event written after its receiver said 410 Gone is stopped, not sent
        in_list, ids = sql.expand_in("id", sorted(r.id for r in rows))
        gone = {r[0] for r in (yield Sql(sql.AFTER_GONE.format(ids=in_list), ids))}
        if gone:
            stop_list, stop_ids = sql.expand_in("id", sorted(gone))
            yield Sql(sql.STOP_CLAIMED.format(ids=stop_list), stop_ids | {"now": params["now"]})
            rows = [r for r in rows if r.id not in gone]
    return sorted(rows, key=lambda r: (r.next_at, r.id))


def finish_deliveries(results: Sequence[DeliveryResult]) -> Op[None]:
    for result in sorted(results, key=lambda r: r.id):
        params = delivery_params(result)
        held = yield Sql(sql.FINISH_DELIVERY, params)
        if not held:
            continue  # lost the lease meanwhile: another worker owns the row now
        prediction_id, subscription = held[0]
        yield Sql(sql.INSERT_ATTEMPT, params | {"prediction_id": prediction_id})
        if result.status == DeliveryStatus.STOPPED:
            stop = {"prediction_id": prediction_id, "subscription": subscription, "at": result.at}
            yield Sql(sql.STOP_SUBSCRIPTION, stop)


def deliveries(prediction_id: str) -> Op[tuple[list[OutboxRow], list[DeliveryAttempt]]]:
    params = {"id": prediction_id}
    rows = [outbox_row_of(r) for r in (yield Sql(sql.OUTBOX_OF, params))]
    attempts = [attempt_row(r) for r in (yield Sql(sql.ATTEMPTS_OF, params))]
    return rows, attempts


def delivery_counts(prediction_id: str) -> Op[list[tuple[str, int, int]]]:
    """The prediction's outbox rows as ``(status, attempts, rows)`` groups."""
    found = yield Sql(sql.DELIVERY_COUNTS, {"id": prediction_id})
    return [(str(status), int(attempts), int(rows)) for status, attempts, rows in found]


def deliveries_open() -> Op[bool]:
    """Whether any outbox row is pending or being sent (anyone's)."""
    return bool((yield Sql(sql.OUTBOX_OPEN, {})))


def outbox_row(outbox_id: str) -> Op[OutboxRow | None]:
    rows = yield Sql(sql.OUTBOX_ROW, {"id": outbox_id})
    return outbox_row_of(rows[0]) if rows else None


def redeliver(outbox_id: str, now: float) -> Op[OutboxRow | None]:
    """Send the event again now (its event id unchanged); None when it is being sent
    or was delivered."""
    rows = yield Sql(sql.REDELIVER, {"id": outbox_id, "now": now})
    return outbox_row_of(rows[0]) if rows else None


def webhook_secrets(now: float, overlap_s: float, tenant: str) -> Op[list[str]]:
    return secrets_in_use((yield Sql(sql.WEBHOOK_SECRETS, {"tenant": tenant})), now, overlap_s)


def rotate_webhook_secret(secret: str, now: float, tenant: str) -> Op[None]:
    yield Sql(sql.LOCK_SECRETS, lock_only=True)
    yield Sql(sql.RETIRE_SECRETS, {"now": now, "tenant": tenant})
    yield Sql(sql.INSERT_SECRET, {"secret": secret, "now": now, "tenant": tenant})


__all__ = [
    "Op",
    "Sql",
    "Told",
    "answer_callback",
    "cancel",
    "claim",
    "complete",
    "create",
    "create_run",
    "handing_off",
    "heartbeat",
    "heartbeat_callback",
    "mark_input_ready",
    "purge",
    "reap",
    "recover_orphans",
    "redrive",
    "release",
]
