"""PredictionService rules that span store and storage, on the in-memory fakes.

No sockets, files or subprocesses: MemoryStore and MemoryStorage pass the same
contract suites as the real backends, so what holds here holds there. Races
are staged with events inside the upload streams, never with sleeps. Only the
service's public methods are used.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from freight.api.errors import status_of
from freight.config import Settings
from freight.errors import (
    ConflictError,
    NotFoundError,
    PayloadTooLargeError,
    QueueFullError,
    StoreUnavailableError,
)
from freight.events import CompletionHub, WorkSignal
from freight.keys import input_key, is_own_input
from freight.model import Batching, InputKind, Replicas
from freight.prediction import Completion, Prediction, Status
from freight.registry import ModelSpec
from freight.service import CreateOptions, NewInput, PredictionService
from freight.storage.memory import MemoryStorage
from freight.store.memory import MemoryStore

#: a liveness guard for awaits that must finish: a hang fails, never a slow pass
LIVENESS_S = 30.0
SPEC = ModelSpec(
    name="m",
    ref="models:M",
    input_kind=InputKind.BYTES,
    batching=Batching(),
    replicas=Replicas(),
    timeout_s=None,
    max_attempts=None,
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No FREIGHT_* variable of the calling shell leaks into the settings."""
    import os

    for name in list(os.environ):
        if name.startswith("FREIGHT_"):
            monkeypatch.delenv(name)


def settings_for(tmp_path: Path, **overrides: object) -> Settings:
    """Settings whose polling never fires within a test: only the hub wakes waiters."""
    values: dict[str, object] = {
        "project_dir": tmp_path,
        "state_dir": tmp_path / "state",
        "poll_interval_s": 3600.0,
        "max_wait_s": 3600.0,
    }
    return Settings(**(values | overrides))  # type: ignore[arg-type]


@pytest.fixture
async def store() -> AsyncIterator[MemoryStore]:
    s = MemoryStore()
    await s.open()
    yield s
    await s.close()


@pytest.fixture
def storage() -> MemoryStorage:
    return MemoryStorage()


@pytest.fixture
def hub() -> CompletionHub:
    return CompletionHub()


def make_service(
    tmp_path: Path,
    store: MemoryStore,
    storage: MemoryStorage,
    *,
    hub: CompletionHub | None = None,
    interrupt: Callable[[str], Awaitable[None]] | None = None,
    **settings: object,
) -> PredictionService:
    return PredictionService(
        settings_for(tmp_path, **settings),
        {SPEC.name: SPEC},
        store,
        storage,
        signal=WorkSignal(),
        hub=hub or CompletionHub(),
        interrupt=interrupt,
    )


@pytest.fixture
def service(
    tmp_path: Path, store: MemoryStore, storage: MemoryStorage, hub: CompletionHub
) -> PredictionService:
    return make_service(tmp_path, store, storage, hub=hub)


def json_input(value: object) -> NewInput:
    return NewInput(json=value, has_json=True)


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def awaiting(service: PredictionService) -> Prediction:
    """A prediction created without input: it waits for an upload."""
    row = await service.create("m", NewInput(), CreateOptions())
    assert row.status is Status.AWAITING_INPUT
    return row


async def finish(store: MemoryStore, row: Prediction) -> None:
    """Run ``row`` to success through the store, as a worker would."""
    (claimed,) = await store.claim(row.target, 1, worker_id="w", lease_s=60, now=time.time())
    assert claimed.id == row.id
    done = Completion(
        id=row.id,
        attempt=claimed.attempts,
        worker_id="w",
        status=Status.SUCCEEDED,
        finished_at=time.time(),
        output_json="1",
    )
    assert await store.complete([done]) == [row.id]


class FailingCreateStore(MemoryStore):
    """A store whose row insert always fails (the database went away mid-request)."""

    async def create(self, prediction: Prediction) -> tuple[Prediction, bool]:
        raise StoreUnavailableError("the database went away")


