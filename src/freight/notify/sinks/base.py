"""What every sink has in common: the :class:`Sink` protocol, its subscription
filter, and the hygiene that keeps credentials out of error text.

A sink delivers one event to one destination and knows nothing of the store or
the agent: the caller (the outbox deliverer) opens it once, calls ``send`` per
event with its own time bound, retries by its own policy, and closes it.
``send`` never raises for a delivery failure: it returns an :class:`Outcome`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Protocol, runtime_checkable
from urllib.parse import unquote, urlsplit

from freight.errors import SinkError
from freight.notify.event import EVENT_NAMES, Event, Outcome, event_name

_MAX_ERROR: Final = 500
_HIDDEN: Final = "***"


@dataclass(frozen=True, slots=True)
class Subscription:
    """Which events a sink wants: by name (``started``/``completed``) and by target
    (None = every target)."""

    events: frozenset[str] = frozenset(EVENT_NAMES)
    targets: frozenset[str] | None = None

    @classmethod
    def of(
        cls, events: Iterable[str] | None = None, targets: Iterable[str] | None = None
    ) -> Subscription:
        """None means all, for either."""
        return cls(
            frozenset(EVENT_NAMES if events is None else events),
            None if targets is None else frozenset(targets),
        )

    def matches(self, type_: str, target: str) -> bool:
        """Whether an event of ``type_`` about ``target`` is wanted."""
        wanted = event_name(type_) in self.events
        return wanted and (self.targets is None or target in self.targets)


@runtime_checkable
class Sink(Protocol):
    """One destination. ``open`` raises SinkError (start-up); ``send`` returns an
    Outcome and never raises for a delivery failure; ``close`` releases everything."""

    name: str
    type: str
    subscription: Subscription

    async def open(self) -> None: ...

    async def send(self, event: Event) -> Outcome: ...

    async def close(self) -> None: ...


def _parts(secret: str) -> list[str]:
    """A secret and, when it is a URL (or a list of them), each password in it: client
    libraries print a URL's pieces as often as the whole."""
    found = [secret]
    for piece in secret.replace(",", " ").split():
        with contextlib.suppress(ValueError):
            password = urlsplit(piece).password
            if password:
                found.append(password)
                found.append(unquote(password))
    return found


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every occurrence of each (non-empty) secret replaced by ``***``:
    client libraries put URLs or passwords in their exception text."""
    every = {part for s in secrets if s for part in _parts(s)}
    for secret in sorted(every, key=len, reverse=True):
        text = text.replace(secret, _HIDDEN)
    return text


def describe(exc: BaseException, secrets: Iterable[str | None] = ()) -> str:
    """A one-line, secret-free description of a failure for an Outcome or a SinkError."""
    text = str(exc).strip() or "(no message)"
    line = f"{type(exc).__name__}: {' '.join(text.split())}"
    line = redact(line, secrets)
    return line if len(line) <= _MAX_ERROR else line[: _MAX_ERROR - 1] + "…"


def sink_error(
    sink: Sink, cause: str, exc: BaseException | None = None, secrets: Iterable[str | None] = ()
) -> SinkError:
    """A start-up failure naming the sink and the cause (and the exception, redacted)."""
    message = f"sink {sink.name!r} ({sink.type}): {cause}"
    if exc is not None:
        message += f": {describe(exc, secrets)}"
    return SinkError(redact(message, secrets), sink=sink.name, sink_type=sink.type)
