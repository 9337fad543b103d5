"""freight.streams: a prediction's events derived from its stamps, on the in-memory fakes.

The live tests change the store *between* pulls of the stream, so each pull
sees exactly one new state: no sleeps, and the stream's own poll (``poll_s``)
only decides how soon it looks, never what it sees.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from freight.config import Settings
from freight.errors import NotFoundError
from freight.events import CompletionHub, WorkSignal
from freight.logs import STDOUT, Append, LogLine, Printed, signal_key
from freight.model import Batching, InputKind, Replicas
from freight.prediction import Completion, Prediction, Status
from freight.project import load_pipelines
from freight.registry import ModelSpec
from freight.service import CreateOptions, NewInput, PredictionService
from freight.storage.memory import MemoryStorage
from freight.store import logs as store_logs
from freight.store import streamed as store_streamed
from freight.store.memory import MemoryStore
from freight.streaming import TEXT, Part
from freight.streaming import Append as ChunkAppend
from freight.streaming import signal_key as chunk_key
from freight.streams import Cursor, StreamEvent, events, history

SPEC = ModelSpec(
    name="m",
    ref="models:M",
    input_kind=InputKind.JSON,
    batching=Batching(),
    replicas=Replicas(),
    timeout_s=None,
    max_attempts=None,
)
POLL_S = 0.01
T0 = 1_700_000_000.0
#: a poll so slow that only a completion signal can move a stream on within a test
NEVER_S = 3600.0
#: the longest a test waits for what should come at once (a hang fails, never blocks)
DEADLINE_S = 30.0
#: a for_each step over ELEMENTS items, then a step over all of their outputs
FAN = {
    "steps": {
        "each": {"model": "m", "for_each": "$input.xs", "input": "$item"},
        "total": {"model": "m", "input": "$steps.each.output"},
    },
    "output": "$steps.total.output",
}
ELEMENTS = 50


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No FREIGHT_* variable of the calling shell leaks into the settings."""
    import os

    for name in list(os.environ):
        if name.startswith("FREIGHT_"):
            monkeypatch.delenv(name)


@pytest.fixture
async def store() -> AsyncIterator[MemoryStore]:
    s = MemoryStore()
    await s.open()
    yield s
    await s.close()


@pytest.fixture
async def hub(store: MemoryStore) -> CompletionHub:
    """The hub the store reports its own completions to (a run's advancement), as the
    server wires it."""
    hub = CompletionHub()
    await store.listen(lambda target: None, lambda prediction_id: hub.publish([prediction_id]))
    return hub


@pytest.fixture
def service(tmp_path: Path, store: MemoryStore, hub: CompletionHub) -> PredictionService:
    settings = Settings(project_dir=tmp_path, state_dir=tmp_path / "state")  # type: ignore[call-arg]
    return PredictionService(
        settings,
        {SPEC.name: SPEC},
        store,
        MemoryStorage(),
        signal=WorkSignal(),
        hub=hub,
    )


async def queued(service: PredictionService) -> Prediction:
    return await service.create("m", NewInput(json={"x": 1}, has_json=True), CreateOptions())


async def claim(store: MemoryStore) -> Prediction:
    (row,) = await store.claim("m", 1, worker_id="w", lease_s=60, now=time.time())
    return row


async def succeed(store: MemoryStore, row: Prediction) -> None:
    done = Completion(
        id=row.id,
        attempt=row.attempts,
        worker_id="w",
        status=Status.SUCCEEDED,
        finished_at=time.time(),
        output_json="2",
    )
    assert await store.complete([done]) == [row.id]


async def collect(stream: AsyncIterator[StreamEvent]) -> list[tuple[int, str]]:
    return [(event.id, event.type) async for event in stream]


async def test_a_finished_prediction_replays_its_ladder_and_ends(
    service: PredictionService, store: MemoryStore
) -> None:
    """A done prediction streams queued, running, succeeded (ids 1-3), then the stream ends."""
    row = await queued(service)
    await succeed(store, await claim(store))
    stream = events(service, row.id, poll_s=POLL_S)
    got = [event async for event in stream]
    assert [(e.id, e.type) for e in got] == [(1, "queued"), (2, "running"), (3, "succeeded")]
    assert {e.prediction.status for e in got} == {Status.SUCCEEDED}  # the row as sent
    assert got[-1].final and not got[0].final