class CommitThenFailStore(MemoryStore):
    """A store whose insert commits, then the connection drops before the answer."""

    async def create(self, prediction: Prediction) -> tuple[Prediction, bool]:
        await super().create(prediction)
        raise StoreUnavailableError("connection lost after COMMIT")


class ReadHookStore(MemoryStore):
    """A store that tells a test each time a prediction has been read."""

    def __init__(self) -> None:
        super().__init__()
        self.read = asyncio.Event()

    async def get(self, prediction_id: str) -> Prediction | None:
        row = await super().get(prediction_id)
        self.read.set()
        return row


# -- create ----------------------------------------------------------------------


async def test_create_json_writes_input_then_queues(
    service: PredictionService, storage: MemoryStorage
) -> None:
    """A JSON create stores the input object under the prediction's id and queues the row."""
    row = await service.create("m", json_input({"x": 1}), CreateOptions(priority=3))
    assert (row.status, row.priority, row.input_key) == (Status.QUEUED, 3, input_key(row.id))
    assert (row.input_json, row.input_bytes) == ('{"x":1}', 7)
    assert await storage.get(input_key(row.id)) == b'{"x":1}'
    assert await service.get(row.id) == row


@pytest.mark.parametrize("kind", ["json", "stream"])
async def test_create_rollback_deletes_input_when_insert_fails(
    tmp_path: Path, storage: MemoryStorage, kind: str
) -> None:
    """When the row insert fails, the input object written before it is deleted."""
    store = FailingCreateStore()
    await store.open()
    service = make_service(tmp_path, store, storage)
    new_input = (
        json_input({"x": 1})
        if kind == "json"
        else NewInput(data=chunks(b"a" * 10, b"b" * 10), content_type="text/plain")
    )
    with pytest.raises(StoreUnavailableError):
        await service.create("m", new_input, CreateOptions())
    assert storage.keys() == []


async def test_create_rollback_keeps_input_of_a_row_that_was_committed(
    tmp_path: Path, storage: MemoryStorage
) -> None:
    """When the insert fails ambiguously but the row exists, its input object is kept."""
    store = CommitThenFailStore()
    await store.open()
    service = make_service(tmp_path, store, storage)
    with pytest.raises(StoreUnavailableError):
        await service.create("m", json_input({"x": 1}), CreateOptions())
    (row,) = await store.list()
    assert row.input_key is not None
    assert await storage.stat(row.input_key) is not None


async def test_failed_create_keeps_the_callers_input_uri_object(
    tmp_path: Path, storage: MemoryStorage
) -> None:
    """A create naming the caller's object by URI never deletes it, even on rollback."""
    await storage.put("caller/data.csv", b"a,b\n", content_type="text/csv")
    store = FailingCreateStore()
    await store.open()
    service = make_service(tmp_path, store, storage)
    with pytest.raises(StoreUnavailableError):
        await service.create("m", NewInput(uri="freight://caller/data.csv"), CreateOptions())
    assert storage.keys() == ["caller/data.csv"]


async def test_create_by_uri_reads_the_object_in_place(
    service: PredictionService, storage: MemoryStorage
) -> None:
    """An input_uri create points the row at the caller's object and copies nothing."""
    await storage.put("caller/data.csv", b"a,b\n", content_type="text/csv")
    row = await service.create("m", NewInput(uri="memory:///caller/data.csv"), CreateOptions())
    assert (row.input_key, row.input_bytes, row.input_content_type) == (
        "caller/data.csv",
        4,
        "text/csv",
    )
    assert storage.keys() == ["caller/data.csv"]


async def test_create_by_missing_uri_is_not_found(service: PredictionService) -> None:
    """An input_uri naming no object is input_not_found, and no row is created."""
    with pytest.raises(NotFoundError) as info:
        await service.create("m", NewInput(uri="freight://nope"), CreateOptions())
    assert info.value.code == "input_not_found"
    assert await service.list(target=None, status=None, after_id=None, limit=10) == []


