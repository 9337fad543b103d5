"""Writing what the runners captured (``runner/capture.py``) to the store, then waking
the streams that follow it.

Lines arrive as the runner sends them, each frame attributed to every prediction of
the slot's batch (:meth:`LogWriter.add`); one task writes whatever has gathered in one
transaction (``store/logs.py`` ``append``) and publishes each prediction's
:func:`~freight.logs.signal_key` on the hub (this process's event streams; another
process's streams find the lines at their next poll). Off the critical path: the
claim loop only waits (:meth:`LogWriter.drain`) at the end of a batch that printed,
so that a prediction's log is whole when it is seen ended; a batch that printed
nothing waits for nothing. A failing write drops its lines with a warning: a log is
an observer and never holds up, nor fails, a prediction.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from freight.logs import Append, Printed, signal_key
from freight.prediction import Prediction
from freight.store import logs as store_logs
from freight.store.base import Store

log = logging.getLogger("freight.agent")

#: lines waiting for the store past which new ones are dropped (a store that cannot
#: keep up must not make the agent grow without bound)
MAX_PENDING_LINES = 100_000


class LogWriter:
    """Appends captured lines to their predictions' logs, in the background."""

    def __init__(self, store: Store, publish: Callable[[list[str]], None], max_bytes: int) -> None:
        self._store = store
        self._publish = publish
        self._max_bytes = max_bytes
        self._pending: list[Append] = []
        self._count = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    def add(self, rows: Sequence[Prediction], lines: tuple[Printed, ...], dropped: int = 0) -> None:
        """``lines`` (and ``dropped`` bytes) belong to each of ``rows``."""
        if not rows or not (lines or dropped):
            return
        if self._count + len(lines) > MAX_PENDING_LINES:
            log.warning("the store is behind on logs: %d lines dropped", len(lines) * len(rows))
            return
        self._pending.extend(Append(r.id, r.attempts, lines, dropped) for r in rows)
        self._count += len(lines)
        self._idle.clear()
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name="logs:writer")

    async def drain(self) -> None:
        """Wait until every line added so far is written (or given up on)."""
        if not self._idle.is_set():
            await self._idle.wait()

    async def close(self) -> None:
        """Write what is pending, then stop."""
        await self.drain()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending, self._count = self._pending, [], 0
            await self._write(batch)
            if not self._pending:
                self._idle.set()

    async def _write(self, batch: list[Append]) -> None:
        try:
            await self._store.execute(lambda: store_logs.append(batch, self._max_bytes))
        except Exception as exc:  # an observer: never the prediction's failure
            lines = sum(len(a.lines) for a in batch)
            log.warning("dropped %d log lines of %d predictions: %s", lines, len(batch), exc)
            return
        self._publish(sorted({signal_key(a.prediction_id) for a in batch}))


__all__ = ["MAX_PENDING_LINES", "LogWriter"]
