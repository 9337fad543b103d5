"""Domain types of notification delivery: outbox rows, attempts, outcomes.

An :class:`OutboxRow` is one event for one subscription of a prediction, written
by the database in the transaction of the status change (migration 0006). The
agents claim due rows (oldest event of each prediction and subscription first,
so a receiver gets a prediction's events in order), send them, and record each
attempt; a row ends ``delivered``, ``dead`` (retries exhausted) or ``stopped``
(the receiver answered 410 Gone).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"  # due at next_at
    SENDING = "sending"  # claimed by a worker, leased
    DELIVERED = "delivered"
    DEAD = "dead"  # retried for max_age and never delivered
    STOPPED = "stopped"  # the receiver said 410 Gone

    @property
    def final(self) -> bool:
        return self in (DeliveryStatus.DELIVERED, DeliveryStatus.DEAD, DeliveryStatus.STOPPED)


@dataclass(slots=True)
class OutboxRow:
    """One event for one subscription (columns of ``outbox``, in order)."""

    id: str  # <event id>#<subscription>
    event_id: str  # <prediction>:<type>:<attempt>: stable across retries
    subscription: int  # index into the prediction's ``notify`` list
    prediction_id: str
    event_type: str  # started | completed
    seq: int
    status: DeliveryStatus
    attempts: int
    created_at: float
    next_at: float
    lease_expires_at: float | None = None
    worker_id: str | None = None
    last_code: int | None = None
    last_error: str | None = None
    finished_at: float | None = None


@dataclass(slots=True)
class DeliveryAttempt:
    """One try of one outbox row (columns of ``delivery_attempts``, in order)."""

    outbox_id: str
    attempt: int
    prediction_id: str
    at: float
    status_code: int | None = None
    error: str | None = None
    next_at: float | None = None  # when it is tried again; None: it ended
    latency_ms: float | None = None  # how long the sink took to answer (or to fail)
    response: str | None = None  # the first KB of a webhook receiver's answer


@dataclass(slots=True)
class DeliveryResult:
    """What a worker reports for a row it claimed (fenced by worker and attempt)."""

    id: str
    worker_id: str
    attempt: int
    at: float
    status: DeliveryStatus  # DELIVERED, PENDING (retry at next_at), DEAD or STOPPED
    status_code: int | None = None
    error: str | None = None
    next_at: float | None = None
    latency_ms: float | None = None
    response: str | None = None


class NotificationState(enum.StrEnum):
    """How a prediction's notifications went, as one word (worst first)."""

    DEAD = "dead"  # an event was never delivered: retries exhausted
    FAILING = "failing"  # an event is still retried after a failed attempt
    PENDING = "pending"  # an event is on its way, none failed; or the prediction goes on
    STOPPED = "stopped"  # a receiver said 410 Gone: it gets no more events
    DELIVERED = "delivered"  # the prediction ended and every event was delivered


@dataclass(frozen=True, slots=True)
class NotificationSummary:
    """A prediction's outbox rows counted by how each went; the counts partition
    ``deliveries``. ``failing``: not yet delivered (``pending`` or ``sending``) after
    at least one failed attempt (a redelivered row counts until it is delivered);
    ``pending``: not yet delivered, no attempt failed."""

    state: NotificationState
    deliveries: int
    delivered: int
    pending: int
    failing: int
    dead: int
    stopped: int


def summarize(counts: Iterable[tuple[str, int, int]], *, ended: bool) -> NotificationSummary:
    """The summary of a prediction's outbox rows, given as ``(status, attempts, rows)``.

    The state is the worst of its rows: ``dead``, then ``failing``, then ``pending``,
    then ``stopped``; ``delivered`` only once the prediction has ``ended`` (before, its
    later events are still to come, so it is ``pending``). A prediction that ended
    owing no event at all is ``delivered`` (vacuously)."""
    by = dict.fromkeys(("delivered", "pending", "failing", "dead", "stopped"), 0)
    for status, attempts, rows in counts:
        unfinished = status in (DeliveryStatus.PENDING, DeliveryStatus.SENDING)
        # a row being sent has its current attempt counted: earlier ones failed
        tried = attempts - (1 if status == DeliveryStatus.SENDING else 0)
        key = ("failing" if tried > 0 else "pending") if unfinished else str(status)
        by[key] += rows
    order = (
        (NotificationState.DEAD, by["dead"]),
        (NotificationState.FAILING, by["failing"]),
        (NotificationState.PENDING, by["pending"] + (0 if ended else 1)),
        (NotificationState.STOPPED, by["stopped"]),
    )
    state = next((s for s, n in order if n), NotificationState.DELIVERED)
    return NotificationSummary(state=state, deliveries=sum(by.values()), **by)


__all__ = [
    "DeliveryAttempt",
    "DeliveryResult",
    "DeliveryStatus",
    "NotificationState",
    "NotificationSummary",
    "OutboxRow",
    "summarize",
]
