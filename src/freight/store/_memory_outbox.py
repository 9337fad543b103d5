"""The in-memory store's outbox: what the SQL backends' trigger and outbox
statements do (migration 0006, ``sql.py``), in dicts, for :class:`MemoryStore`.

A mixin apart from ``memory.py`` so each stays readable; it keeps the outbox
rows, the attempts and the webhook secrets, and :func:`outboxed` wraps the
store's mutating methods so every status change writes its rows, as the trigger
does in the same transaction.
"""

from __future__ import annotations

import builtins
import dataclasses
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast

import orjson

from freight.deliveries import DeliveryAttempt, DeliveryResult, DeliveryStatus, OutboxRow
from freight.errors import StoreUnavailableError
from freight.prediction import Prediction, Status
from freight.store.rows import secrets_in_use

_Outbox = builtins.list[OutboxRow]
_TERMINAL_EVENT = "completed"
Method = TypeVar("Method", bound=Callable[..., Awaitable[Any]])


def outboxed(method: Method) -> Method:
    """Write the outbox rows of every status change the method makes, as the SQL
    backends' trigger does in the same transaction (migration 0006)."""

    @functools.wraps(method)
    async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        before = {p.id: p.status for p in self._rows.values() if p.notify}
        result = await method(self, *args, **kwargs)
        for row in self._rows.values():
            if row.notify and before.get(row.id) is not row.status:
                self._emit(row)
        return result

    return cast(Method, wrapper)




def _expired(at: float | None, now: float) -> bool:
    return at is not None and at < now


class MemoryOutbox:
    """The outbox half of :class:`~freight.store.memory.MemoryStore`."""

    _rows: dict[str, Prediction]
    _open: bool

    def _init_outbox(self) -> None:
        self._outbox: dict[str, OutboxRow] = {}
        self._attempts: builtins.list[DeliveryAttempt] = []
        self._secrets: builtins.list[tuple[str, float, float | None]] = []

    def _check(self) -> None:
        if not self._open:
            raise StoreUnavailableError("the in-memory store is not open")

    def _forget_outbox(self, gone: set[str]) -> None:
        """Retention: a purged prediction's rows and attempts go with it."""
        self._outbox = {k: v for k, v in self._outbox.items() if v.prediction_id not in gone}
        self._attempts = [a for a in self._attempts if a.prediction_id not in gone]

    # -- outbox --------------------------------------------------------------

    def _emit(self, row: Prediction) -> None:
        """The outbox rows of ``row``'s new status, one per subscription asking."""
        if row.status is Status.RUNNING:
            event = "started"
        elif row.status.terminal:
            event = _TERMINAL_EVENT
        else:
            return
        now = time.time()
        seq = row.attempts * 2 + (1 if row.status.terminal else 0)
        event_id = f"{row.id}:{event}:{row.attempts}"
        for index, subscription in enumerate(orjson.loads(row.notify or "[]")):
            if event not in subscription.get("events", ()):
                continue
            outbox_id = f"{event_id}#{index}"
            self._outbox.setdefault(
                outbox_id,
                OutboxRow(
                    outbox_id, event_id, index, row.id, event, seq,
                    DeliveryStatus.PENDING, 0, now, now,
                ),
            )

    async def claim_deliveries(
        self, limit: int, *, worker_id: str, lease_s: float, now: float
    ) -> _Outbox:
        self._check()
        for row in self._outbox.values():
            if row.status is DeliveryStatus.SENDING and _expired(row.lease_expires_at, now):
                row.status, row.worker_id, row.lease_expires_at = DeliveryStatus.PENDING, None, None
        unfinished = [r for r in self._outbox.values() if not r.status.final]
        due = sorted(
            (
                r
                for r in unfinished
                if r.status is DeliveryStatus.PENDING
                and r.next_at <= now
                and not any(
                    e.prediction_id == r.prediction_id
                    and e.subscription == r.subscription
                    and e.seq < r.seq
                    for e in unfinished
                )
            ),
            key=lambda r: (r.next_at, r.id),
        )[: max(limit, 0)]
        for row in due:
            row.status, row.attempts = DeliveryStatus.SENDING, row.attempts + 1
            row.worker_id, row.lease_expires_at = worker_id, now + lease_s
        return [dataclasses.replace(r) for r in due]

    async def finish_deliveries(self, results: Sequence[DeliveryResult]) -> None:
        self._check()
        for result in results:
            row = self._outbox.get(result.id)
            if row is None or row.status is not DeliveryStatus.SENDING:
                continue
            if row.worker_id != result.worker_id or row.attempts != result.attempt:
                continue
            row.status, row.worker_id, row.lease_expires_at = result.status, None, None
            row.next_at = result.next_at if result.next_at is not None else row.next_at
            row.last_code, row.last_error = result.status_code, result.error
            row.finished_at = result.at if result.status.final else None
            self._attempts.append(
                DeliveryAttempt(
                    row.id, result.attempt, row.prediction_id, result.at,
                    result.status_code, result.error, result.next_at,
                )
            )
            if result.status is DeliveryStatus.STOPPED:
                self._stop(row, result.at)

    def _stop(self, stopped: OutboxRow, at: float) -> None:
        for row in self._outbox.values():
            same = (row.prediction_id, row.subscription) == (
                stopped.prediction_id,
                stopped.subscription,
            )
            if same and row.status is DeliveryStatus.PENDING:
                row.status, row.finished_at = DeliveryStatus.STOPPED, at
                row.last_error = "the receiver answered 410 Gone to an earlier event"

    async def deliveries(
        self, prediction_id: str
    ) -> tuple[_Outbox, builtins.list[DeliveryAttempt]]:
        self._check()
        rows = sorted(
            (r for r in self._outbox.values() if r.prediction_id == prediction_id),
            key=lambda r: (r.subscription, r.seq),
        )
        attempts = [a for a in self._attempts if a.prediction_id == prediction_id]
        attempts.sort(key=lambda a: (a.at, a.outbox_id, a.attempt))
        return [dataclasses.replace(r) for r in rows], attempts

    async def webhook_secrets(self, *, now: float, overlap_s: float) -> builtins.list[str]:
        self._check()
        return secrets_in_use(self._secrets, now, overlap_s)

    async def rotate_webhook_secret(self, secret: str, *, now: float) -> None:
        self._check()
        self._secrets = [(s, c, now if r is None else r) for s, c, r in self._secrets]
        self._secrets.append((secret, now, None))

