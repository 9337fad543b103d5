"""The prediction service: what the API (and anything else) may do with predictions.

It owns the rules that span store and storage: inputs are written to the
object store *before* the row that points at them, so a failure leaves no row
without its input; an idempotent replay gets the original prediction; an
upload lands before its prediction is queued.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterable, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from freight import metrics
from freight.config import Settings
from freight.errors import (
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    QueueFullError,
)
from freight.events import CompletionHub, WorkSignal
from freight.ids import new_id
from freight.keys import input_key
from freight.prediction import Prediction, Status
from freight.registry import ModelSpec
from freight.storage.base import Storage
from freight.store.base import Store

JSON = "application/json"
#: downloads read the store in pieces this large: fewer thread hops and writes per GB
DOWNLOAD_CHUNK_BYTES = 4 << 20
Interrupt = Callable[[str], Awaitable[None]]


@dataclass(slots=True)
class NewInput:
    """The input of a prediction being created: JSON, raw bytes, a URI, or none yet."""

    json: Any = None
    has_json: bool = False
    data: AsyncIterable[bytes] | None = None
    content_type: str | None = None
    uri: str | None = None


@dataclass(slots=True)
class CreateOptions:
    metadata: dict[str, Any] | None = None
    priority: int = 0
    ttl_s: float | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None


def request_hash(body: dict[str, Any]) -> str:
    """Canonical hash of a create request, to tell an idempotent replay from a conflict."""
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


class PredictionService:
    def __init__(
        self,
        settings: Settings,
        specs: dict[str, ModelSpec],
        store: Store,
        storage: Storage,
        *,
        signal: WorkSignal,
        hub: CompletionHub,
        interrupt: Interrupt | None = None,
    ) -> None:
        self.settings = settings
        self.specs = specs
        self.store = store
        self.storage = storage
        self._signal = signal
        self._hub = hub
        self._interrupt = interrupt
        self.backlog = _BacklogGauge(store, refresh_s=0.5)

    # -- create --------------------------------------------------------------------
    def spec(self, target: str) -> ModelSpec:
        spec = self.specs.get(target)
        if spec is None:
            raise NotFoundError(f"no model named {target!r}", code="unknown_target", target=target)
        return spec

    async def create(self, target: str, new_input: NewInput, options: CreateOptions) -> Prediction:
        spec = self.spec(target)
        await self.backlog.check(target, self.settings.max_queued_per_model)
        now = time.time()
        row = Prediction(
            id=new_id(),
            target=target,
            status=Status.QUEUED,
            created_at=now,
            queued_at=now,
            priority=options.priority,
            max_attempts=spec.max_attempts or self.settings.max_attempts,
            timeout_s=min(spec.timeout_s or self.settings.max_run_s, self.settings.max_run_s),
            idempotency_key=options.idempotency_key,
            request_hash=options.request_hash,
            metadata=orjson.dumps(options.metadata).decode() if options.metadata else None,
        )
        ttl_s = options.ttl_s or self.settings.default_ttl_s
        row.expires_at = now + ttl_s if ttl_s else None
        written = await self._write_input(row, new_input)
        try:
            stored, inserted = await self.store.create(row)
        except BaseException:
            if written:
                await self.storage.delete(written)
            raise
        if not inserted and written:
            await self.storage.delete(written)  # an idempotent replay: keep the original
        if inserted:
            metrics.created.labels(target).inc()
        if inserted and stored.status == Status.QUEUED:
            self.backlog.add(target)
            self._signal.notify(target)
        return stored

    async def _write_input(self, row: Prediction, new_input: NewInput) -> str | None:
        """Store the input under the prediction's id; return the key written (or None)."""
        key = input_key(row.id)
        if new_input.has_json:
            data = orjson.dumps(new_input.json)
            if len(data) > self.settings.max_payload_bytes:
                raise PayloadTooLargeError(
                    f"the input is {len(data)} bytes, over the limit of "
                    f"{self.settings.max_payload_bytes}",
                    size=len(data),
                    limit=self.settings.max_payload_bytes,
                )
            await self.storage.put(key, data, content_type=JSON)
            if len(data) <= self.settings.inline_input_max_bytes:
                row.input_json = data.decode()
            row.input_key, row.input_content_type, row.input_bytes = key, JSON, len(data)
            return key
        if new_input.data is not None:
            content_type = new_input.content_type or "application/octet-stream"
            size = await self.storage.put_stream(
                key,
                new_input.data,
                content_type=content_type,
                max_bytes=self.settings.max_payload_bytes,
            )
            row.input_key, row.input_content_type, row.input_bytes = key, content_type, size
            return key
        if new_input.uri is not None:
            info = await self.storage.stat(self._key_of_uri(new_input.uri))
            if info is None:
                raise NotFoundError(f"no object at {new_input.uri}", code="input_not_found")
            row.input_key, row.input_bytes = info.key, info.size
            row.input_content_type = new_input.content_type or info.content_type or JSON
            return None
        row.status, row.queued_at = Status.AWAITING_INPUT, None
        row.upload_expires_at = row.created_at + self.settings.upload_url_expires_s
        return None

    def _key_of_uri(self, uri: str) -> str:
        """``freight://<key>``, or a URI of the configured store (``s3://bucket/key``,
        ``file:///root/key``): inputs are read where they are, not copied."""
        prefix = "freight://"
        key = uri[len(prefix) :] if uri.startswith(prefix) else self.storage.key_for_uri(uri)
        if not key:
            raise InvalidRequestError(
                f"input_uri {uri!r} is not in freight's object store: give freight://<key> "
                "or a URI of the configured store",
                code="unsupported_input_uri",
            )
        return key

    async def upload(
        self,
        prediction_id: str,
        chunks: AsyncIterable[bytes],
        content_type: str,
    ) -> Prediction:
        """Land an upload for an ``awaiting_input`` prediction, then queue it."""
        row = await self.get(prediction_id)
        if row.status != Status.AWAITING_INPUT:
            raise ConflictError(
                f"prediction {prediction_id} is {row.status}, not awaiting input",
                code="invalid_state",
                status=str(row.status),
            )
        key = input_key(prediction_id)
        size = await self.storage.put_stream(
            key,
            chunks,
            content_type=content_type,
            max_bytes=self.settings.max_payload_bytes,
        )
        try:
            updated = await self.store.mark_input_ready(
                prediction_id,
                input_key=key,
                input_content_type=content_type,
                input_bytes=size,
                now=time.time(),
            )
        except BaseException:
            # expired or canceled meanwhile: the object is nobody's. But when a concurrent
            # upload to the same URL won the race, the object is that prediction's input.
            current = await self.store.get(prediction_id)
            if current is None or current.input_key is None:
                await self.storage.delete(key)
            raise
        self.backlog.add(updated.target)
        self._signal.notify(updated.target)
        return updated

    # -- read ----------------------------------------------------------------------
    async def get(self, prediction_id: str) -> Prediction:
        row = await self.store.get(prediction_id)
        if row is None:
            raise NotFoundError(f"no prediction {prediction_id}", code="prediction_not_found")
        return row

    async def wait(self, prediction_id: str, timeout_s: float) -> Prediction:
        """The prediction once terminal, or as it is when the timeout passes."""
        deadline = time.monotonic() + min(timeout_s, self.settings.max_wait_s)
        while True:
            future = self._hub.subscribe(prediction_id)
            try:
                row = await self.get(prediction_id)
                remaining = deadline - time.monotonic()
                if row.status.terminal or remaining <= 0:
                    return row
                # in-process completions resolve the future; other processes' are polled
                await asyncio.wait(
                    [future], timeout=min(remaining, self.settings.poll_interval_s * 2)
                )
            finally:
                self._hub.unsubscribe(prediction_id, future)

    async def list(
        self,
        *,
        target: str | None,
        status: Status | None,
        after_id: str | None,
        limit: int,
    ) -> list[Prediction]:
        return await self.store.list(target=target, status=status, after_id=after_id, limit=limit)

    async def cancel(self, prediction_id: str) -> Prediction:
        try:
            row, previous = await self.store.cancel(prediction_id, now=time.time())
        except NotFoundError:
            raise NotFoundError(
                f"no prediction {prediction_id}",
                code="prediction_not_found",
            ) from None
        if previous == Status.RUNNING and self._interrupt is not None:
            await self._interrupt(prediction_id)
        if not previous.terminal:
            self._hub.publish([prediction_id])
        return row

    async def open_output(self, row: Prediction) -> AsyncIterable[bytes]:
        if row.output_key is None:
            raise NotFoundError(f"prediction {row.id} has no output", code="no_output")
        return self.storage.get_stream(row.output_key, chunk_size=DOWNLOAD_CHUNK_BYTES)

    async def output_url(self, row: Prediction) -> str | None:
        """A presigned URL for an output too large (or not JSON) to return inline."""
        if row.output_key is None or row.output_json is not None:
            return None
        return await self.storage.presign_get(
            row.output_key,
            expires_s=self.settings.download_url_expires_s,
        )