async def test_after_resumes_without_repeats(
    service: PredictionService, store: MemoryStore
) -> None:
    """``after`` skips the events up to that id; past the last one nothing is left."""
    row = await queued(service)
    await succeed(store, await claim(store))
    assert await collect(events(service, row.id, 2, poll_s=POLL_S)) == [(3, "succeeded")]
    assert await collect(events(service, row.id, 3, poll_s=POLL_S)) == []


async def test_a_live_prediction_streams_each_change_as_it_happens(
    service: PredictionService, store: MemoryStore
) -> None:
    """Queued now, running once claimed, succeeded once completed: then the stream ends."""
    row = await queued(service)
    stream = events(service, row.id, poll_s=POLL_S)
    first = await anext(stream)
    assert (first.id, first.type, first.prediction.status) == (1, "queued", Status.QUEUED)
    claimed = await claim(store)
    second = await anext(stream)
    assert (second.id, second.type, second.prediction.status) == (2, "running", Status.RUNNING)
    await succeed(store, claimed)
    third = await anext(stream)
    assert (third.id, third.type, third.final) == (3, "succeeded", True)
    with pytest.raises(StopAsyncIteration):
        await anext(stream)


async def test_a_resumed_live_stream_continues_the_same_ids(
    service: PredictionService, store: MemoryStore
) -> None:
    """A second connection after event 1 of a running prediction starts at 2, then goes on."""
    row = await queued(service)
    claimed = await claim(store)
    stream = events(service, row.id, 1, poll_s=POLL_S)
    assert (await anext(stream)).id == 2
    await succeed(store, claimed)
    assert [(e.id, e.type) async for e in stream] == [(3, "succeeded")]


async def test_a_prediction_created_without_input_starts_awaiting_it(
    service: PredictionService,
) -> None:
    """An upload-later prediction's first event is awaiting_input; canceled, it ends there."""
    row = await service.create("m", NewInput(), CreateOptions())
    await service.cancel(row.id)
    assert await collect(events(service, row.id, poll_s=POLL_S)) == [
        (1, "awaiting_input"),
        (2, "canceled"),
    ]


async def test_an_unknown_prediction_is_not_found(service: PredictionService) -> None:
    """The stream of an id that does not exist raises prediction_not_found at once."""
    with pytest.raises(NotFoundError) as caught:
        await anext(events(service, "nope"))
    assert caught.value.code == "prediction_not_found"


async def test_max_s_ends_a_stream_before_the_prediction_ends(
    service: PredictionService,
) -> None:
    """Past ``max_s`` the stream ends after what it had, without a final event."""
    row = await queued(service)
    got = [event async for event in events(service, row.id, poll_s=POLL_S, max_s=0)]
    assert [(e.id, e.type, e.final) for e in got] == [(1, "queued", False)]


def row(id: str, status: Status, *stamps: float | None, **fields: object) -> Prediction:
    """A row with created/queued/started/finished stamps (seconds after T0)."""
    created, queued_at, started, finished = (*stamps, None, None, None, None)[:4]
    at = {
        "created_at": T0 + (created or 0),
        "queued_at": None if queued_at is None else T0 + queued_at,
        "started_at": None if started is None else T0 + started,
        "finished_at": None if finished is None else T0 + finished,
    }
    return Prediction(id=id, target="t", status=status, **at, **fields)  # type: ignore[arg-type]


def test_a_run_streams_its_steps_in_stamp_order_and_ends_last() -> None:
    """A run's own rungs and its steps' ``step.*`` rungs interleave by stamp; a tie keeps
    the run first; for_each elements are left out; the run's end is always last."""
    run = row("r", Status.SUCCEEDED, 0, 0, 0, 3, kind="pipeline")
    a = row("a1", Status.SUCCEEDED, 0, 0, 1, 2, run_id="r", step="a")
    b = row("b1", Status.SUCCEEDED, 0, 2, 2.5, 3, run_id="r", step="b")
    late = row("c1", Status.SKIPPED, 0, None, None, 3, run_id="r", step="c")
    element = row("e1", Status.SUCCEEDED, 0, 0, 1, 2, run_id="r", step="a", item_index=0)
    names = [(t.type, t.row.step) for t in history(run, [late, b, element, a])]
    assert names == [
        ("queued", None),
        ("running", None),
        ("step.queued", "a"),
        ("step.running", "a"),
        ("step.succeeded", "a"),
        ("step.queued", "b"),
        ("step.running", "b"),
        ("step.succeeded", "b"),
        ("step.skipped", "c"),
        ("succeeded", None),
    ]


