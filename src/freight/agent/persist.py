"""Writing a worker's outcomes to the store, through outages, then waking waiters.

Why separate from the claim loop: an outcome must not be lost to a database
blip (the prediction would wait for its lease to expire and run again), so
every write retries with back-off until it lands, or until shutdown leaves it
to lease expiry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from freight.errors import StoreUnavailableError
from freight.prediction import Completion, Release
from freight.store.base import Queue

log = logging.getLogger("freight.agent")

Callback = Callable[[list[str]], None]
StopFlag = Callable[[], bool]
Op = Callable[[], Awaitable[None]]


class Persist:
    """Writes outcomes to the store, retrying through outages, then wakes waiters."""

    def __init__(
        self,
        store: Queue,
        publish: Callback,
        stopping: StopFlag,
        on_outbox: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._publish = publish
        self._stopping = stopping
        self._on_outbox = on_outbox

    async def _retry(self, what: str, op: Op) -> None:
        backoff_s = 0.2
        while True:
            try:
                await op()
                return
            except StoreUnavailableError:
                if self._stopping():
                    log.error("store unavailable at shutdown; %s left to lease expiry", what)
                    return
                log.warning("store unavailable; retrying %s in %.1fs", what, backoff_s)
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, 5.0)

    async def complete(self, completions: list[Completion], *, outbox: bool = False) -> None:
        """``outbox``: the transaction may have written outbox rows (a prediction with
        subscriptions): wake the deliverer. A step's run is the store's to announce."""

        async def op() -> None:
            await self._store.complete(completions)

        await self._retry("completion", op)
        self._publish([c.id for c in completions])
        if outbox and self._on_outbox is not None:
            self._on_outbox()

    async def release(self, releases: list[Release]) -> None:
        async def op() -> None:
            await self._store.release(releases, now=time.time())

        await self._retry("release", op)
        self._publish([r.id for r in releases])


__all__ = ["Persist"]
