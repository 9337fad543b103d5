"""What a sink delivers (:class:`Event`) and what it says back (:class:`Outcome`).

Both are plain values so that sinks know nothing of the store or the agent: the
outbox turns a row into an Event, hands it to a sink, and records the Outcome.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

import orjson

from freight.prediction import TERMINAL, Status

#: the event names a subscriber picks from (``events: [completed]``); ``waiting``: a
#: callback step of a pipeline run waits for its answer (``pipelines/callback.py``)
EventName = Literal["started", "completed", "waiting"]
EVENT_NAMES: Final[tuple[EventName, ...]] = ("started", "completed", "waiting")
STARTED: Final = "prediction.started"
COMPLETED: Final = "prediction.completed"
WAITING: Final = "step.waiting"
#: every event type, in the order a prediction emits them
EVENT_TYPES: Final[tuple[str, ...]] = (STARTED, WAITING, COMPLETED)


def event_type(status: str) -> str | None:
    """The event a prediction emits on entering ``status``, or None (queued, pending,
    awaiting_input emit nothing). ``completed`` covers every terminal status."""
    try:
        value = Status(status)
    except ValueError:
        return None
    if value is Status.RUNNING:
        return STARTED
    if value in TERMINAL:
        return COMPLETED
    return None


def event_name(type_: str) -> str:
    """The subscription name of an event type: ``prediction.completed`` -> ``completed``."""
    return type_.rpartition(".")[2]


@dataclass(frozen=True, slots=True)
class Event:
    """One notification. ``id`` is stable across retries (receivers de-duplicate on it);
    ``data`` is the prediction object as plain JSON values (no ``orjson.Fragment``:
    :meth:`for_prediction` normalises one)."""

    id: str
    type: str
    timestamp: float  # epoch seconds of the transition
    prediction_id: str
    target: str
    status: str
    data: dict[str, Any] = field(default_factory=dict, hash=False)
    # the W3C traceparent sinks pass on (a webhook's header, a broker message's), so a
    # receiver's spans join the prediction's trace; None: tracing is off
    traceparent: str | None = None

    @property
    def name(self) -> str:
        """``started`` or ``completed``: what a subscription filters on."""
        return event_name(self.type)

    @classmethod
    def for_prediction(
        cls,
        id: str,
        data: dict[str, Any],
        *,
        timestamp: float,
        type: str | None = None,
        traceparent: str | None = None,
    ) -> Event:
        """The event for a rendered prediction object (``api/render.prediction_dict``):
        its id, target and status are read from it, its type from the status unless
        given. Raises ValueError when the status emits no event."""
        plain = orjson.loads(orjson.dumps(data))  # Fragments -> plain values
        status = str(plain["status"])
        chosen = type or event_type(status)
        if chosen is None:
            raise ValueError(f"status {status!r} emits no event")
        return cls(
            id=id,
            type=chosen,
            timestamp=timestamp,
            prediction_id=str(plain["id"]),
            target=str(plain["target"]),
            status=status,
            data=plain,
            traceparent=traceparent,
        )


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one delivery attempt. ``stop``: the receiver wants no more events
    (HTTP 410 Gone), so the caller should stop retrying and drop the subscription;
    otherwise a failed attempt is retried later."""

    delivered: bool
    status_code: int | None = None
    error: str | None = None
    stop: bool = False
    response: str | None = None  # the start of the receiver's answer (webhooks), for people
    latency_ms: float | None = None  # how long the attempt took (set by the deliverer)

    @property
    def retry(self) -> bool:
        """Whether the caller should try this delivery again later."""
        return not self.delivered and not self.stop

    @classmethod
    def ok(cls, status_code: int | None = None) -> Outcome:
        return cls(delivered=True, status_code=status_code)

    @classmethod
    def failed(cls, error: str, status_code: int | None = None) -> Outcome:
        return cls(delivered=False, status_code=status_code, error=error)

    @classmethod
    def gone(cls, status_code: int = 410, error: str = "the receiver is gone") -> Outcome:
        return cls(delivered=False, status_code=status_code, error=error, stop=True)
