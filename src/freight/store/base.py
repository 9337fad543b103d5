"""The job store seam: narrow, domain-level protocols over SQL.

The ``predictions`` table *is* the queue. Every method is one transaction.
Every transaction is written once, in ``ops.py``, and driven by two stores:
:class:`freight.store.sqlite.SqliteStore` (one writer connection on the event
loop, group commit; :class:`freight.store.memory.MemoryStore` is one in a
temporary directory) and :class:`freight.store.postgres.PostgresStore`
(psycopg 3, ``FOR UPDATE SKIP LOCKED``). All raise :class:`~freight.errors.StoreUnavailableError`
when the database cannot be reached, never a driver exception.

The protocol is split by role so that each consumer names only what it uses,
and so that features that add methods (pipelines, batch jobs) widen one role
instead of every fake and every backend at once:

- :class:`Lifecycle`: connect, disconnect, health, cross-process wake-ups
  (the process entry points);
- :class:`Queue`: the claim/lease cycle (workers claim and finish, the agent
  renews, reaps and recovers);
- :class:`Records`: the prediction records as the API sees them, plus
  retention (the service, the models listing, the agent's purge);
- :class:`Outbox`: notification deliveries and webhook secrets (the agent's
  deliverer, the deliveries route, ``freight webhooks secret``);
- :class:`Store`: all of them, what a backend implements.

Pipelines: a run and its steps are rows of the same table. Every method that
ends a row of a run (complete, release, reap, cancel) or starts one
(create_run, mark_input_ready) advances that run in the same transaction
(``store/advancing.py``): the steps it unblocks are queued, the run's outcome
written, before the commit. SQLite reports what a transaction queued and
finished through the callbacks given to :meth:`Lifecycle.listen`; PostgreSQL's
triggers NOTIFY.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from freight.access import DEFAULT_TENANT
from freight.deliveries import DeliveryAttempt, DeliveryResult, OutboxRow
from freight.errors import ConflictError
from freight.events import Hands
from freight.pipelines.callback import Answer, Claim
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
from freight.store._op import Op, T


class Lifecycle(Protocol):
    """Connection and notifications: what only the process hosting the store calls."""

    async def open(self) -> None:
        """Connect (and check the schema is at the current migration)."""

    async def close(self) -> None: ...

    async def listen(
        self,
        on_work: Callable[[str], None],
        on_done: Callable[[str], None],
        on_outbox: Callable[[], None] | None = None,
    ) -> None:
        """Until cancelled, call ``on_work(target)`` when another process queues work,
        ``on_done(id)`` when a prediction becomes terminal and ``on_outbox()`` when an
        outbox row was written (PostgreSQL LISTEN/NOTIFY). Returns at once where no
        other process writes (SQLite, memory), keeping on_work/on_done for the
        store's own pipeline advancement."""

    async def ping(self) -> None:
        """Raise StoreUnavailableError when the database does not answer."""

    def sibling(self) -> Store:
        """Another handle on the same database, not yet opened, for another thread's
        event loop (the deliverer's): its own connections, nothing shared with this one."""

    def hand_off_to(self, hands: Hands | None) -> None:
        """This process's idle replicas (the agent's): a transaction that queues rows of
        a target with one idle claims them for it (``ops.handing_off``)."""

    async def execute(self, make: Callable[[], Op[T]], *, write: bool = True) -> T:
        """Run one transaction of ``store/tenancy.py`` (keys, audit log, usage ledger);
        ``make`` builds it afresh for each try."""