async def test_idempotent_replay_returns_original_and_deletes_duplicate_input(
    service: PredictionService, storage: MemoryStorage
) -> None:
    """A replay with the same key and hash returns the first prediction; its own input
    object is deleted and the original's kept."""
    options = CreateOptions(idempotency_key="k", request_hash="h")
    first = await service.create("m", json_input({"x": 1}), options)
    again = await service.create("m", json_input({"x": 1}), options)
    assert again.id == first.id
    assert storage.keys() == [input_key(first.id)]


async def test_idempotency_conflict_leaves_no_input(
    service: PredictionService, storage: MemoryStorage
) -> None:
    """A reused key with another request is idempotency_conflict; its input is deleted."""
    first = await service.create(
        "m", json_input(1), CreateOptions(idempotency_key="k", request_hash="h")
    )
    with pytest.raises(ConflictError) as info:
        await service.create(
            "m", json_input(2), CreateOptions(idempotency_key="k", request_hash="other")
        )
    assert info.value.code == "idempotency_conflict"
    assert storage.keys() == [input_key(first.id)]


async def test_queue_full_is_429_and_writes_nothing(
    tmp_path: Path, store: MemoryStore, storage: MemoryStorage
) -> None:
    """Past max_queued_per_model a create raises QueueFullError (429, Retry-After) before
    writing its input."""
    service = make_service(tmp_path, store, storage, max_queued_per_model=2)
    kept = [await service.create("m", json_input(i), CreateOptions()) for i in range(2)]
    with pytest.raises(QueueFullError) as info:
        await service.create("m", json_input(3), CreateOptions())
    assert status_of(info.value) == 429
    assert info.value.retry_after_s >= 1
    assert storage.keys() == sorted(input_key(r.id) for r in kept)


async def test_create_unknown_model_is_not_found(service: PredictionService) -> None:
    """A create for a model that is not served is unknown_target."""
    with pytest.raises(NotFoundError) as info:
        await service.create("nope", json_input(1), CreateOptions())
    assert info.value.code == "unknown_target"


async def test_oversized_stream_leaves_no_row_and_no_object(
    tmp_path: Path, store: MemoryStore, storage: MemoryStorage
) -> None:
    """A streamed input over max_payload_bytes is 413 with neither object nor row left."""
    service = make_service(tmp_path, store, storage, max_payload_bytes=8)
    with pytest.raises(PayloadTooLargeError):
        await service.create("m", NewInput(data=chunks(b"12345", b"6789")), CreateOptions())
    assert storage.keys() == []
    assert await store.list() == []


# -- upload ----------------------------------------------------------------------


async def test_upload_queues_awaiting_prediction(
    service: PredictionService, storage: MemoryStorage
) -> None:
    """An upload lands the object, then queues the prediction with its size and type."""
    row = await awaiting(service)
    assert row.upload_expires_at is not None
    queued = await service.upload(row.id, chunks(b"ab", b"cd"), "text/csv")
    assert queued.status == Status.QUEUED and queued.input_key is not None
    assert is_own_input(row.id, queued.input_key)
    assert (queued.input_bytes, queued.input_content_type) == (4, "text/csv")
    assert await storage.get(queued.input_key) == b"abcd"


async def test_upload_to_prediction_not_awaiting_input_is_conflict(
    service: PredictionService, storage: MemoryStorage
) -> None:
    """An upload to a queued prediction is invalid_state and its body is never read."""
    row = await service.create("m", json_input(1), CreateOptions())
    consumed = False

    async def body() -> AsyncIterator[bytes]:
        nonlocal consumed
        consumed = True
        yield b"x"

    with pytest.raises(ConflictError) as info:
        await service.upload(row.id, body(), "text/plain")
    assert info.value.code == "invalid_state"
    assert not consumed
    assert await storage.get(input_key(row.id)) == b"1"


async def test_upload_to_unknown_prediction_is_not_found(service: PredictionService) -> None:
    """An upload to an unknown id is prediction_not_found."""
    with pytest.raises(NotFoundError) as info:
        await service.upload("nope", chunks(b"x"), "text/plain")
    assert info.value.code == "prediction_not_found"