def test_a_rows_rungs_keep_ladder_order_whatever_its_stamps() -> None:
    """A row stamped out of order (another process's clock) still goes queued -> running
    -> its end; a requeued row that ran before keeps its running rung."""
    skewed = row("p", Status.SUCCEEDED, 0, 5, 1, 2)
    assert [t.type for t in history(skewed)] == ["queued", "running", "succeeded"]
    requeued = row("q", Status.QUEUED, 0, 2, 1, attempts=1)
    assert [t.type for t in history(requeued)] == ["queued", "running"]


# -- live streams woken by completions ----------------------------------------------------


@pytest.fixture
def runs(tmp_path: Path, store: MemoryStore, hub: CompletionHub) -> PredictionService:
    """A service that runs the ``fan`` pipeline over model ``m`` (steps completed by the
    tests, as a worker would)."""
    (tmp_path / "freight.yaml").write_text(yaml.safe_dump({"pipelines": {"fan": FAN}}))
    settings = Settings(project_dir=tmp_path, state_dir=tmp_path / "state")  # type: ignore[call-arg]
    models = {SPEC.name: SPEC}
    return PredictionService(
        settings,
        models,
        store,
        MemoryStorage(),
        signal=WorkSignal(),
        hub=hub,
        pipelines=load_pipelines(tmp_path, models, settings),
    )


async def work(store: MemoryStore, hub: CompletionHub, limit: int) -> list[str]:
    """Claim and complete up to ``limit`` queued rows of ``m`` (output: the input), and
    publish them as the agent's worker does; their ids."""
    now = time.time()
    rows = await store.claim("m", limit, worker_id="w", lease_s=60, now=now)
    done = [
        Completion(
            id=row.id,
            attempt=row.attempts,
            worker_id="w",
            status=Status.SUCCEEDED,
            finished_at=now,
            output_json=row.input_json or "null",
        )
        for row in rows
    ]
    assert await store.complete(done) == [row.id for row in rows]
    hub.publish([row.id for row in rows])
    return [row.id for row in rows]


def counting(calls: list[str], name: str, method: Callable[..., Awaitable[Any]]) -> Any:
    """``method``, recording its name in ``calls`` at each call."""

    async def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(name)
        return await method(*args, **kwargs)

    return counted


async def next_of(stream: AsyncIterator[StreamEvent]) -> tuple[int, str, str | None]:
    """The stream's next event as ``(id, type, step)``, failing past DEADLINE_S."""
    event = await asyncio.wait_for(anext(stream), DEADLINE_S)
    return event.id, event.type, event.prediction.step


async def test_a_completion_wakes_a_live_stream_without_its_poll(
    service: PredictionService, store: MemoryStore, hub: CompletionHub
) -> None:
    """With a poll of an hour, a prediction's end still reaches its stream at once: the
    stream waits on the completion the worker publishes."""
    row = await queued(service)
    claimed = await claim(store)
    stream = events(service, row.id, poll_s=NEVER_S)
    assert [(await next_of(stream))[1] for _ in range(2)] == ["queued", "running"]
    waiting = asyncio.ensure_future(next_of(stream))
    await succeed(store, claimed)
    hub.publish([row.id])  # as the agent does once the completion committed
    assert (await waiting)[:2] == (3, "succeeded")


