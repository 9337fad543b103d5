"""The job store in memory: dicts, for tests of everything above the store.

Why it exists: the service and agent logic (rollbacks, races, retention) is
tested without sockets or files against this fake, and the fake is kept honest
by running the *same* contract suite as SQLite and PostgreSQL
(``tests/contract/test_store.py``), the way procrastinate tests against its
in-memory connector.

Why it is safe without locks: every method does all its reads and writes in
one synchronous stretch, with no ``await`` in between, so on one event loop
each call is atomic, which is what a transaction gives the SQL backends. No
threads touch it. Rows are copied on the way in and out: a caller mutating a
:class:`~freight.prediction.Prediction` it got back cannot change the "database".

Like SQLite it is ``exclusive`` (this process is the only writer) and has
nothing to listen to. A closed store raises StoreUnavailableError, which makes
an outage one ``await store.close()`` away in a unit test. URL: ``memory://``
(a fresh, empty store per :func:`~freight.store.open_store` call).
"""

from __future__ import annotations

import builtins
import dataclasses
from collections.abc import Callable, Iterable, Sequence

from freight.deliveries import OutboxRow
from freight.errors import ConflictError, NotFoundError
from freight.ids import new_id
from freight.pipelines.runs import Changes, advance_all
from freight.prediction import (
    Completion,
    ErrorCode,
    Prediction,
    ReapResult,
    Release,
    Status,
    TargetStats,
)
from freight.store._memory_outbox import MemoryOutbox, outboxed
from freight.store.rows import cancel_targets, check_idempotent, not_awaiting_input

_Rows = builtins.list[Prediction]
_Outbox = builtins.list[OutboxRow]
#: the kinds of rows held under a lease by a worker (model predictions, batch-job
#: chunks, batch jobs held by their driver); pipeline runs use it as their deadline
_LEASED = frozenset({"model", "chunk", "batch"})
_COUNTED = (Status.QUEUED, Status.RUNNING, Status.AWAITING_INPUT)


def _copy(prediction: Prediction) -> Prediction:
    """A detached copy, its status as :class:`Status` (as the SQL row mapping gives)."""
    return dataclasses.replace(prediction, status=Status(prediction.status))


def _expired(at: float | None, now: float) -> bool:
    """``at < now`` with SQL's NULL semantics: no deadline never expires."""
    return at is not None and at < now