async def gated(data: bytes, started: asyncio.Event, gate: asyncio.Event) -> AsyncIterator[bytes]:
    """An upload body that says it is being read, then waits for ``gate`` to send."""
    started.set()
    await gate.wait()
    yield data


async def race(service: PredictionService) -> tuple[Prediction, Prediction, BaseException]:
    """Two uploads to one prediction, both past the status check before either lands;
    the first to land wins. Returns the row created, the winner's result, the loser's error."""
    row = await awaiting(service)
    started = [asyncio.Event(), asyncio.Event()]
    gates = [asyncio.Event(), asyncio.Event()]
    bodies = [b"winner's bytes", b"loser"]
    tasks = [
        asyncio.create_task(service.upload(row.id, gated(bodies[i], started[i], gates[i]), t))
        for i, t in enumerate(["text/plain", "application/octet-stream"])
    ]
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), LIVENESS_S)
    gates[0].set()
    won = await asyncio.wait_for(tasks[0], LIVENESS_S)
    gates[1].set()
    lost = await asyncio.wait_for(asyncio.gather(tasks[1], return_exceptions=True), LIVENESS_S)
    assert isinstance(lost[0], BaseException)
    return row, won, lost[0]


async def test_upload_race_loser_does_not_delete_winners_input(
    service: PredictionService, storage: MemoryStorage
) -> None:
    """Of two concurrent uploads one queues the prediction; the other is invalid_state
    and leaves the winner's input object in place."""
    row, won, error = await race(service)
    assert isinstance(error, ConflictError) and error.code == "invalid_state"
    assert (won.status, won.input_bytes) == (Status.QUEUED, len(b"winner's bytes"))
    assert await service.get(row.id) == won
    assert won.input_key is not None and await storage.stat(won.input_key) is not None
    assert storage.keys() == [won.input_key]  # the loser's own object is gone


async def test_upload_race_keeps_the_winners_bytes(
    service: PredictionService, storage: MemoryStorage
) -> None:
    """After an upload race the stored input is the winner's bytes, matching its row."""
    _, won, _ = await race(service)
    assert won.input_key is not None
    assert await storage.get(won.input_key) == b"winner's bytes"
    assert won.input_bytes == len(await storage.get(won.input_key))


@pytest.mark.parametrize("meanwhile", ["expired", "canceled"])
async def test_upload_after_prediction_left_awaiting_deletes_orphan(
    service: PredictionService, store: MemoryStore, storage: MemoryStorage, meanwhile: str
) -> None:
    """When the prediction expires (or is canceled) while its upload streams, the upload
    is invalid_state and the object it wrote, now nobody's, is deleted."""
    row = await awaiting(service)
    assert row.upload_expires_at is not None

    async def body() -> AsyncIterator[bytes]:
        yield b"first half "
        if meanwhile == "expired":
            reaped = await store.reap(now=row.upload_expires_at + 1)  # type: ignore[operator]
            assert reaped.expired == [row.id]
        else:
            await service.cancel(row.id)
        yield b"second half"

    with pytest.raises(ConflictError) as info:
        await service.upload(row.id, body(), "text/plain")
    assert info.value.code == "invalid_state"
    assert storage.keys() == []
    assert (await service.get(row.id)).status is Status(meanwhile)


# -- read, cancel, wait ----------------------------------------------------------


async def test_get_unknown_is_not_found(service: PredictionService) -> None:
    """get of an unknown id is prediction_not_found."""
    with pytest.raises(NotFoundError) as info:
        await service.get("nope")
    assert info.value.code == "prediction_not_found"


async def test_list_filters_newest_first(service: PredictionService) -> None:
    """list passes its filters to the store and returns newest first."""
    a = await service.create("m", json_input(1), CreateOptions())
    b = await service.create("m", json_input(2), CreateOptions())
    waiting = await awaiting(service)
    rows = await service.list(target="m", status=Status.QUEUED, after_id=None, limit=10)
    assert [r.id for r in rows] == [b.id, a.id]
    page = await service.list(target=None, status=None, after_id=waiting.id, limit=1)
    assert [r.id for r in page] == [b.id]