async def test_a_run_stream_wakes_on_its_steps_completions(
    runs: PredictionService, store: MemoryStore, hub: CompletionHub
) -> None:
    """Followed with a poll of an hour, a run's stream still shows each step as it ends
    (the store's own completions of the run's rows wake it) and ends with the run."""
    run = await runs.create("fan", NewInput(json={"xs": [1, 2, 3]}, has_json=True), CreateOptions())
    stream = events(runs, run.id, poll_s=NEVER_S)
    first = [(await next_of(stream))[1:] for _ in range(3)]
    assert first == [("queued", None), ("running", None), ("step.running", "each")]
    waiting = asyncio.ensure_future(next_of(stream))
    assert len(await work(store, hub, ELEMENTS)) == 3
    assert (await waiting)[1:] == ("step.succeeded", "each")
    assert (await next_of(stream))[1:] == ("step.queued", "total")
    waiting = asyncio.ensure_future(next_of(stream))
    assert len(await work(store, hub, 1)) == 1
    rest = [(await waiting)[1:]] + [(e.type, e.prediction.step) async for e in stream]
    assert rest == [
        ("step.running", "total"),
        ("step.succeeded", "total"),
        ("succeeded", None),
    ]


async def test_a_followed_run_reads_its_elements_once(
    runs: PredictionService, store: MemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a run with a large for_each step is followed, each poll reads the run and its
    step heads (one statement: a snapshot): its elements are never read, however many
    polls go by."""
    xs = list(range(ELEMENTS))
    run = await runs.create("fan", NewInput(json={"xs": xs}, has_json=True), CreateOptions())
    calls: list[str] = []
    polls = 5
    polled = asyncio.Event()
    get = store.get

    async def get_counted(prediction_id: str) -> Prediction | None:
        calls.append("get")
        if calls.count("get") > polls:  # the run, each poll
            polled.set()
        return await get(prediction_id)

    steps = store.steps

    async def steps_counted(run_id: str, *, heads: bool = False) -> list[Prediction]:
        calls.append("heads" if heads else "steps")
        return await steps(run_id, heads=heads)

    monkeypatch.setattr(store, "get", get_counted)
    monkeypatch.setattr(store, "steps", steps_counted)
    stream = events(runs, run.id, poll_s=POLL_S)
    assert [(await next_of(stream))[1] for _ in range(3)][-1] == "step.running"
    quiet = asyncio.ensure_future(anext(stream))  # nothing changes: the stream only polls
    await asyncio.wait_for(polled.wait(), DEADLINE_S)
    quiet.cancel()
    assert calls.count("steps") == 0 and calls.count("heads") >= polls


async def printed(store: MemoryStore, row: Prediction, *texts: str) -> list[int]:
    """Append lines to ``row``'s log as the agent's LogWriter does; their seqs."""
    lines = tuple(Printed(time.time(), STDOUT, text) for text in texts)
    appended = await store.execute(
        lambda: store_logs.append([Append(row.id, row.attempts, lines)], 64 * 1024)
    )
    return [line.seq for line in appended]


def shown(got: list[StreamEvent]) -> list[tuple[str, str, str | None]]:
    """Each event as ``(id on the wire, type, line text)``."""
    return [(str(e.cursor), e.type, None if e.line is None else e.line.text) for e in got]


async def test_lines_stream_between_running_and_the_end_with_pair_ids(
    service: PredictionService, store: MemoryStore
) -> None:
    """A prediction's lines are log events after its running event and before its end;
    an id carries the rungs sent and, once a line was sent, that line's seq."""
    row = await queued(service)
    claimed = await claim(store)
    assert await printed(store, claimed, "one", "two") == [1, 2]
    await succeed(store, claimed)
    got = [event async for event in events(service, row.id, logs=True, poll_s=POLL_S)]
    assert shown(got) == [
        ("1", "queued", None),
        ("2", "running", None),
        ("2-1", "log", "one"),
        ("2-2", "log", "two"),
        ("3-2", "succeeded", None),
    ]
    assert got[-1].final and not got[2].final
    plain = [str(e.cursor) async for e in events(service, row.id, poll_s=POLL_S)]
    assert plain == ["1", "2", "3"]  # without logs: the ids as before lines existed


async def test_resuming_after_a_line_sends_the_later_lines_once(
    service: PredictionService, store: MemoryStore
) -> None:
    """After ``2-1`` come line 2 and the end; after ``2`` (a client that never saw a
    line) every line; after the end, nothing."""
    row = await queued(service)
    claimed = await claim(store)
    await printed(store, claimed, "one", "two")
    await succeed(store, claimed)

    async def resumed(after: str) -> list[tuple[str, str, str | None]]:
        stream = events(service, row.id, Cursor.parse(after), logs=True, poll_s=POLL_S)
        return shown([event async for event in stream])

    assert await resumed("2-1") == [("2-2", "log", "two"), ("3-2", "succeeded", None)]
    assert [e[0] for e in await resumed("2")] == ["2-1", "2-2", "3-2"]
    assert await resumed("3-2") == []


async def test_a_live_stream_wakes_for_lines_without_its_poll(
    service: PredictionService, store: MemoryStore, hub: CompletionHub
) -> None:
    """With a poll of an hour, a running prediction's new lines reach its stream as soon
    as the writer publishes their key; its end still comes after the last line."""
    row = await queued(service)
    claimed = await claim(store)
    stream = events(service, row.id, logs=True, poll_s=NEVER_S)
    assert [(await next_of(stream))[1] for _ in range(2)] == ["queued", "running"]
    waiting = asyncio.ensure_future(anext(stream))
    await printed(store, claimed, "hello")
    hub.publish([signal_key(row.id)])  # as the LogWriter does once the lines committed
    line = await asyncio.wait_for(waiting, DEADLINE_S)
    assert (str(line.cursor), line.type, line.line and line.line.text) == ("2-1", "log", "hello")
    waiting = asyncio.ensure_future(anext(stream))
    await printed(store, claimed, "bye")
    await succeed(store, claimed)
    hub.publish([row.id])  # the end alone: the lines are read after the row
    rest = [await asyncio.wait_for(waiting, DEADLINE_S)] + [e async for e in stream]
    assert shown(rest) == [("2-2", "log", "bye"), ("3-2", "succeeded", None)]


async def test_a_stream_reads_no_lines_before_its_prediction_runs(
    service: PredictionService, store: MemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a prediction is queued its stream reads no lines at all; once it runs, one
    read per look (a page of lines after the last seq sent)."""
    reads: list[int] = []
    lines = service.lines

    async def counted(prediction_id: str, *, after: int, limit: int) -> list[LogLine]:
        reads.append(after)
        return await lines(prediction_id, after=after, limit=limit)

    monkeypatch.setattr(service, "lines", counted)
    row = await queued(service)
    got = [e async for e in events(service, row.id, logs=True, poll_s=POLL_S, max_s=0)]
    assert [e.type for e in got] == ["queued"] and reads == []
    claimed = await claim(store)
    await printed(store, claimed, "one")
    got = [e async for e in events(service, row.id, logs=True, poll_s=POLL_S, max_s=0)]
    assert [e.type for e in got] == ["queued", "running", "log"] and reads == [0]


def test_a_cursor_is_written_as_it_is_read() -> None:
    """``3``, ``3-17`` and (a chunk sent) ``3-17-5``, ``3-0-5`` round-trip; anything else
    is not an id."""
    assert (Cursor.parse("3"), Cursor.parse("3-17")) == (Cursor(3), Cursor(3, 17))
    assert [str(Cursor(3)), str(Cursor(3, 17))] == ["3", "3-17"]
    assert (Cursor.parse("3-17-5"), Cursor.parse("3-0-5")) == (Cursor(3, 17, 5), Cursor(3, 0, 5))
    assert [str(Cursor(3, 17, 5)), str(Cursor(3, 0, 5))] == ["3-17-5", "3-0-5"]
    for bad in ("", "-1", "3-", "3.0", "a-1", "3-1-", "3--2", "3-1-2-4"):
        with pytest.raises(ValueError):
            Cursor.parse(bad)


async def yielded(store: MemoryStore, row: Prediction, *texts: str) -> list[int]:
    """Append chunks to ``row`` as the agent's StreamWriter does; their seqs."""
    parts = tuple(Part(time.time(), TEXT, text) for text in texts)
    appended = await store.execute(
        lambda: store_streamed.append([ChunkAppend(row.id, row.attempts, parts)])
    )
    return [chunk.seq for chunk in appended]


def chunked(got: list[StreamEvent]) -> list[tuple[str, str, str | None]]:
    """Each event as ``(id on the wire, type, line or chunk text)``."""
    return [
        (
            str(e.cursor),
            e.type,
            e.line.text if e.line is not None else e.chunk.data if e.chunk is not None else None,
        )
        for e in got
    ]


async def test_chunks_stream_after_the_lines_of_each_look_and_before_the_end(
    service: PredictionService, store: MemoryStore
) -> None:
    """A streaming prediction's chunks are chunk events before its end, after the lines
    read in the same look; an id carries the last chunk's seq as a third count once a
    chunk was sent; resuming after a chunk sends the later ones once; a stream that did
    not ask for chunks has the ids it had before chunks existed."""
    row = await queued(service)
    claimed = await claim(store)
    assert await yielded(store, claimed, "a", "b") == [1, 2]
    await printed(store, claimed, "said")
    assert await yielded(store, claimed, "c") == [3]
    await succeed(store, claimed)
    got = [e async for e in events(service, row.id, logs=True, chunks=True, poll_s=POLL_S)]
    assert chunked(got) == [
        ("1", "queued", None),
        ("2", "running", None),
        ("2-1", "log", "said"),
        ("2-1-1", "chunk", "a"),
        ("2-1-2", "chunk", "b"),
        ("2-1-3", "chunk", "c"),
        ("3-1-3", "succeeded", None),
    ]
    assert got[-1].final and not any(e.final for e in got[:-1])

    async def resumed(after: str, **asked: bool) -> list[tuple[str, str, str | None]]:
        stream = events(service, row.id, Cursor.parse(after), poll_s=POLL_S, **asked)
        return chunked([event async for event in stream])

    assert await resumed("2-0-2", chunks=True) == [
        ("2-0-3", "chunk", "c"),
        ("3-0-3", "succeeded", None),
    ]
    assert [e[0] for e in await resumed("2", chunks=True)] == ["2-0-1", "2-0-2", "2-0-3", "3-0-3"]
    assert [e[0] for e in await resumed("0")] == ["1", "2", "3"]


async def test_a_live_stream_wakes_for_chunks_without_its_poll(
    service: PredictionService, store: MemoryStore, hub: CompletionHub
) -> None:
    """With a poll of an hour, a running prediction's new chunk reaches its stream as soon
    as the writer publishes its key; its end still comes after the last chunk."""
    row = await queued(service)
    claimed = await claim(store)
    stream = events(service, row.id, chunks=True, poll_s=NEVER_S)
    assert [(await next_of(stream))[1] for _ in range(2)] == ["queued", "running"]
    waiting = asyncio.ensure_future(anext(stream))
    await yielded(store, claimed, "first")
    hub.publish([chunk_key(row.id)])  # as the StreamWriter does once the chunks committed
    chunk = await asyncio.wait_for(waiting, DEADLINE_S)
    assert chunked([chunk]) == [("2-0-1", "chunk", "first")]
    waiting = asyncio.ensure_future(anext(stream))
    await yielded(store, claimed, "last")
    await succeed(store, claimed)
    hub.publish([row.id])  # the end alone: the chunks are read after the row
    rest = [await asyncio.wait_for(waiting, DEADLINE_S)] + [e async for e in stream]
    assert chunked(rest) == [("2-0-2", "chunk", "last"), ("3-0-2", "succeeded", None)]


async def test_a_chunk_lands_only_while_its_attempt_runs(
    service: PredictionService, store: MemoryStore
) -> None:
    """A chunk of an attempt that is no longer running (canceled meanwhile, or a stale
    attempt) is dropped by the store: never shown after the stream's end."""
    row = await queued(service)
    claimed = await claim(store)
    await yielded(store, claimed, "kept")
    stale = dataclasses.replace(claimed, attempts=claimed.attempts + 1)
    await yielded(store, stale, "stale")
    await service.cancel(row.id)
    await yielded(store, claimed, "late")
    got = [e async for e in events(service, row.id, chunks=True, poll_s=POLL_S)]
    assert chunked(got)[-2:] == [("2-0-1", "chunk", "kept"), ("3-0-1", "canceled", None)]
