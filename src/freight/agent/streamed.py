"""Writing the chunks a streaming model yields (``runner/process.py``) to the store, then
waking the streams that follow them.

The same shape as :mod:`freight.agent.logs`, for the same reasons: chunks arrive as
the runner sends them (:meth:`StreamWriter.add`); one task writes whatever has gathered
in one transaction (``store/streamed.py`` ``append``) and publishes each prediction's
:func:`~freight.streaming.signal_key` on the hub (this process's event streams; on
PostgreSQL the insert's trigger tells the other processes'). The first chunk of a quiet
spell is written at once — time to first chunk is what a streaming client waits on —
and what arrives while a write is in flight goes in the next one. The claim loop waits
(:meth:`StreamWriter.drain`) before it records a batch's end, so a prediction's chunks
are all stored when it is seen ended, and its stream's last chunk event comes before
its terminal event. Unlike a log line, a chunk is the prediction's output: a write that
fails is tried again (a stream with a hole would be wrong), up to the moment the
prediction is recorded ended.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from freight.errors import StoreUnavailableError
from freight.store import streamed as store_streamed
from freight.store.base import Store
from freight.streaming import Append, Part, signal_key

log = logging.getLogger("freight.agent")

#: the pause before a failed write is tried again (doubled up to the maximum)
RETRY_S = 0.1
MAX_RETRY_S = 2.0


class StreamWriter:
    """Appends streamed chunks to their predictions, in the background, in order."""

    def __init__(self, store: Store, publish: Callable[[list[str]], None]) -> None:
        self._store = store
        self._publish = publish
        self._pending: list[Append] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    def add(self, prediction_id: str, attempt: int, parts: tuple[Part, ...]) -> None:
        """``parts`` were yielded by attempt ``attempt`` of ``prediction_id``."""
        if not parts:
            return
        self._pending.append(Append(prediction_id, attempt, parts))
        self._idle.clear()
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name="streamed:writer")

    async def drain(self) -> None:
        """Wait until every chunk added so far is written."""
        if not self._idle.is_set():
            await self._idle.wait()

    async def close(self) -> None:
        """Write what is pending (a store that stays down: given up), then stop."""
        if self._task is not None:
            try:
                await asyncio.wait_for(self.drain(), MAX_RETRY_S * 5)
            except TimeoutError:
                log.warning("closing with streamed chunks unwritten")
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            await self._write(batch)
            if not self._pending:
                self._idle.set()

    async def _write(self, batch: list[Append]) -> None:
        pause_s = RETRY_S
        while True:
            try:
                await self._store.execute(lambda: store_streamed.append(batch))
                break
            except StoreUnavailableError as exc:
                log.warning("streamed chunks not written yet (%s); again in %.1fs", exc, pause_s)
                await asyncio.sleep(pause_s)
                pause_s = min(pause_s * 2, MAX_RETRY_S)
            except Exception as exc:  # a bug or a refused row: never the claim loop's end
                chunks = sum(len(a.parts) for a in batch)
                log.error("dropped %d streamed chunks: %s", chunks, exc)
                return
        self._publish(sorted({signal_key(a.prediction_id) for a in batch}))


__all__ = ["StreamWriter"]
