"""In-process wake-ups: work signals for claim loops, completion for waiters.

In the embedded shape the API, the agent and the waiters share one event loop,
so an ``asyncio.Event`` is the fastest possible wake-up. Across processes
(cluster shape) callers fall back to polling the store on a deadline, so a
missed signal costs latency, never correctness.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Iterable


class WorkSignal:
    """One event per target, set when work may be available for it."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = defaultdict(asyncio.Event)

    def notify(self, target: str) -> None:
        self._events[target].set()

    def notify_all(self) -> None:
        for event in self._events.values():
            event.set()

    async def wait(self, target: str, timeout_s: float) -> None:
        """Wait until notified or the timeout passes (whichever first), then re-arm."""
        event = self._events[target]
        if not event.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout_s)
        event.clear()


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
