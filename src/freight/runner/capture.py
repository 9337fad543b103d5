"""What the model prints or logs, captured while it handles a batch, sent as it comes.

A runner handles one batch at a time (``process._run`` reads a frame, serves it,
writes its result), so whatever the model writes between :meth:`Capture.begin` and
:meth:`Capture.end` is that batch's, from any of its threads. Three sources:

- ``sys.stdout`` / ``sys.stderr`` replaced by :class:`Tee`: every write still goes
  to the process's stderr first (the agent logs it as today), then, during a batch,
  each complete line is kept with its time and stream;
- ``logging``: every record a logger hands to its handlers (``Logger.callHandlers``,
  wrapped once) is kept as a ``log`` line with its level, and what its handlers
  write to the streams meanwhile is not kept twice. freight's own loggers are left
  out.

Lines go to the agent as :class:`~freight.runner.protocol.Logs` frames: a flusher
thread, woken by the first line of a quiet spell, waits ``COALESCE_S`` for more and
writes one frame, so a long prediction's lines can be followed; :meth:`end` writes
the rest before the batch's result, under the same lock, so no line of a batch ever
follows its result. A model that prints nothing costs a flag test per batch: the
flusher sleeps on its event. Past ``max_bytes`` in one batch, lines are counted and
dropped here already (the store keeps no more of them anyway).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from freight.logs import LOAD, LOG, MAX_LOAD_LINES, PREDICT, STDERR, STDOUT, Printed, cut, size

#: how long the flusher waits after a line for more, so a burst travels in one frame
COALESCE_S = 0.05

Send = Callable[[tuple[Printed, ...], int], None]


class Capture:
    """The lines of the current batch (or load), sent through ``send(lines, dropped)``
    under ``lock`` (the lock every frame to the agent is written under)."""

    def __init__(self, send: Send, lock: threading.Lock, max_bytes: int) -> None:
        self._send = send
        self.lock = lock
        self._max_bytes = max_bytes
        self._phase: str | None = None  # None: not capturing
        self._pending: list[Printed] = []
        self._bytes = 0
        self._dropped = 0
        self._mine = threading.Lock()  # guards the pending lines
        self._wake = threading.Event()
        self._local = threading.local()  # .muted: a logging record is being handled
        self._flusher: threading.Thread | None = None

    # -- the batch's bounds ------------------------------------------------------------
    def begin(self, phase: str = PREDICT) -> None:
        self._bytes = self._dropped = 0
        self._phase = phase
        if phase == PREDICT and self._flusher is None:
            self._flusher = threading.Thread(target=self._flush_loop, name="logs", daemon=True)
            self._flusher.start()

    def end(self) -> tuple[tuple[Printed, ...], int]:
        """Stop capturing; the lines not yet sent and the bytes dropped (the caller
        sends them, holding :attr:`lock`, before its next frame)."""
        with self._mine:
            self._phase = None
            lines, self._pending = tuple(self._pending), []
            dropped, self._dropped = self._dropped, 0
        return lines, dropped

    # -- sources -------------------------------------------------------------------------
    @property
    def capturing(self) -> bool:
        return self._phase is not None and not getattr(self._local, "muted", False)

    def add(self, stream: str, text: str, level: str | None = None) -> None:
        line = Printed(time.time(), stream, cut(text), level, self._phase or PREDICT)
        with self._mine:
            if self._phase is None:
                return
            n = size(line.text)
            full = self._bytes + n > self._max_bytes
            if full or (self._phase == LOAD and len(self._pending) >= MAX_LOAD_LINES):
                self._dropped += n
                return
            self._bytes += n
            self._pending.append(line)
        if self._phase == PREDICT:
            self._wake.set()

    def record(self, record: logging.LogRecord) -> None:
        if not self.capturing or record.name == "freight" or record.name.startswith("freight."):
            return
        try:
            text = record.getMessage()
        except Exception:  # a bad format string: logging itself reports it
            text = str(record.msg)
        if record.exc_info and record.exc_info[0] is not None:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        for line in text.splitlines() or [""]:
            self.add(LOG, line, record.levelname)

    def mute(self, on: bool) -> None:
        self._local.muted = on

    # -- live ------------------------------------------------------------------------
    def _flush_loop(self) -> None:
        while True:
            self._wake.wait()
            time.sleep(COALESCE_S)  # gather the burst: one frame, not one per line
            self._wake.clear()
            with self.lock:  # taken and sent under the frame lock: never after a result
                with self._mine:
                    if self._phase != PREDICT:
                        continue
                    lines, self._pending = tuple(self._pending), []
                if lines:
                    try:
                        self._send(lines, 0)
                    except (OSError, ValueError):  # the agent went away: the runner ends
                        return


class Tee:
    """A text stream that writes through to ``target`` and keeps the lines of a batch."""

    def __init__(self, target: TextIO, stream: str, capture: Capture) -> None:
        self._target = target
        self._stream = stream
        self._capture = capture
        self._partial = ""

    def write(self, text: str) -> int:
        written = self._target.write(text)
        if self._capture.capturing:
            self._keep(text)
        return written

    def _keep(self, text: str) -> None:
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            self._capture.add(self._stream, line)

    def finish(self) -> None:
        """The batch ended: a line without its newline is still its line."""
        if self._partial:
            partial, self._partial = self._partial, ""
            if self._capture.capturing:
                self._capture.add(self._stream, partial)

    def flush(self) -> None:
        self._target.flush()

    def __getattr__(self, name: str) -> Any:  # encoding, fileno, isatty, ...
        return getattr(self._target, name)


def install(capture: Capture) -> tuple[Tee, Tee]:
    """Route ``sys.stdout`` (already pointed at stderr), ``sys.stderr`` and logging
    through ``capture``; the two tees (to finish their partial lines)."""
    target = sys.stderr
    out, err = Tee(target, STDOUT, capture), Tee(target, STDERR, capture)
    sys.stdout, sys.stderr = out, err
    handle = logging.Logger.callHandlers

    def call_handlers(self: logging.Logger, record: logging.LogRecord) -> None:
        capture.record(record)
        capture.mute(True)  # its handlers' writes are this record, already kept
        try:
            handle(self, record)
        finally:
            capture.mute(False)

    logging.Logger.callHandlers = call_handlers  # type: ignore[method-assign]
    return out, err


__all__ = ["COALESCE_S", "Capture", "Tee", "install"]