class Queue(Protocol):
    """The claim/lease cycle of queued predictions, fenced by ``worker_id`` + ``attempts``."""

    #: True when this process is the only writer (SQLite): on start-up every
    #: ``running`` row is an orphan of a previous crash and can be requeued at once.
    exclusive: bool

    async def claim(
        self,
        target: str,
        limit: int,
        *,
        worker_id: str,
        lease_s: float,
        now: float,
        caps: Mapping[str, int] | None = None,
    ) -> list[Prediction]:
        """Atomically move up to ``limit`` queued predictions of ``target`` to ``running``,
        stamping ``started_at``, ``worker_id``, ``lease_expires_at = now + lease_s`` and
        incrementing ``attempts``. Shared equally between the tenants with rows queued,
        in turn from one claim to the next; each tenant's by priority desc, then oldest
        first (``ops.claim``), passing over rows not before their back-off and tenants at
        their in-flight bound (``caps``: :func:`freight.bounds.caps`). Returned by
        priority desc, then oldest first."""

    async def complete(self, completions: Sequence[Completion]) -> list[str]:
        """Record outcomes; a completion applies only when the row is still ``running``
        with the same ``worker_id`` and ``attempts``. Returns the ids that applied."""

    async def release(self, releases: Sequence[Release], *, now: float) -> dict[str, Status]:
        """Requeue claimed predictions (or fail them with the release's error code once
        ``attempts >= max_attempts`` and ``count_attempt``). ``count_attempt=False``
        gives the attempt back. Fenced like :meth:`complete`. Returns new status per id."""

    async def heartbeat(
        self,
        worker_id: str,
        ids: Sequence[str],
        *,
        lease_s: float,
        now: float,
    ) -> list[str]:
        """Extend the leases of ``ids`` held by ``worker_id``; return the ids this worker
        no longer holds (canceled, requeued by someone else, finished)."""

    async def save_progress(
        self, prediction_id: str, *, worker_id: str, attempt: int, definition: str
    ) -> bool:
        """Replace the ``definition`` of a row this worker holds (a batch job's driver
        recording how far it got, so that whoever resumes the job starts there; and
        once more after a cancel, the outputs it finished). Fenced like
        :meth:`complete` (a canceled row still names its last holder); False when
        the row is no longer held."""

    async def reap(self, *, now: float, backoff_s: float = RETRY_BACKOFF_S) -> ReapResult:
        """One sweep: running with an expired lease -> queued (or failed
        ``attempts_exhausted`` when attempts are spent); queued past ``expires_at`` ->
        expired; awaiting_input past ``upload_expires_at`` -> expired. A requeued row is
        not claimed before ``backoff_s`` times its attempts have passed."""

    async def recover_orphans(self, *, now: float, backoff_s: float = RETRY_BACKOFF_S) -> list[str]:
        """Exclusive stores only, after this process's own crash: requeue every
        ``running`` row, counting the attempt (the crash may have been the input's
        doing); a row whose attempts are spent fails ``attempts_exhausted``."""