class MemoryStore(MemoryOutbox):
    """The :class:`~freight.store.base.Store` in a dict; semantics of ``sql.py``."""

    exclusive = True

    def __init__(self) -> None:
        self._rows: dict[str, Prediction] = {}
        self._by_key: dict[str, str] = {}  # idempotency_key -> id: the unique index
        self._open = False
        self._on_work: Callable[[str], None] = _ignore
        self._on_done: Callable[[str], None] = _ignore
        self._init_outbox()

    def __repr__(self) -> str:
        return f"MemoryStore({len(self._rows)} predictions)"

    # -- lifecycle -----------------------------------------------------------

    async def open(self) -> None:
        """Nothing to connect to and no schema to check; rows survive close/open."""
        self._open = True

    async def close(self) -> None:
        self._open = False

    async def listen(
        self,
        on_work: Callable[[str], None],
        on_done: Callable[[str], None],
        on_outbox: Callable[[], None] | None = None,
    ) -> None:
        """No other process writes here; keeps the callbacks for what the store does
        itself (steps a pipeline run's advancement queued or finished), like SQLite."""
        self._on_work, self._on_done = on_work, on_done

    def _advance(self, run_ids: Iterable[str | None], now: float) -> None:
        """Advance the pipeline runs these rows belong to (all in this one stretch)."""
        wanted = [r for r in run_ids if r is not None]
        if not wanted:
            return

        def load(run_id: str) -> tuple[Prediction | None, _Rows]:
            run = self._rows.get(run_id)
            rows = sorted((p for p in self._rows.values() if p.run_id == run_id), key=_by_id)
            return (None if run is None else _copy(run)), [_copy(p) for p in rows]

        def save(changes: Changes) -> None:
            for row in [*changes.updated.values(), *changes.inserted]:
                self._rows[row.id] = _copy(row)

        changes = advance_all(wanted, load, save, now=now, new_id=new_id)
        for target in changes.queued:
            self._on_work(target)
        for prediction_id in changes.finished:
            self._on_done(prediction_id)

    async def ping(self) -> None:
        self._check()

    def _where(self, status: Status, target: str | None = None) -> _Rows:
        """The stored rows (not copies) in ``status``, oldest id first."""
        rows = (
            p
            for p in self._rows.values()
            if p.status is status and (target is None or p.target == target)
        )
        return sorted(rows, key=lambda p: p.id)

    def _held(self, prediction_id: str, worker_id: str, attempt: int) -> Prediction | None:
        """The row when it is running under this worker and attempt (the fence)."""
        row = self._rows.get(prediction_id)
        if row is None or row.status is not Status.RUNNING:
            return None
        if row.worker_id != worker_id or row.attempts != attempt:
            return None
        return row

    # -- records -------------------------------------------------------------

    @outboxed
    async def create(self, prediction: Prediction) -> tuple[Prediction, bool]:
        self._check()
        key = prediction.idempotency_key
        if key is not None and key in self._by_key:
            existing = self._rows[self._by_key[key]]
            return _copy(check_idempotent(existing, prediction)), False
        if prediction.id in self._rows:
            raise ConflictError("a prediction with this id exists", id=prediction.id)
        row = _copy(prediction)
        self._rows[row.id] = row
        if key is not None:
            self._by_key[key] = row.id
        return _copy(row), True

    @outboxed
    async def create_run(
        self, run: Prediction, steps: Sequence[Prediction]
    ) -> tuple[Prediction, bool]:
        created, inserted = await self.create(run)
        if not inserted:
            return created, False
        for step in steps:
            self._rows[step.id] = _copy(step)
        self._advance([run.id], run.created_at)
        return _copy(self._rows[run.id]), True

    async def steps(self, run_id: str) -> _Rows:
        self._check()
        rows = sorted((p for p in self._rows.values() if p.run_id == run_id), key=_by_id)
        return [_copy(p) for p in rows]

    async def get(self, prediction_id: str) -> Prediction | None:
        self._check()
        row = self._rows.get(prediction_id)
        return None if row is None else _copy(row)

    @outboxed
    async def mark_input_ready(
        self,
        prediction_id: str,
        *,
        input_key: str,
        input_content_type: str,
        input_bytes: int,
        now: float,
        input_json: str | None = None,
    ) -> Prediction:
        self._check()
        row = self._rows.get(prediction_id)
        if row is None or row.status is not Status.AWAITING_INPUT:
            raise not_awaiting_input(prediction_id, None if row is None else _copy(row))
        row.status, row.queued_at = Status.QUEUED, now
        row.input_key, row.input_content_type = input_key, input_content_type
        row.input_bytes, row.input_json = input_bytes, input_json
        if row.kind == "pipeline":  # a run got its input: it starts
            row.status, row.started_at = Status.RUNNING, now
            row.lease_expires_at = now + row.timeout_s
            self._advance([row.id], now)
        return _copy(self._rows[prediction_id])

    @outboxed
    async def cancel(self, prediction_id: str, *, now: float) -> tuple[Prediction, Status]:
        self._check()
        row = self._rows.get(prediction_id)
        if row is None:
            raise NotFoundError("prediction not found", id=prediction_id)
        previous = row.status
        if not previous.terminal:
            row.status, row.finished_at, row.lease_expires_at = Status.CANCELED, now, None
            row.error_code, row.error_message = ErrorCode.CANCELED.value, "canceled on request"
            canceled = _copy(row)
            self._advance(cancel_targets(canceled), now)
            return canceled, previous
        return _copy(row), previous

    async def stats(self) -> dict[str, TargetStats]:
        """Counts of live rows; a target appears only once it has one (like GROUP BY)."""
        self._check()
        result: dict[str, TargetStats] = {}
        for row in self._rows.values():
            if row.status in _COUNTED and (row.status is not Status.RUNNING or row.kind in _LEASED):
                counts = result.setdefault(row.target, TargetStats())
                name = row.status.value
                setattr(counts, name, getattr(counts, name) + 1)
                if row.status is Status.QUEUED and (
                    counts.oldest_queued_id is None or row.id < counts.oldest_queued_id
                ):
                    counts.oldest_queued_id = row.id
        return result

    async def purge(self, *, before: float, limit: int) -> _Rows:
        self._check()
        due = [
            p for p in self._rows.values() if p.status.terminal and _expired(p.finished_at, before)
        ]
        due.sort(key=lambda p: (p.finished_at or 0.0, p.id))
        purged = due[:limit]
        self._forget_outbox({row.id for row in purged})
        for row in purged:
            del self._rows[row.id]
            if row.idempotency_key is not None:
                self._by_key.pop(row.idempotency_key, None)
        return purged  # deleted: nothing else holds them, no copy needed

    # -- queue ---------------------------------------------------------------

    @outboxed
    async def claim(
        self,
        target: str,
        limit: int,
        *,
        worker_id: str,
        lease_s: float,
        now: float,
    ) -> _Rows:
        self._check()
        queued = sorted(self._where(Status.QUEUED, target), key=lambda p: (-p.priority, p.id))
        claimed = queued[: max(limit, 0)]
        for row in claimed:
            row.status, row.started_at, row.attempts = Status.RUNNING, now, row.attempts + 1
            row.worker_id, row.lease_expires_at = worker_id, now + lease_s
        return [_copy(p) for p in claimed]

    @outboxed
    async def complete(self, completions: Sequence[Completion]) -> builtins.list[str]:
        self._check()
        applied: builtins.list[str] = []
        for c in completions:
            row = self._held(c.id, c.worker_id, c.attempt)
            if row is None:
                continue
            row.status, row.finished_at = Status(c.status), c.finished_at
            row.lease_expires_at = None
            row.output_json, row.output_key = c.output_json, c.output_key
            row.output_content_type, row.output_bytes = c.output_content_type, c.output_bytes
            row.error_code = None if c.error_code is None else str(c.error_code)
            row.error_message, row.error_detail = c.error_message, c.error_detail
            row.batch_size = c.batch_size
            applied.append(c.id)
        finished_at = max((c.finished_at for c in completions), default=0.0)
        self._advance([self._rows[i].run_id for i in applied], finished_at)
        return applied

    @outboxed
    async def release(self, releases: Sequence[Release], *, now: float) -> dict[str, Status]:
        self._check()
        result: dict[str, Status] = {}
        for r in releases:
            row = self._held(r.id, r.worker_id, r.attempt)
            if row is None:
                continue
            if r.count_attempt and row.attempts >= row.max_attempts:
                row.status, row.finished_at = Status.FAILED, now
                row.error_code, row.error_message = str(r.error_code), r.error_message
            else:
                row.status, row.finished_at = Status.QUEUED, None
            if not r.count_attempt:
                row.attempts -= 1
            row.worker_id, row.lease_expires_at = None, None
            result[r.id] = row.status
        self._advance([self._rows[i].run_id for i, st in result.items() if st.terminal], now)
        return result

    async def heartbeat(
        self,
        worker_id: str,
        ids: Sequence[str],
        *,
        lease_s: float,
        now: float,
    ) -> builtins.list[str]:
        self._check()
        lost: builtins.list[str] = []
        for prediction_id in ids:
            row = self._rows.get(prediction_id)
            if row is not None and row.status is Status.RUNNING and row.worker_id == worker_id:
                row.lease_expires_at = now + lease_s
            else:
                lost.append(prediction_id)
        return lost

    async def save_progress(
        self, prediction_id: str, *, worker_id: str, attempt: int, definition: str
    ) -> bool:
        self._check()
        row = self._rows.get(prediction_id)
        if row is None or row.status not in (Status.RUNNING, Status.CANCELED):
            return False
        if row.worker_id != worker_id or row.attempts != attempt:
            return False
        row.definition = definition
        return True

    @outboxed
    async def reap(self, *, now: float) -> ReapResult:
        """The sweeps of ``sql.py`` in its order: TTL, uploads, leases (fail, requeue)."""
        self._check()
        result = ReapResult()
        for row in self._where(Status.QUEUED):
            if _expired(row.expires_at, now):
                self._expire(row, now, "not started before its expiry time")
                result.expired.append(row.id)
        for row in self._where(Status.AWAITING_INPUT):
            if _expired(row.upload_expires_at, now):
                self._expire(row, now, "input not uploaded in time")
                result.expired.append(row.id)
        runs: _Rows = []
        for row in self._where(Status.RUNNING):
            if row.kind == "pipeline" and _expired(row.lease_expires_at, now):
                row.status, row.finished_at, row.lease_expires_at = Status.FAILED, now, None
                row.error_code = ErrorCode.TIMEOUT.value
                row.error_message = "the pipeline did not finish within its timeout_s"
                result.failed.append(row.id)
                runs.append(row)
        for row in self._where(Status.RUNNING):
            if row.kind not in _LEASED or not _expired(row.lease_expires_at, now):
                continue
            if row.attempts >= row.max_attempts:
                row.status, row.finished_at, row.lease_expires_at = Status.FAILED, now, None
                row.error_code = ErrorCode.ATTEMPTS_EXHAUSTED.value
                row.error_message = "lease expired and no attempts are left"
                result.failed.append(row.id)
            else:
                row.status, row.worker_id, row.lease_expires_at = Status.QUEUED, None, None
                result.requeued.append(row.id)
        ended = [self._rows[i] for i in [*result.expired, *result.failed]]
        self._advance([r.run_id for r in ended] + [r.id for r in runs], now)
        return result

    @staticmethod
    def _expire(row: Prediction, now: float, message: str) -> None:
        row.status, row.finished_at = Status.EXPIRED, now
        row.error_code, row.error_message = ErrorCode.EXPIRED.value, message

    @outboxed
    async def recover_orphans(self, *, now: float) -> builtins.list[str]:
        self._check()
        recovered: builtins.list[str] = []
        for row in self._where(Status.RUNNING):
            if row.kind not in _LEASED:
                continue  # runs and for_each steps are not held by any worker
            if row.attempts > 0 and row.lease_expires_at is not None and row.lease_expires_at > now:
                row.attempts -= 1  # a live lease was cut by our crash: not its fault
            row.status, row.worker_id, row.lease_expires_at = Status.QUEUED, None, None
            recovered.append(row.id)
        return recovered

    # Last in the class on purpose: inside the class body this name shadows the
    # builtin ``list`` (hence ``builtins.list`` in the annotations above).
    async def list(
        self,
        *,
        target: str | None = None,
        status: Status | None = None,
        after_id: str | None = None,
        limit: int = 50,
    ) -> _Rows:
        self._check()
        rows: Iterable[Prediction] = self._rows.values()
        if target is not None:
            rows = (p for p in rows if p.target == target)
        if status is not None:
            wanted = Status(status)
            rows = (p for p in rows if p.status is wanted)
        if after_id is not None:
            rows = (p for p in rows if p.id < after_id)
        newest = sorted(rows, key=lambda p: p.id, reverse=True)
        return [_copy(p) for p in newest[: max(limit, 0)]]


def _by_id(p: Prediction) -> str:
    return p.id


def _ignore(_: str) -> None:
    """No one listens yet."""


__all__ = ["MemoryStore"]
