"""The deliverer on its own thread: its own event loop and store handle, woken from
the API's loop, stopped cleanly with sends in flight.

On the in-memory store (SQLite in a temporary directory: the thread opens a second
handle on the same file) with a sink that records where and what it was sent; no
sockets. Every wait has a deadline; none is a sleep.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from freight.agent.delivery import Deliverer
from freight.agent.delivery_thread import DeliveryThread
from freight.deliveries import DeliveryStatus, OutboxRow
from freight.ids import new_id
from freight.notify.event import Event, Outcome
from freight.notify.signing import WebhookSecrets
from freight.notify.sinks.base import Sink, Subscription
from freight.prediction import Completion, Prediction, Status
from freight.store import Store
from freight.store.memory import MemoryStore
from freight.store.sqlite import SqliteStore

DEADLINE_S = 30.0
LEASE_S = 60.0


@dataclass
class Recorder:
    """The sink's side of the test: what was sent, from which thread; ``hold`` keeps
    each send waiting on ``gate`` (an event of the thread's loop: :meth:`release`)."""

    hold: bool = False
    sent: list[tuple[str, int]] = field(default_factory=list)  # (event id, thread id)
    entered: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    closed: bool = False
    loop: asyncio.AbstractEventLoop | None = None
    gate: asyncio.Event | None = None

    def release(self) -> None:
        """From the test's loop: let the held send answer."""
        assert self.loop is not None and self.gate is not None
        self.loop.call_soon_threadsafe(self.gate.set)


class RecordingSink:
    name = "rec"
    type = "recording"
    subscription = Subscription()

    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder

    async def open(self) -> None:
        return None

    async def send(self, event: Event) -> Outcome:
        recorder = self._recorder
        if recorder.hold:
            recorder.loop, recorder.gate = asyncio.get_running_loop(), asyncio.Event()
        recorder.entered.set()
        if recorder.gate is not None:
            await recorder.gate.wait()  # never released: cancelled with the thread's loop
        recorder.sent.append((event.id, threading.get_ident()))
        recorder.done.set()
        return Outcome.ok(204)

    async def close(self) -> None:
        return None


class RecordingSinks:
    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder

    def __call__(self, entry: dict[str, Any], secrets: WebhookSecrets) -> Sink:
        return RecordingSink(self._recorder)

    async def aclose(self) -> None:
        self._recorder.closed = True


class WatchedStore(SqliteStore):
    """The thread's handle: says when a claim found nothing (the deliverer sleeps next)."""

    def __init__(self, path: str, idle: threading.Event) -> None:
        super().__init__(path)
        self.idle = idle

    async def claim_deliveries(
        self, limit: int, *, worker_id: str, lease_s: float, now: float
    ) -> list[OutboxRow]:
        rows = await super().claim_deliveries(limit, worker_id=worker_id, lease_s=lease_s, now=now)
        if not rows:
            self.idle.set()
        return rows


class MainStore(MemoryStore):
    """The API's store: its sibling is watched."""

    def __init__(self) -> None:
        super().__init__()
        self.idle = threading.Event()

    def sibling(self) -> SqliteStore:
        return WatchedStore(self.path, self.idle)


@pytest.fixture
async def store() -> AsyncIterator[MainStore]:
    s = MainStore()
    await s.open()
    yield s
    await s.close()


def delivery_thread(store: Store, recorder: Recorder) -> DeliveryThread:
    def make(own: Store) -> Deliverer:
        return Deliverer(own, RecordingSinks(recorder), worker_id="w", lease_s=LEASE_S)

    return DeliveryThread(store, make)


async def completed(store: Store) -> Prediction:
    """A prediction with one subscription to ``completed``, run and succeeded: its
    outbox row is written and due."""
    now = time.time()
    p = Prediction(
        id=new_id(),
        target="m",
        status=Status.QUEUED,
        created_at=now,
        queued_at=now,
        notify=orjson.dumps([{"sink": "rec", "events": ["completed"]}]).decode(),
    )
    await store.create(p)
    assert len(await store.claim("m", 1, worker_id="runner", lease_s=30, now=now)) == 1
    done = Completion(
        id=p.id, attempt=1, worker_id="runner", status=Status.SUCCEEDED, finished_at=now
    )
    assert await store.complete([done]) == [p.id]
    return p


async def waited(event: threading.Event) -> None:
    assert await asyncio.to_thread(event.wait, DEADLINE_S), "not within the deadline"


async def status_of(store: Store, prediction_id: str) -> DeliveryStatus:
    (row,), _ = await store.deliveries(prediction_id)
    return row.status


async def test_deliveries_are_made_on_the_deliverers_own_thread(store: MainStore) -> None:
    """The event is sent from the delivery thread, not from the loop that woke it, and
    recorded as delivered through the thread's own store handle."""
    recorder = Recorder()
    thread = delivery_thread(store, recorder)
    p = await completed(store)
    thread.start()
    thread.wake()
    try:
        await waited(recorder.done)
        sender = thread.ident
    finally:
        await thread.stop()
    ((event_id, ident),) = recorder.sent
    assert event_id == f"{p.id}:completed:1"
    assert ident == sender and ident != threading.get_ident()
    assert await status_of(store, p.id) == DeliveryStatus.DELIVERED
    assert recorder.closed and thread.ident is None


async def test_a_wake_reaches_a_deliverer_asleep_on_its_own_loop(store: MainStore) -> None:
    """An event written after the deliverer found nothing to do is sent once the API's
    loop wakes it (its poll is made an hour: only the wake-up can bring it)."""
    recorder = Recorder()

    def make(own: Store) -> Deliverer:
        return Deliverer(own, RecordingSinks(recorder), worker_id="w", poll_s=3600.0)

    thread = DeliveryThread(store, make)
    thread.start()
    try:
        await waited(store.idle)  # claimed nothing: asleep until woken
        p = await completed(store)
        thread.wake()
        await waited(recorder.done)
    finally:
        await thread.stop()
    assert [event_id for event_id, _ in recorder.sent] == [f"{p.id}:completed:1"]


async def test_stop_waits_for_a_send_in_flight_and_records_it(store: MainStore) -> None:
    """Stopped while a send is in flight, the thread lets it finish within the grace,
    records it delivered, then ends."""
    recorder = Recorder(hold=True)
    thread = delivery_thread(store, recorder)
    p = await completed(store)
    thread.start()
    await waited(recorder.entered)
    stopping = asyncio.create_task(thread.stop(grace_s=DEADLINE_S))
    await asyncio.sleep(0)  # a yield: stop() has asked the thread to stop
    recorder.release()
    await asyncio.wait_for(stopping, DEADLINE_S)
    assert len(recorder.sent) == 1 and thread.ident is None
    assert await status_of(store, p.id) == DeliveryStatus.DELIVERED


async def test_a_send_past_the_grace_is_left_leased_and_sent_again_later(
    store: MainStore,
) -> None:
    """A send that outlasts the grace does not hold the shutdown: the thread ends, the
    row stays leased to it, and once the lease has expired another worker claims it."""
    recorder = Recorder(hold=True)  # never released
    thread = delivery_thread(store, recorder)
    p = await completed(store)
    thread.start()
    await waited(recorder.entered)
    await asyncio.wait_for(thread.stop(grace_s=0.1), DEADLINE_S)
    assert thread.ident is None and recorder.sent == []
    assert await status_of(store, p.id) == DeliveryStatus.SENDING
    later = time.time() + LEASE_S + 1
    (again,) = await store.claim_deliveries(10, worker_id="other", lease_s=30, now=later)
    assert (again.prediction_id, again.attempts) == (p.id, 2)


async def test_stop_before_the_thread_ran_ends_it(store: MainStore) -> None:
    """Asked to stop at once, the thread ends without delivering or hanging."""
    recorder = Recorder()
    thread = delivery_thread(store, recorder)
    thread.start()
    await asyncio.wait_for(thread.stop(), DEADLINE_S)
    assert thread.ident is None
