"""The deliverer on a thread of its own: its own event loop, its own store handle.

Measured (B10 in bench/README.md): under B1's load the API's one event loop is
saturated, and deliveries made on it waited behind requests (p50 1.5-2.6 s after
``finished_at``). On its own thread the deliverer's loop never queues behind a
request: the two loops share the GIL, and the store only through the database
(its own handle, :meth:`~freight.store.base.Lifecycle.sibling`: a second
connection to SQLite's WAL file, or a small PostgreSQL pool of its own). The
storage is shared (its backends hold no loop of their own). The sinks, and the
webhooks' aiohttp session, are made on the thread's loop, where they are used.

The API's loop (a completion's commit, PostgreSQL's ``NOTIFY``) wakes it with
``call_soon_threadsafe``, once per wake-up not yet taken. :meth:`DeliveryThread.stop`
lets the sends in flight finish within a grace and records them; a send still going
after it is dropped with its thread, its row leased to this worker until the lease
expires, then sent again (at least once, under the same event id). A crash of the
deliverer is logged and restarted (:class:`~freight.agent.duties.Supervisor`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable

from freight.agent.delivery import Deliverer
from freight.agent.duties import Loop, Supervisor
from freight.store.base import Store

log = logging.getLogger("freight.delivery")

#: a failed open of the thread's store handle is tried again after this (doubling)
OPEN_RETRY_S = 0.5
OPEN_RETRY_MAX_S = 10.0


class DeliveryThread:
    """Runs the :class:`Deliverer` that ``make`` builds, on a sibling of ``store``, in a
    thread named ``name``."""

    def __init__(
        self,
        store: Store,
        make: Callable[[Store], Deliverer],
        *,
        name: str = "freight-deliverer",
    ) -> None:
        self._store = store
        self._make = make
        self._name = name
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._deliverer: Deliverer | None = None
        self._halt = threading.Event()  # asked to stop (any thread)
        self._halted: asyncio.Event | None = None  # the same, on the thread's loop
        self._grace_s = 5.0
        self._wake_pending = False

    @property
    def ident(self) -> int | None:
        """The thread's id while it runs (what its deliveries run on)."""
        thread = self._thread
        return thread.ident if thread is not None and thread.is_alive() else None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name=self._name, daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Something may be due; callable from any thread, cheap to call often."""
        loop = self._loop
        if loop is None or self._wake_pending:
            return
        self._wake_pending = True
        try:
            loop.call_soon_threadsafe(self._woken)
        except RuntimeError:  # the loop is closed: the thread has ended
            self._wake_pending = False

    def _woken(self) -> None:
        self._wake_pending = False
        if self._deliverer is not None:
            self._deliverer.wake()

    async def stop(self, grace_s: float = 5.0) -> None:
        """Claim nothing more; let sends in flight finish within the grace and record
        them; close the sinks and the store handle; wait for the thread to end."""
        self._grace_s = grace_s
        self._halt.set()
        loop, halted = self._loop, self._halted
        if loop is not None and halted is not None:
            with contextlib.suppress(RuntimeError):  # closed: the thread has ended
                loop.call_soon_threadsafe(halted.set)
        thread = self._thread
        if thread is not None:
            await asyncio.to_thread(thread.join)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except Exception:
            log.exception("the delivery thread failed")
        finally:
            self._loop = None

    async def _serve(self) -> None:
        self._halted = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        if self._halt.is_set():  # stop() came before the loop existed
            self._halted.set()
        await serve(
            self._halted, self._store.sibling, self._make, self._ready, lambda: self._grace_s
        )

    def _ready(self, deliverer: Deliverer | None) -> None:
        self._deliverer = deliverer


async def serve(
    halted: asyncio.Event,
    open_store: Callable[[], Store],
    make: Callable[[Store], Deliverer],
    ready: Callable[[Deliverer | None], None],
    grace_s: Callable[[], float],
) -> None:
    """A deliverer on this loop until ``halted``: its store handle opened (tried again
    while the database is down), the deliverer made and supervised, then stopped within
    the grace and its handle closed. ``ready`` is told the deliverer, then None."""
    store = await _open(halted, open_store)
    if store is None:
        return
    try:
        deliverer = make(store)
        ready(deliverer)
        supervisor = Supervisor()
        supervisor.start(Loop("deliverer", deliverer.run))
        await halted.wait()
        await deliverer.stop(grace_s())
        await supervisor.finish("deliverer")
        await supervisor.stop()
    finally:
        ready(None)
        await store.close()


async def _open(halted: asyncio.Event, open_store: Callable[[], Store]) -> Store | None:
    """A store handle, tried again while the database is down; None when halted first."""
    wait_s = OPEN_RETRY_S
    while not halted.is_set():
        store = open_store()
        try:
            await store.open()
            return store
        except Exception as exc:
            log.warning("delivery: cannot open the store (%s); again in %.1fs", exc, wait_s)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(halted.wait(), wait_s)
        wait_s = min(wait_s * 2, OPEN_RETRY_MAX_S)
    return None


__all__ = ["DeliveryThread", "serve"]
