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


__all__ = ["DeliveryAttempt", "DeliveryResult", "DeliveryStatus", "OutboxRow"]