class _BacklogGauge:
    """Queued counts per target: a bound, not an exact count.

    Refreshed from the store in the background at most every ``refresh_s`` and
    bumped locally in between, so no create ever waits for a count (only the
    very first one, before any count is known)."""

    def __init__(self, store: Store, refresh_s: float) -> None:
        self._store = store
        self._refresh_s = refresh_s
        self._counts: dict[str, int] | None = None
        self._at = 0.0
        self._refreshing: asyncio.Task[None] | None = None

    def snapshot(self) -> dict[str, int]:
        """The counts as last known (never queries)."""
        return dict(self._counts or {})

    async def fresh(self) -> dict[str, int]:
        """The counts, counted now (a metrics scrape, every few seconds at most, may
        wait for the partial-index counts)."""
        await self._refresh()
        return self.snapshot()

    def add(self, target: str) -> None:
        if self._counts is not None:
            self._counts[target] = self._counts.get(target, 0) + 1

    async def _refresh(self) -> None:
        stats = await self._store.stats()
        self._counts = {t: s.queued + s.awaiting_input for t, s in stats.items()}
        self._at = time.monotonic()

    def _refresh_done(self, task: asyncio.Task[None]) -> None:
        self._refreshing = None
        if not task.cancelled() and task.exception() is not None:
            self._at = time.monotonic()  # store trouble: creates will say so; retry later

    async def check(self, target: str, limit: int) -> None:
        if self._counts is None:
            await self._refresh()
        elif time.monotonic() - self._at > self._refresh_s and self._refreshing is None:
            self._refreshing = asyncio.create_task(self._refresh(), name="backlog-refresh")
            self._refreshing.add_done_callback(self._refresh_done)
        count = (self._counts or {}).get(target, 0)
        if count >= limit:
            raise QueueFullError(
                f"model {target!r} has {count} predictions queued (limit {limit})",
                retry_after_s=max(1, int(self._refresh_s * 2)),
                target=target,
                limit=limit,
            )


__all__ = ["CreateOptions", "NewInput", "PredictionService", "request_hash"]
