"""In-process wake-ups: work signals for claim loops, completion for waiters.

In the embedded shape the API, the agent and the waiters share one event loop,
so an ``asyncio.Event`` is the fastest possible wake-up. Across processes
(cluster shape) PostgreSQL's LISTEN/NOTIFY feeds the same hub, and callers also
poll the store on a deadline, so a missed signal costs latency, never
correctness.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

from freight.prediction import Prediction


class WorkSignal:
    """One event per target, set when work may be available for it, and a count of the
    notifications per target: a claimer that read :meth:`seen` before a claim that
    left nothing queued knows, while the count is unchanged, that nothing was queued
    since (every path that queues a row notifies after its commit)."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self._counts: dict[str, int] = defaultdict(int)

    def notify(self, target: str) -> None:
        self._counts[target] += 1
        self._events[target].set()

    def nudge(self, target: str) -> None:
        """Wake the target's waiters without counting a notification (rows were handed
        to one of them: :class:`Hands`)."""
        self._events[target].set()

    def notify_all(self) -> None:
        for target in list(self._events):
            self.notify(target)

    def seen(self, target: str) -> int:
        """How many notifications of ``target`` there were so far."""
        return self._counts[target]

    async def wait(self, target: str, timeout_s: float, since: int | None = None) -> bool:
        """Wait until notified or the timeout passes (whichever first), then re-arm;
        whether it was woken. ``since``: a :meth:`seen` count; a notification after it
        ends the wait at once, one before it (already seen) does not."""
        event = self._events[target]
        if since is not None:
            if self._counts[target] != since:
                event.clear()
                return True
            event.clear()
        woken = True
        if not event.is_set():
            try:
                await asyncio.wait_for(event.wait(), timeout_s)
            except TimeoutError:
                woken = False
        event.clear()
        return woken


@dataclass(frozen=True, slots=True)
class Offer:
    """An idle replica of ``target`` in this process, reserved for one transaction: the
    ready rows it queues may be claimed for it in that transaction (``store/ops.py``
    ``handing_off``), with the claim's own rules (fairness, lease, attempts)."""

    target: str
    limit: int
    worker_id: str
    lease_s: float
    slot: int


class Hands(Protocol):
    """This process's idle replicas, as the store sees them (the agent's workers)."""

    def offer(self, target: str) -> Offer | None:
        """Reserve an idle replica of ``target`` (in memory, no I/O); None: none idle.
        A reservation not followed by :meth:`take` lapses when the replica wakes."""

    def take(self, offer: Offer, rows: list[Prediction]) -> None:
        """After the commit: the rows claimed under ``offer`` (maybe none), to run."""


class Claimed(list[Prediction]):
    """A claim's rows, and whether rows of its target were still queued after it (held
    back, capped, or more than its limit): where not, a claimer need not claim again
    until notified."""

    def __init__(self, rows: Iterable[Prediction] = (), *, more: bool = True) -> None:
        super().__init__(rows)
        self.more = more


class CompletionHub:
    """Futures per prediction id, resolved when the prediction may have changed state.

    Subscribe *before* reading the row, then wait: a completion that lands in
    between is not missed.
    """

    def __init__(self) -> None:
        self._waiters: dict[str, list[asyncio.Future[None]]] = defaultdict(list)

    def publish(self, ids: Iterable[str]) -> None:
        for prediction_id in ids:
            for future in self._waiters.pop(prediction_id, ()):
                if not future.done():
                    future.set_result(None)

    def subscribe(self, prediction_id: str) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[prediction_id].append(future)
        return future

    def unsubscribe(self, prediction_id: str, future: asyncio.Future[None]) -> None:
        waiters = self._waiters.get(prediction_id)
        if waiters and future in waiters:
            waiters.remove(future)
            if not waiters:
                del self._waiters[prediction_id]

    def watch(self, ids: Iterable[str]) -> Watch:
        """Subscribe to several ids at once (see :class:`Watch`)."""
        return Watch(self, ids)


class Watch:
    """Subscriptions to several ids, made when created: read the rows after making it,
    then :meth:`wait` for any of them; :meth:`close` (or ``with``) unsubscribes all."""

    def __init__(self, hub: CompletionHub, ids: Iterable[str]) -> None:
        self._hub = hub
        self._futures = {prediction_id: hub.subscribe(prediction_id) for prediction_id in ids}

    def add(self, ids: Iterable[str]) -> None:
        """Subscribe to more ids (those already watched keep their subscription)."""
        for prediction_id in ids:
            if prediction_id not in self._futures:
                self._futures[prediction_id] = self._hub.subscribe(prediction_id)

    async def wait(self, timeout_s: float) -> set[str]:
        """The ids published since the watch was made, once there is one or the
        timeout passed (then possibly none)."""
        futures = list(self._futures.values())
        if timeout_s > 0 and not any(f.done() for f in futures):
            if futures:
                await asyncio.wait(futures, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
            else:  # nothing to watch: the timeout alone ends the wait
                await asyncio.sleep(timeout_s)
        return {i for i, f in self._futures.items() if f.done() and not f.cancelled()}

    def close(self) -> None:
        for prediction_id, future in self._futures.items():
            self._hub.unsubscribe(prediction_id, future)
        self._futures = {}

    def __enter__(self) -> Watch:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