async def test_cancel_queued_wakes_waiters_without_interrupt(
    tmp_path: Path, store: MemoryStore, storage: MemoryStorage, hub: CompletionHub
) -> None:
    """Canceling a queued prediction makes it canceled and resolves its waiters; no
    runner is interrupted (none holds it)."""
    interrupted: list[str] = []

    async def interrupt(prediction_id: str) -> None:
        interrupted.append(prediction_id)

    service = make_service(tmp_path, store, storage, hub=hub, interrupt=interrupt)
    row = await service.create("m", json_input(1), CreateOptions())
    waiter = hub.subscribe(row.id)
    canceled = await service.cancel(row.id)
    assert (canceled.status, canceled.error_code) == (Status.CANCELED, "canceled")
    assert waiter.done()
    assert interrupted == []


async def test_cancel_running_interrupts_its_runner(
    tmp_path: Path, store: MemoryStore, storage: MemoryStorage
) -> None:
    """Canceling a running prediction interrupts the runner that holds it."""
    interrupted: list[str] = []

    async def interrupt(prediction_id: str) -> None:
        interrupted.append(prediction_id)

    service = make_service(tmp_path, store, storage, interrupt=interrupt)
    row = await service.create("m", json_input(1), CreateOptions())
    await store.claim("m", 1, worker_id="w", lease_s=60, now=time.time())
    assert (await service.cancel(row.id)).status is Status.CANCELED
    assert interrupted == [row.id]


async def test_cancel_finished_is_unchanged_and_wakes_nobody(
    service: PredictionService, store: MemoryStore, hub: CompletionHub
) -> None:
    """Canceling a finished prediction returns it unchanged and publishes nothing."""
    row = await service.create("m", json_input(1), CreateOptions())
    await finish(store, row)
    waiter = hub.subscribe(row.id)
    assert (await service.cancel(row.id)).status is Status.SUCCEEDED
    assert not waiter.done()
    hub.unsubscribe(row.id, waiter)


async def test_cancel_unknown_is_not_found(service: PredictionService) -> None:
    """Canceling an unknown id is prediction_not_found."""
    with pytest.raises(NotFoundError) as info:
        await service.cancel("nope")
    assert info.value.code == "prediction_not_found"


async def test_wait_returns_on_completion_through_the_hub(
    tmp_path: Path, storage: MemoryStorage, hub: CompletionHub
) -> None:
    """A waiter that read the row while it ran returns the finished row as soon as the
    completion is published (polling is an hour away)."""
    store = ReadHookStore()
    await store.open()
    service = make_service(tmp_path, store, storage, hub=hub)
    row = await service.create("m", json_input(1), CreateOptions())
    store.read.clear()
    waiting = asyncio.create_task(service.wait(row.id, timeout_s=3600))
    await asyncio.wait_for(store.read.wait(), LIVENESS_S)  # it saw the row queued
    await finish(store, row)
    hub.publish([row.id])
    done = await asyncio.wait_for(waiting, LIVENESS_S)
    assert (done.status, done.output_json) == (Status.SUCCEEDED, "1")


async def test_wait_with_no_time_left_returns_the_row_as_it_is(
    service: PredictionService,
) -> None:
    """wait with a zero timeout returns the prediction in its current, live status."""
    row = await service.create("m", json_input(1), CreateOptions())
    assert (await service.wait(row.id, timeout_s=0)).status is Status.QUEUED


async def test_wait_on_finished_returns_at_once(
    service: PredictionService, store: MemoryStore
) -> None:
    """wait on a finished prediction returns it without waiting for any signal."""
    row = await service.create("m", json_input(1), CreateOptions())
    await finish(store, row)
    assert (await service.wait(row.id, timeout_s=3600)).status is Status.SUCCEEDED
