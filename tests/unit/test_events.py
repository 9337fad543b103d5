"""freight.events: in-process wake-ups for claim loops and waiters."""

from __future__ import annotations

import asyncio

import pytest

from freight.events import CompletionHub, WorkSignal


async def test_notify_before_wait_returns_at_once() -> None:
    """A notification sent before wait() is not lost: wait returns without a timeout."""
    signal = WorkSignal()
    signal.notify("echo")
    await asyncio.wait_for(signal.wait("echo", timeout_s=60), 5)


async def test_wait_rearms_after_waking() -> None:
    """After one wake-up the event is cleared: the next wait runs to its timeout."""
    signal = WorkSignal()
    signal.notify("echo")
    await signal.wait("echo", timeout_s=60)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await signal.wait("echo", timeout_s=0.05)
    assert loop.time() - started >= 0.04


async def test_notify_wakes_a_waiter_and_only_its_target() -> None:
    """notify(target) wakes that target's waiter; other targets stay asleep."""
    signal = WorkSignal()
    echo = asyncio.create_task(signal.wait("echo", timeout_s=60), name="wait-echo")
    other = asyncio.create_task(signal.wait("other", timeout_s=60), name="wait-other")
    signal.notify("echo")
    await asyncio.wait_for(echo, 5)
    assert not other.done()
    signal.notify_all()
    await asyncio.wait_for(other, 5)


async def test_wait_times_out_quietly() -> None:
    """Without a notification, wait returns after its timeout without raising."""
    await WorkSignal().wait("idle", timeout_s=0.01)


async def test_publish_resolves_subscribers() -> None:
    """Every future subscribed to an id resolves when the id is published."""
    hub = CompletionHub()
    first, second = hub.subscribe("p1"), hub.subscribe("p1")
    other = hub.subscribe("p2")
    hub.publish(["p1"])
    assert first.done() and second.done()
    assert not other.done()
    await asyncio.wait_for(first, 1)
    hub.unsubscribe("p2", other)


async def test_publish_before_subscribe_is_not_remembered() -> None:
    """A publish with no subscriber is dropped: callers subscribe before reading the row."""
    hub = CompletionHub()
    hub.publish(["p1"])
    future = hub.subscribe("p1")
    assert not future.done()
    hub.publish(["p1"])
    assert future.done()


async def test_waiting_times_out_and_unsubscribe_cleans_up() -> None:
    """A waiter that times out unsubscribes, leaving no entry behind."""
    hub = CompletionHub()
    future = hub.subscribe("p1")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.shield(future), 0.01)
    hub.unsubscribe("p1", future)
    assert hub._waiters == {}
    hub.unsubscribe("p1", future)  # twice is harmless
    hub.unsubscribe("never", future)


async def test_unsubscribe_keeps_other_subscribers() -> None:
    """Removing one subscriber leaves the others of the same id to be resolved."""
    hub = CompletionHub()
    gone, kept = hub.subscribe("p1"), hub.subscribe("p1")
    hub.unsubscribe("p1", gone)
    hub.publish(["p1"])
    assert kept.done() and not gone.done()


async def test_publish_skips_cancelled_futures() -> None:
    """A subscriber cancelled by its own timeout does not break publishing to others."""
    hub = CompletionHub()
    cancelled, live = hub.subscribe("p1"), hub.subscribe("p1")
    cancelled.cancel()
    hub.publish(["p1"])
    assert live.done() and not live.cancelled()
    assert hub._waiters == {}


async def test_a_watch_wakes_on_any_of_its_ids_and_names_them() -> None:
    """A watch of several ids returns as soon as one is published, with the ids published."""
    hub = CompletionHub()
    with hub.watch(["a", "b", "c"]) as watch:
        waiting = asyncio.ensure_future(watch.wait(60))
        hub.publish(["b", "other"])
        assert await asyncio.wait_for(waiting, 5) == {"b"}
    assert hub._waiters == {}


async def test_a_watch_keeps_what_was_published_before_its_wait() -> None:
    """Made before the reads it guards, a watch remembers a publish that lands between the
    read and the wait: the wait returns at once."""
    hub = CompletionHub()
    watch = hub.watch(["a"])
    hub.publish(["a"])  # between the read and the wait
    assert await asyncio.wait_for(watch.wait(60), 5) == {"a"}
    watch.close()


async def test_a_watch_times_out_empty_and_grows() -> None:
    """Without a publish the wait ends at its timeout with nothing; ids added later are
    watched too, and those already watched keep their subscription."""
    hub = CompletionHub()
    with hub.watch(["a"]) as watch:
        assert await watch.wait(0.01) == set()
        watch.add(["a", "b"])
        assert len(hub._waiters["a"]) == 1
        hub.publish(["b"])
        assert await watch.wait(60) == {"b"}
    assert hub._waiters == {}
    with hub.watch([]) as nothing:
        assert await nothing.wait(0.01) == set()
