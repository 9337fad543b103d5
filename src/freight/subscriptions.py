"""Who is told of a prediction's changes: the subscriptions recorded at create, and
the view of their deliveries.

A prediction's subscriptions are decided once, when it is created: the caller's
own webhook (checked here: a plainly refused URL is a 400 before anything is
written) plus every server-wide sink whose target filter matches. They are kept
on the row (``notify``) so that the database itself writes the outbox rows with
each status change, and a sink added to ``freight.yaml`` later does not
retroactively subscribe predictions made before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson

from freight.deliveries import DeliveryAttempt, DeliveryStatus, OutboxRow
from freight.errors import InvalidRequestError
from freight.notify.addresses import check_url_text

EVENTS = ("started", "completed", "waiting")  # waiting: a run's callback step waits


@dataclass(frozen=True, slots=True)
class Webhook:
    """A caller's own webhook for one prediction (``webhook: {url, events}``)."""

    url: str
    events: tuple[str, ...] = ("completed",)


@dataclass(frozen=True, slots=True)
class ServerSink:
    """A sink of ``freight.yaml`` as the subscriptions see it: its name and filters."""

    name: str
    events: frozenset[str] = frozenset(EVENTS)
    targets: frozenset[str] | None = None  # None: every target


@dataclass(frozen=True, slots=True)
class DeliveryView:
    """One event for one subscription, with every attempt made to deliver it."""

    id: str  # the outbox row: what POST /v1/deliveries/{id}/redeliver names
    sink: str  # "webhook https://host/path" or the sink's name
    event_id: str
    event_type: str
    status: DeliveryStatus
    attempts: int
    created_at: float
    next_at: float | None
    finished_at: float | None
    last_code: int | None
    last_error: str | None
    tries: list[DeliveryAttempt] = field(default_factory=list)


class Subscriptions:
    def __init__(self, sinks: list[ServerSink] | None = None, *, allow_private: bool = False):
        self._sinks = sinks or []
        self.allow_private = allow_private

    def notify_for(
        self,
        target: str,
        webhook: Webhook | None,
        *,
        also: Sequence[dict[str, Any]] = (),
    ) -> str | None:
        """The ``notify`` column of a new prediction of ``target`` (None: nobody asked);
        ``also``: freight's own subscriptions (``{"sink": "@…"}``), first."""
        entries: list[dict[str, Any]] = list(also)
        if webhook is not None:
            unknown = sorted(set(webhook.events) - set(EVENTS))
            if unknown:
                raise InvalidRequestError(
                    f"unknown webhook event(s) {', '.join(unknown)}: use {', '.join(EVENTS)}",
                    code="unknown_event",
                    events=unknown,
                )
            check_url_text(webhook.url, allow_private=self.allow_private)
            entries.append({"url": webhook.url, "events": sorted(set(webhook.events))})
        for sink in self._sinks:
            if sink.targets is None or target in sink.targets:
                entries.append({"sink": sink.name, "events": sorted(sink.events)})
        return orjson.dumps(entries).decode() if entries else None


def label(entry: dict[str, Any]) -> str:
    """How a subscription is shown: a webhook by its URL without query (it may carry a
    token), a server sink by its name."""
    if "url" in entry:
        parts = urlsplit(str(entry["url"]))
        return f"webhook {parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
    return str(entry.get("sink", "?"))


def views(
    notify: str | None, rows: list[OutboxRow], attempts: list[DeliveryAttempt]
) -> list[DeliveryView]:
    entries: list[dict[str, Any]] = orjson.loads(notify) if notify else []
    tries: dict[str, list[DeliveryAttempt]] = {}
    for attempt in attempts:
        tries.setdefault(attempt.outbox_id, []).append(attempt)
    return [
        DeliveryView(
            id=row.id,
            sink=label(entries[row.subscription]) if row.subscription < len(entries) else "?",
            event_id=row.event_id,
            event_type=row.event_type,
            status=row.status,
            attempts=row.attempts,
            created_at=row.created_at,
            next_at=None if row.status.final else row.next_at,
            finished_at=row.finished_at,
            last_code=row.last_code,
            last_error=row.last_error,
            tries=tries.get(row.id, []),
        )
        for row in rows
    ]


__all__ = ["EVENTS", "DeliveryView", "ServerSink", "Subscriptions", "Webhook", "label", "views"]