class Records(Protocol):
    """Predictions as records: created, read, listed, fed their input, canceled, purged."""

    async def create(self, prediction: Prediction) -> tuple[Prediction, bool]:
        """Insert a prediction. With an ``idempotency_key`` that exists already,
        return ``(existing, False)`` when ``request_hash`` matches, else raise
        ConflictError(code="idempotency_conflict"). Returns ``(row, True)`` when inserted."""

    async def create_many(
        self, rows: Sequence[Prediction]
    ) -> list[tuple[Prediction, bool] | ConflictError]:
        """Insert many predictions (never runs) in one transaction, each as
        :meth:`create` would: ``(row, inserted)``, or the ConflictError of a key
        reused with a different request, in the rows' order."""

    async def create_run(
        self, run: Prediction, steps: Sequence[Prediction]
    ) -> tuple[Prediction, bool]:
        """Insert a pipeline run and its (pending) step rows, and advance it, in one
        transaction: its first steps are queued (or skipped) by the time this returns.
        Idempotency as :meth:`create`; a replay inserts no steps."""

    async def steps(self, run_id: str, *, heads: bool = False) -> list[Prediction]:
        """The rows of a run (its steps, for_each elements, nested runs), oldest first;
        with ``heads``, its steps without their for_each elements (``ix_predictions_heads``)."""

    async def get(self, prediction_id: str) -> Prediction | None: ...

    async def get_many(self, ids: Sequence[str]) -> list[Prediction]:
        """The rows of ``ids`` that exist, in no particular order: one read for a batch
        (the deliverer renders a claimed batch of events with it)."""

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
        """``awaiting_input`` -> ``queued`` once its upload landed (``input_json``: the
        uploaded JSON itself, kept inline where it is small enough). Raises NotFoundError,
        or ConflictError(code="invalid_state") when the prediction is in another status."""

    async def cancel(self, prediction_id: str, *, now: float) -> tuple[Prediction, Status]:
        """Cancel a non-terminal prediction (error_code ``canceled``). Returns the row
        after the change and the status it had before. A terminal prediction is
        returned unchanged (previous status == its status). NotFoundError if unknown."""

    async def redrive(self, run_id: str, *, now: float) -> Prediction:
        """Restart a failed or canceled pipeline run where it stopped, in one transaction:
        its succeeded steps kept, the others run again (``pipelines/redrive.py``), the
        ready ones queued by the time this returns; ``redrives`` counted. Raises
        NotFoundError, or ConflictError(code="invalid_state") for a row that is not such
        a run (running, succeeded, a step of another run, not a run)."""

    async def answer_callback(self, claim: Claim, answer: Answer, *, now: float) -> Prediction:
        """End a waiting callback step as ``answer`` says, once, and advance its run
        (``ops.answer_callback``): the row after it. ConflictError ``callback_closed`` /
        ``callback_superseded``, NotFoundError ``callback_not_found``."""

    async def heartbeat_callback(
        self, claim: Claim, *, heartbeat_s: float | None, now: float
    ) -> Prediction:
        """Move a waiting callback step's deadline on (``ops.heartbeat_callback``)."""

    async def stats(self) -> dict[str, TargetStats]:
        """Queued / running / awaiting_input counts per target."""

    async def purge(self, *, before: float, limit: int) -> list[Prediction]:
        """Retention: delete up to ``limit`` terminal predictions whose ``finished_at``
        is before ``before``, oldest first, and return the deleted rows (their object
        keys are the caller's to delete). Concurrent purgers skip each other's rows."""

    # last: a method named ``list`` shadows the builtin in annotations below it
    async def list(
        self,
        *,
        target: str | None = None,
        status: Status | None = None,
        kind: Kind | None = None,
        after_id: str | None = None,
        limit: int = 50,
        tenant: str | None = None,
        targets: Sequence[str] | None = None,
    ) -> list[Prediction]:
        """Newest first; ``after_id`` is the last id of the previous page (ids < after_id);
        ``tenant``: its rows only; ``targets``: rows of these targets only.
        Without ``kind``: top-level predictions and runs (no steps, chunks or batch jobs);
        with it, every row of that kind (batch jobs: ``ix_predictions_jobs``)."""


class Outbox(Protocol):
    """Notifications: the outbox rows the database writes with each status change of a
    prediction that has subscriptions (``notify``), their delivery, the signing keys."""

    async def claim_deliveries(
        self, limit: int, *, worker_id: str, lease_s: float, now: float
    ) -> list[OutboxRow]:
        """Lease up to ``limit`` due rows (``pending``, ``next_at <= now``), each the
        oldest unfinished event of its prediction and subscription; first, rows whose
        sender's lease expired are due again. Concurrent claimers never get one row."""

    async def finish_deliveries(self, results: Sequence[DeliveryResult]) -> None:
        """Record attempts (fenced by worker and attempt, like completions): delivered,
        due again at ``next_at``, dead, or stopped — which also stops the later events
        of that prediction for that subscription."""

    async def deliveries(self, prediction_id: str) -> tuple[list[OutboxRow], list[DeliveryAttempt]]:
        """A prediction's outbox rows and every attempt made on them."""

    async def delivery_counts(self, prediction_id: str) -> list[tuple[str, int, int]]:
        """A prediction's outbox rows as ``(status, attempts, rows)`` groups (what every
        view of a prediction with subscriptions summarizes: an index read)."""

    async def deliveries_open(self) -> bool:
        """Whether any outbox row is pending or being sent, anyone's (a node starts its
        deliverer when there is something to deliver)."""

    async def webhook_secrets(
        self, *, now: float, overlap_s: float, tenant: str = DEFAULT_TENANT
    ) -> list[str]:
        """A tenant's webhook signing secrets in use, newest first (retired ones for
        ``overlap_s`` after their retirement)."""

    async def rotate_webhook_secret(
        self, secret: str, *, now: float, tenant: str = DEFAULT_TENANT
    ) -> None:
        """Make ``secret`` the tenant's current one; its previous ones start their
        overlap."""


class Store(Lifecycle, Queue, Records, Outbox, Protocol):
    """The whole job store: what every backend implements and a server opens."""


__all__ = ["Lifecycle", "Outbox", "Queue", "Records", "Store"]
