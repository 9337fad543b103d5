"""In-process wake-ups: work signals for claim loops, completion for waiters.

In the embedded shape the API, the agent and the waiters share one event loop,
so an ``asyncio.Event`` is the fastest possible wake-up. Across processes
(cluster shape) PostgreSQL's LISTEN/NOTIFY feeds the same hub, and callers also
poll the store on a deadline, so a missed signal costs latency, never
correctness.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Iterable
from types import TracebackType


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
