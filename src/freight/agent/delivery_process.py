"""The deliverer in a process of its own: the default (``delivery_process``).

Measured (B10 in bench/README.md): on a thread of the API's process the deliverer
still shares its GIL, ~0.25 ms of it per delivery, with an API already bound by it
under B1's load (B1 with webhooks ~0.5 of B1 alone). In a process of its own it
takes nothing from the API's process but the wake-ups (~0.7 of B1 alone there).

The parent (:class:`DeliveryProcess`) holds the write end of a pipe that is the
child's standard input: a byte wakes the child's deliverer, end of file tells it
to stop — a stop, or the parent's death, SIGKILL included (the kernel closes the
pipe). The child lets sends in flight finish within the grace and records them;
a row still being sent stays leased and is sent again after the lease expires (at
least once, under the same event id). A child that exits on its own is started
again with back-off. The child's world (settings, store handle, storage, sinks) is
built by the composition root, ``python -m freight.deliverer`` (its command is
given here); it ignores SIGINT and SIGTERM, which a terminal sends to the whole
process group: its parent decides when it stops.

Started when there is something to deliver, not before: with ``due`` (is any row
pending or being sent, anyone's?) the child is started by the first wake, or once
``due()`` says so (asked at start and every ``recheck_s`` until then: rows left by
an earlier life of the server, leases of a dead node's deliverer). A server whose
users never subscribe spares a process (~60 MB) and its start (~1 s of CPU).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Sequence

log = logging.getLogger("freight.delivery")

#: a child that exited on its own is started again after this (doubling, to the max)
RESTART_FIRST_S = 0.5
RESTART_MAX_S = 30.0
#: beyond the grace, how long a stopping child may take to close before it is killed
STOP_MARGIN_S = 10.0
#: until its first start, how often the store is asked whether anything is due
RECHECK_S = 2.0


class DeliveryProcess:
    """Runs ``command`` (the deliverer's process), supervised, woken through its stdin."""

    def __init__(
        self,
        command: Sequence[str],
        *,
        due: Callable[[], Awaitable[bool]] | None = None,
        recheck_s: float = RECHECK_S,
    ) -> None:
        """``due``: started only once something is to be delivered (see the module);
        without it, at :meth:`start`."""
        self._command = list(command)
        self._due, self._recheck_s = due, recheck_s
        self._proc: asyncio.subprocess.Process | None = None
        self._wakes: int | None = None  # the write end of the child's stdin
        self._watch: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._needed = asyncio.Event()  # set on the loop: a wake came before the start
        self._stopping = False
        self.starts = 0  # how many children were started (restarts included)

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    def start(self) -> None:
        """Start the child and its supervision (on the running loop)."""
        self._loop = asyncio.get_running_loop()
        self._watch = asyncio.create_task(self._keep(), name="deliverer:process")

    def wake(self) -> None:
        """A byte down the pipe: never blocks (a full pipe holds wake-ups enough). Not
        started yet: start it (the child's first claim finds what woke it)."""
        fd = self._wakes
        if fd is None:
            loop = self._loop
            if self.starts == 0 and loop is not None and not self._stopping:
                with contextlib.suppress(RuntimeError):  # the loop closed: stopping anyway
                    loop.call_soon_threadsafe(self._needed.set)
            return
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(fd, b"\x01")

    async def stop(self, grace_s: float = 5.0) -> None:
        """End of file for the child: it stops within the grace (killed past it and a
        margin); wait for it."""
        self._stopping = True
        self._needed.set()
        self._close_pipe()
        proc = self._proc
        if proc is not None and proc.returncode is None:
            try:
                await asyncio.wait_for(proc.wait(), grace_s + STOP_MARGIN_S)
            except TimeoutError:
                log.warning("the delivery process did not stop within the grace: killed")
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch

    async def _until_due(self) -> None:
        """Return once there is something to deliver (or on stop)."""
        assert self._due is not None
        while not self._stopping and not self._needed.is_set():
            try:
                if await self._due():
                    return
            except Exception as exc:  # the store cannot tell: start; the child copes
                log.warning("cannot tell whether deliveries are due (%s): starting", exc)
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._needed.wait(), self._recheck_s)

    async def _keep(self) -> None:
        if self._due is not None:
            await self._until_due()
        wait_s = RESTART_FIRST_S
        while not self._stopping:
            proc = await self._spawn()
            code = await proc.wait()
            if self._stopping:
                return
            log.warning("the delivery process exited (%s); started again in %.1fs", code, wait_s)
            self._close_pipe()
            await asyncio.sleep(wait_s)
            wait_s = min(wait_s * 2, RESTART_MAX_S)

    async def _spawn(self) -> asyncio.subprocess.Process:
        read, write = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(*self._command, stdin=read)
        except BaseException:
            os.close(write)
            raise
        finally:
            os.close(read)
        os.set_blocking(write, False)
        self._proc, self._wakes = proc, write
        self.starts += 1
        return proc

    def _close_pipe(self) -> None:
        fd, self._wakes = self._wakes, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


def read_wakes(fd: int, wake: Callable[[], None], ended: Callable[[], None]) -> None:
    """The child's side: on this loop, ``wake()`` for each read of wake-up bytes from
    ``fd`` (its stdin), ``ended()`` at end of file (the parent stopped it, or died)."""
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            wake()
            return
        loop.remove_reader(fd)
        ended()

    loop.add_reader(fd, readable)


__all__ = ["DeliveryProcess", "read_wakes"]
