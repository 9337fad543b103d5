"""The prediction service: what the API (and anything else) may do with predictions.

It owns the rules that span store and storage: inputs are written to the
object store *before* the row that points at them, so a failure leaves no row
without its input; an idempotent replay gets the original prediction; an
upload lands before its prediction is queued.

What an input becomes (objects, and a run's JSON kept on its row so that its
templates read it as they read an inline one) is :mod:`freight.intake`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import orjson

from freight import logsetup, metrics, tracing
from freight.access import ANONYMOUS, Principal
from freight.backlog import BacklogGauge
from freight.config import Settings
from freight.confine import confine
from freight.deliveries import summarize
from freight.errors import (
    ConflictError,
    ForbiddenError,
    FreightError,
    NotFoundError,
    PredictionFailedError,
    UnsupportedMediaTypeError,
)
from freight.events import CompletionHub, Watch, WorkSignal
from freight.ids import new_id
from freight.intake import Intake, NewInput
from freight.keys import upload_key
from freight.logs import MAX_PAGE as MAX_LOG_PAGE
from freight.logs import LogLine
from freight.media import JSON, OCTET_STREAM, base_type, is_json_type
from freight.model import InputKind
from freight.pipelines import callback
from freight.pipelines.runs import RUN
from freight.pipelines.start import new_run, run_timeout_s, start_rows
from freight.prediction import Kind, Prediction, Status
from freight.project import Pipelines
from freight.quotas import Quotas
from freight.registry import ModelSpec
from freight.roster import Roster
from freight.storage.base import Storage
from freight.store import logs as store_logs
from freight.store import ops
from freight.store import streamed as store_streamed
from freight.store.base import Store
from freight.streaming import MAX_PAGE as MAX_CHUNK_PAGE
from freight.streaming import Chunk
from freight.subscriptions import DeliveryView, Subscriptions, Webhook
from freight.subscriptions import views as delivery_views
from freight.tensors import FRAME_TYPE as TENSOR_FRAME
from freight.views import Presign, add_callbacks, has_references, output_of, render

log = logging.getLogger("freight.service")

#: downloads read the store in pieces this large: fewer thread hops and writes per GB
DOWNLOAD_CHUNK_BYTES = 4 << 20
Interrupt = Callable[[str], Awaitable[None]]
#: a presigned URL as the face shows it (the API puts its base URL in front)
Absolute = Callable[[str], str]


def _as_is(url: str) -> str:
    return url


@dataclass(slots=True)
class CreateOptions:
    metadata: dict[str, Any] | None = None
    priority: int = 0
    ttl_s: float | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None
    webhook: Webhook | None = None
    #: subscriptions already resolved (a retry keeps its original's): ``webhook`` unused
    notify: str | None = None
    #: a bound on this prediction's run, under the model's own (SageMaker's
    #: InvocationTimeoutSeconds)
    timeout_s: float | None = None
    #: subscriptions of freight's own, before the caller's and the server's sinks
    #: (``{"sink": "@…", "events": [...]}``: the async results of a SageMaker invocation)
    also: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class Limits:
    """The request limits a face enforces while reading a body."""

    max_json_bytes: int
    max_payload_bytes: int
    realtime_timeout_s: float
    max_wait_s: float  # the longest a request may be held (long polls, event streams)
    poll_interval_s: float  # how often a waiter looks again without a wake-up
    max_event_streams: int = 500  # event streams one process holds open at once
    event_poll_s: float = 1.0  # how often a stream reads its rows without a wake-up


@dataclass(frozen=True, slots=True)
class Download:
    """An object to stream out: its bytes in pieces, and what is known of them."""

    chunks: AsyncIterator[bytes]
    content_type: str
    size: int | None


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
        backlog: BacklogGauge | None = None,
        pipelines: Pipelines | None = None,
        subscriptions: Subscriptions | None = None,
        quotas: Quotas | None = None,
    ) -> None:
        self._settings = settings
        self._quotas = quotas
        #: why a waiting prediction waits (the worker nodes' census)
        self.roster = Roster(store, census_interval_s=settings.census_interval_s, quotas=quotas)
        self._specs = specs
        self._store = store
        self._storage = storage
        self._signal = signal
        self._hub = hub
        self._interrupt = interrupt
        self._pipelines = pipelines or Pipelines()
        self._subscriptions = subscriptions or Subscriptions()
        self._backlog = backlog or BacklogGauge(store, refresh_s=0.5)
        self._intake = Intake(settings, storage, self._pipelines)
        self.limits = Limits(
            max_json_bytes=settings.max_json_bytes,
            max_payload_bytes=settings.max_payload_bytes,
            realtime_timeout_s=settings.realtime_timeout_s,
            max_wait_s=settings.max_wait_s,
            poll_interval_s=settings.poll_interval_s,
            max_event_streams=settings.max_event_streams,
            event_poll_s=settings.event_poll_s,
        )
        #: the base URL put in front of freight's own signed routes ("" = the request's)
        self.public_url = settings.public_url
        self._callback_key: bytes | None = None  # derived from the secret when first used

    # -- create --------------------------------------------------------------------
    def spec(self, target: str) -> ModelSpec:
        spec = self._specs.get(target)
        if spec is None:
            raise NotFoundError(
                f"no model or pipeline named {target!r}", code="unknown_target", target=target
            )
        return spec

    def allow(self, who: Principal, target: str) -> None:
        """403 ``target_not_allowed`` for a key limited to other models."""
        if not who.may_use(target):
            raise ForbiddenError(
                f"this key may not use {target!r}", code="target_not_allowed", target=target
            )

    def is_pipeline(self, target: str) -> bool:
        return target in self._pipelines.specs

    def check_media_type(self, target: str, content_type: str) -> None:
        """A model that takes JSON refuses any other body (415) before it is read; a
        tensor model, anything but JSON and its frames (:data:`tensors.FRAME_TYPE`)."""
        kind = self.spec(target).input_kind
        if kind == InputKind.TENSORS and not (
            is_json_type(content_type) or base_type(content_type) == TENSOR_FRAME
        ):
            raise UnsupportedMediaTypeError(
                f"model {target!r} takes tensors (application/json, or the Open Inference "
                f"Protocol at /v2/models/{target}/infer), not "
                f"{content_type or 'no content type'!r}",
                target=target,
                content_type=content_type,
            )
        if not is_json_type(content_type) and kind == InputKind.JSON:
            raise UnsupportedMediaTypeError(
                f"model {target!r} takes application/json, "
                f"not {content_type or 'no content type'!r}",
                target=target,
                content_type=content_type,
            )

    async def run(
        self,
        target: str,
        new_input: NewInput,
        timeout_s: float | None,
        *,
        webhook: Webhook | None = None,
        who: Principal = ANONYMOUS,
        options: CreateOptions | None = None,
    ) -> Prediction:
        """Real-time: create, then wait up to the deadline. A prediction that ended
        without an output raises PredictionFailedError; one still going is returned
        as it is (the caller answers 202). ``options``: instead of ``webhook`` alone."""
        options = options or CreateOptions(webhook=webhook)
        row = await self.create(target, new_input, options, who=who)
        row = await self.wait(row.id, timeout_s or self._settings.realtime_timeout_s)
        if row.status.terminal and row.status != Status.SUCCEEDED:
            detail = orjson.loads(row.error_detail) if row.error_detail else {}
            raise PredictionFailedError(
                row.error_message or f"the prediction {row.status}",
                code=row.error_code or str(row.status),
                prediction_id=row.id,
                **detail,
            )
        return row

    async def call(
        self,
        target: str,
        new_input: NewInput,
        *,
        who: Principal = ANONYMOUS,
        options: CreateOptions | None = None,
    ) -> Prediction:
        """Real time for a protocol with no later (SageMaker's ``invoke_endpoint``, the
        Open Inference Protocol's ``infer``): :meth:`run`, and a prediction not done by
        the real-time deadline is canceled (nobody can come back for it) and raises
        PredictionFailedError ``timeout``."""
        row = await self.run(target, new_input, None, who=who, options=options)
        if row.status.terminal:
            return row
        await self.cancel(row.id, who)
        raise PredictionFailedError(
            f"the model did not answer within {self.limits.realtime_timeout_s:g} s "
            "(the real-time deadline); the prediction was canceled",
            code="timeout",
            prediction_id=row.id,
        )

    async def create(
        self,
        target: str,
        new_input: NewInput,
        options: CreateOptions,
        *,
        who: Principal = ANONYMOUS,
    ) -> Prediction:
        """Queue a prediction of a model, or start a run of a pipeline (its first steps
        queued in the same transaction), owned by the caller's tenant."""
        row, written = await self._prepare(target, new_input, options, who)
        try:
            stored, inserted = await self._insert(row, new_input)
        except BaseException:
            if written:
                await self._discard_unless_kept(row.id, written)
            raise
        await self._settle(stored, inserted, written)
        return stored

    async def create_many(
        self, items: Sequence[tuple[str, NewInput, CreateOptions]], *, who: Principal = ANONYMOUS
    ) -> list[Prediction | FreightError]:
        """Create many predictions in one call (the bulk route): each item as
        :meth:`create` would, checked on its own (an item refused is its error in its
        place, the others go on), the models' predictions inserted in one transaction
        (idempotency keys honoured per item), pipeline runs one transaction each."""
        out: list[Prediction | FreightError] = []
        prepared: list[tuple[int, Prediction, NewInput, str | None]] = []
        for target, new_input, options in items:
            try:
                row, written = await self._prepare(target, new_input, options, who)
            except FreightError as exc:
                out.append(exc)
                continue
            out.append(row)
            prepared.append((len(out) - 1, row, new_input, written))
        plain = [(i, row, w) for i, row, _, w in prepared if row.kind != RUN]
        try:
            results = await self._store.create_many([row for _, row, _ in plain])
        except BaseException:
            for _, row, written in plain:
                if written:
                    await self._discard_unless_kept(row.id, written)
            raise
        for (index, _, written), result in zip(plain, results, strict=True):
            if isinstance(result, FreightError):
                out[index] = result
                if written:
                    await self._storage.delete(written)
                continue
            await self._settle(*result, written)
            out[index] = result[0]
        for index, row, new_input, written in prepared:
            if row.kind == RUN:  # a run inserts its steps and advances: one each
                try:
                    stored, inserted = await self._insert(row, new_input)
                except FreightError as exc:
                    out[index] = exc
                    continue
                await self._settle(stored, inserted, written)
                out[index] = stored
        return out

    async def _prepare(
        self, target: str, new_input: NewInput, options: CreateOptions, who: Principal
    ) -> tuple[Prediction, str | None]:
        """Check a new prediction (access, quotas, the backlog) and make its row, its
        input written to the store first when it is not kept inline (those keys)."""
        now = time.time()
        self.allow(who, target)
        if self._quotas is not None:
            if not self.is_pipeline(target):
                self.spec(target)  # an unknown target: 404, before any quota
            await self._quotas.check(who.tenant, target, options.idempotency_key)
        if new_input.uri is not None:
            key = self._intake.key_of(new_input.uri)
            await confine(self._store, who, key, new_input.uri, write=False)
        if self.is_pipeline(target):
            row = self._run_row(target, options, now)
        else:
            spec = self.spec(target)
            await self._backlog.check(target, self._settings.max_queued_per_model)
            row = Prediction(
                id=new_id(),
                target=target,
                status=Status.QUEUED,
                created_at=now,
                queued_at=now,
                max_attempts=spec.max_attempts or self._settings.max_attempts,
                timeout_s=min(spec.timeout_s or self._settings.max_run_s, self._settings.max_run_s),
            )
        row.notify = options.notify or self._subscriptions.notify_for(
            target, options.webhook, also=options.also
        )
        if options.timeout_s is not None and row.timeout_s is not None:
            row.timeout_s = min(row.timeout_s, options.timeout_s)
        row.tenant = who.tenant
        if tracing.ENABLED:  # the request's span: the worker continues its trace
            row.trace_context = tracing.traceparent()
        logsetup.bind(prediction_id=row.id, run_id=row.id if row.kind == RUN else None)
        row.priority, row.idempotency_key = options.priority, options.idempotency_key
        row.request_hash = options.request_hash
        row.metadata = orjson.dumps(options.metadata).decode() if options.metadata else None
        ttl_s = options.ttl_s or self._settings.default_ttl_s
        row.expires_at = now + ttl_s if ttl_s else None
        return row, await self._intake.write(row, new_input)

    async def _settle(self, stored: Prediction, inserted: bool, written: str | None) -> None:
        """After the insert: an idempotent replay's objects dropped (the original's are
        kept), a new one counted and its workers woken."""
        if not inserted and written:
            await self._storage.delete(written)
        if inserted:
            metrics.created.labels(stored.target).inc()
        if inserted and stored.status == Status.QUEUED:
            self._backlog.add(stored.target)
            self._signal.notify(stored.target)

    def _run_row(self, target: str, options: CreateOptions, now: float) -> Prediction:
        """A pipeline run (:func:`freight.pipelines.start.new_run`)."""
        spec = self._pipelines.specs[target]
        timeout_s = run_timeout_s(spec, self._settings.max_run_s)
        bundle = self._pipelines.bundles[target]
        return new_run(target, bundle, run_id=new_id(), now=now, timeout_s=timeout_s)

    async def _insert(self, row: Prediction, new_input: NewInput) -> tuple[Prediction, bool]:
        if row.kind != RUN:
            return await self._store.create(row)
        if new_input.has_json and row.input_json is None:
            row.input_json = orjson.dumps(new_input.json).decode()  # templates read it
        steps = start_rows(row, self._pipelines.specs[row.target], new_id)
        return await self._store.create_run(row, steps)

    async def deliveries(
        self, prediction_id: str, who: Principal | None = None
    ) -> list[DeliveryView]:
        """Every event of the prediction for each of its subscriptions, with attempts."""
        row = await self.get(prediction_id, who)
        rows, attempts = await self._store.deliveries(prediction_id)
        return delivery_views(row.notify, rows, attempts)

    async def redeliver(self, delivery_id: str, who: Principal | None = None) -> DeliveryView:
        """Send one event of a prediction's notifications again, now, with its original
        event id (receivers de-duplicate on it): one that died, was stopped by a 410,
        or waits for its next retry. 404 for an unknown id or another tenant's; 409
        while it is being sent or once it was delivered."""
        row = await self._store.execute(lambda: ops.outbox_row(delivery_id), write=False)
        if row is not None:
            try:
                await self.get(row.prediction_id, who)
            except NotFoundError:
                row = None
        if row is None:
            raise NotFoundError(f"no delivery {delivery_id}", code="delivery_not_found")
        again = await self._store.execute(lambda: ops.redeliver(delivery_id, time.time()))
        if again is None:
            raise ConflictError(
                f"delivery {delivery_id} is {row.status}: it is not sent again",
                code="invalid_state",
                status=str(row.status),
            )
        views = await self.deliveries(row.prediction_id, who)
        return next(v for v in views if v.id == delivery_id)

    async def retry(self, prediction_id: str, who: Principal = ANONYMOUS) -> Prediction:
        """A new prediction of the same target with the same input, priority, metadata
        and notifications (a JSON input kept on the row is sent again, any other is read
        where it is). 409 ``input_gone`` when its input object no longer exists."""
        row = await self.get(prediction_id, who)
        if row.input_json is not None:
            new_input = NewInput(json=orjson.loads(row.input_json), has_json=True)
        elif row.input_key is not None and await self._storage.stat(row.input_key) is not None:
            uri, content_type = f"freight://{row.input_key}", row.input_content_type
            new_input = NewInput(uri=uri, content_type=content_type)
        else:
            raise ConflictError(
                f"the input of prediction {prediction_id} is gone: it cannot be retried",
                code="input_gone",
                prediction_id=prediction_id,
            )
        metadata = orjson.loads(row.metadata) if row.metadata else None
        options = CreateOptions(metadata=metadata, priority=row.priority, notify=row.notify)
        return await self.create(row.target, new_input, options, who=who)

    async def steps(self, run_id: str, *, heads: bool = False) -> list[Prediction]:
        """A run's own rows: its steps, for_each elements and nested runs, oldest first
        (with ``heads``: without the for_each elements)."""
        return await self._store.steps(run_id, heads=heads)

    async def upload(
        self,
        prediction_id: str,
        chunks: AsyncIterable[bytes],
        content_type: str,
    ) -> Prediction:
        """Land an upload for an ``awaiting_input`` prediction, then queue it. A run's
        JSON upload is parsed and kept on the row (400 ``invalid_json`` when it is not
        JSON); one its templates cannot read is refused (415, 413
        ``json_input_too_large``), and the prediction keeps awaiting its input."""
        row = await self.get(prediction_id)
        if row.status != Status.AWAITING_INPUT:
            raise ConflictError(
                f"prediction {prediction_id} is {row.status}, not awaiting input",
                code="invalid_state",
                status=str(row.status),
            )
        kept = self._intake.kept_for(row, content_type)  # 415 before a byte is stored
        key = upload_key(prediction_id)
        size = await self._intake.put_upload(key, chunks, content_type, kept)
        try:
            input_json = self._intake.upload_json(row, kept, size)
            updated = await self._store.mark_input_ready(
                prediction_id,
                input_key=key,
                input_content_type=content_type,
                input_bytes=size,
                now=time.time(),
                input_json=input_json,
            )
        except BaseException:
            # refused, expired, canceled, or another upload won the race meanwhile: this
            # object is nobody's (the key is this upload's own)
            await self._discard_unless_kept(prediction_id, key)
            raise
        self._backlog.add(updated.target)
        self._signal.notify(updated.target)
        return updated

    async def _discard_unless_kept(self, prediction_id: str, key: str) -> None:
        """Delete an object written for a write that raised, unless the row points at
        it after all (a commit whose answer was lost). When the store cannot say, the
        object stays: a leftover object is harmless, a row without its input is not."""
        try:
            current = await self._store.get(prediction_id)
        except Exception as exc:
            log.warning("keeping %s: cannot tell whether %s uses it (%s)", key, prediction_id, exc)
            return
        if current is None or current.input_key != key:
            await self._storage.delete(key)

    # -- read ----------------------------------------------------------------------
    async def get(self, prediction_id: str, who: Principal | None = None) -> Prediction:
        """The prediction; with ``who``, only when it is that caller's (another tenant's
        answers exactly as an unknown id does)."""
        row = await self._store.get(prediction_id)
        if row is None or (who is not None and not who.owns(row.tenant, row.target)):
            raise NotFoundError(f"no prediction {prediction_id}", code="prediction_not_found")
        return row

    async def logs(
        self, principal: Principal | None, prediction_id: str, *, after: int = 0, limit: int = 1000
    ) -> list[LogLine]:
        """The prediction's log lines whose seq is over ``after`` (at most ``limit``,
        capped at ``logs.MAX_PAGE``); another tenant's id answers as an unknown one."""
        await self.get(prediction_id, principal)
        return await self.lines(prediction_id, after=after, limit=limit)

    async def lines(self, prediction_id: str, *, after: int, limit: int) -> list[LogLine]:
        """:meth:`logs` without the lookup, for a caller that already made it (an event
        stream, once before it starts): one indexed read, empty for an unknown id."""
        limit = max(1, min(limit, MAX_LOG_PAGE))
        return await self._store.execute(
            lambda: store_logs.read(prediction_id, after, limit), write=False
        )

    async def chunks(self, prediction_id: str, *, after: int, limit: int) -> list[Chunk]:
        """A streaming prediction's chunks whose seq is over ``after`` (at most ``limit``,
        capped at ``streaming.MAX_PAGE``), for a caller that already looked the
        prediction up: one indexed read, empty for an unknown id."""
        limit = max(1, min(limit, MAX_CHUNK_PAGE))
        return await self._store.execute(
            lambda: store_streamed.read(prediction_id, after, limit), write=False
        )

    def streams(self, target: str) -> bool:
        """Whether ``target`` is a model that streams its output (a generator)."""
        spec = self._specs.get(target)
        return spec is not None and spec.streams

    def watch(self, ids: Iterable[str]) -> Watch:
        """Subscribe to the completions of ``ids`` (this process's, and those another
        process NOTIFYs): make it, then read the rows, then ``await watch.wait(s)``."""
        return self._hub.watch(ids)

    async def wait(
        self, prediction_id: str, timeout_s: float, who: Principal | None = None
    ) -> Prediction:
        """The prediction once terminal, or as it is when the timeout passes."""
        deadline = time.monotonic() + min(timeout_s, self._settings.max_wait_s)
        while True:
            future = self._hub.subscribe(prediction_id)
            try:
                row = await self.get(prediction_id, who)
                remaining = deadline - time.monotonic()
                if row.status.terminal or remaining <= 0:
                    return row
                # in-process completions resolve the future; other processes' are polled
                await asyncio.wait(
                    [future], timeout=min(remaining, self._settings.poll_interval_s * 2)
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
        kind: Kind | None = None,
        who: Principal | None = None,
    ) -> list[Prediction]:
        """Newest first; with ``who``, that caller's rows only."""
        return await self._store.list(
            target=target,
            status=status,
            kind=kind,
            after_id=after_id,
            limit=limit,
            tenant=None if who is None else who.tenant,
            targets=None if who is None or who.targets is None else sorted(who.targets),
        )

    async def cancel(self, prediction_id: str, who: Principal | None = None) -> Prediction:
        if who is not None:
            await self.get(prediction_id, who)  # another tenant's: 404, as unknown
        try:
            row, previous = await self._store.cancel(prediction_id, now=time.time())
        except NotFoundError:
            raise NotFoundError(
                f"no prediction {prediction_id}",
                code="prediction_not_found",
            ) from None
        if previous == Status.RUNNING and self._interrupt is not None:
            await self._interrupt(prediction_id)
            if row.kind == RUN:  # its running steps were canceled with it: stop them now
                for step in await self._store.steps(prediction_id):
                    if step.worker_id is not None and step.status == Status.CANCELED:
                        await self._interrupt(step.id)
        if not previous.terminal:
            self._hub.publish([prediction_id])
        return row

    async def redrive(self, prediction_id: str, who: Principal | None = None) -> Prediction:
        """Restart a failed, timed-out or canceled pipeline run where it stopped: the
        steps that succeeded keep their outputs, the others run again, by the definition
        it started with (``pipelines/redrive.py``). 404 for another tenant's; 409
        ``invalid_state`` for a run that is not failed or canceled, or a row that is no
        top-level run."""
        if who is not None:
            await self.get(prediction_id, who)  # another tenant's: 404, as unknown
        try:
            return await self._store.redrive(prediction_id, now=time.time())
        except NotFoundError:
            raise NotFoundError(
                f"no prediction {prediction_id}", code="prediction_not_found"
            ) from None

    def open_output(self, row: Prediction, absolute: Absolute = _as_is) -> Download:
        """The output of a finished prediction: its object streamed from the store, or
        (a pipeline run's) its inline JSON, references in it given URLs."""
        if not row.status.terminal:
            raise ConflictError(
                f"prediction {row.id} is {row.status}: no output yet",
                code="not_finished",
                status=str(row.status),
            )
        if row.output_key is None and row.output_json is not None:
            if not has_references(row):
                data = row.output_json.encode()
                return Download(chunks=_once(data), content_type=JSON, size=len(data))
            return Download(chunks=self._rendered(row, absolute), content_type=JSON, size=None)
        if row.output_key is None:  # the prediction exists: its state is why (409)
            raise ConflictError(
                f"prediction {row.id} is {row.status} and has no output",
                code="no_output",
                status=str(row.status),
            )
        return Download(
            chunks=self._storage.get_stream(row.output_key, chunk_size=DOWNLOAD_CHUNK_BYTES),
            content_type=row.output_content_type or OCTET_STREAM,
            size=row.output_bytes,
        )

    async def _rendered(self, row: Prediction, absolute: Absolute) -> AsyncIterator[bytes]:
        yield orjson.dumps(await output_of(row, self.presigner(absolute)))

    async def open_object(self, key: str) -> Download:
        """An object named by a presigned download URL (the caller verified it)."""
        info = await self._storage.stat(key)
        if info is None:
            raise NotFoundError(f"no object {key}", code="object_not_found")
        return Download(
            chunks=self._storage.get_stream(key, chunk_size=DOWNLOAD_CHUNK_BYTES),
            content_type=info.content_type or OCTET_STREAM,
            size=info.size,
        )

    def object_uri(self, key: str) -> str:
        """The URI of the store itself that names ``key`` (``s3://bucket/…``): what a
        client of the store (an S3 client) reads the object by."""
        return self._storage.uri_for_key(key)

    def presigner(self, absolute: Absolute = _as_is) -> Presign:
        """Object key -> presigned download URL, as ``absolute`` makes it."""
        expires_s = self._settings.download_url_expires_s

        async def presign(key: str) -> str:
            return absolute(await self._storage.presign_get(key, expires_s=expires_s))

        return presign

    async def view(
        self, row: Prediction, absolute: Absolute = _as_is, *, upload_url: str | None = None
    ) -> dict[str, Any]:
        """The prediction object (:func:`freight.views.render`); a pipeline run with its
        steps map (one more query)."""
        steps = await self.steps(row.id) if row.kind == RUN else None
        body = await render(row, self.presigner(absolute), steps=steps, upload_url=upload_url)
        waiting = await self.roster.why(row)
        if waiting is not None:
            body["waiting_reason"], body["waiting_message"] = str(waiting.reason), waiting.message
        if steps:  # the steps' own rows (for_each elements have no entry: not asked)
            entries = {entry["prediction_id"]: entry for entry in body["steps"].values()}
            heads = [step for step in steps if step.id in entries]
            for step_id, why in (await self.roster.why_each(heads)).items():
                entries[step_id]["waiting_reason"] = str(why.reason)
        if row.notify is not None:  # it has subscriptions: how their events went
            body["notifications"] = await self.notifications(row)
        add_callbacks(body, row, steps, self.callback_token, absolute)
        return body

    def callback_token(self, row: Prediction) -> str:
        """The token of a waiting callback step's wait (``pipelines/callback.py``): what
        its owner (who may read the row) is shown, in its answer URLs."""
        if self._callback_key is None:
            self._callback_key = callback.key_of(self._settings.secret())
        return callback.token_of(self._callback_key, callback.Claim.of(row))

    async def notifications(self, row: Prediction) -> dict[str, Any]:
        """The summary of a prediction's notifications (:func:`summarize`): one
        grouped count of its outbox rows. Not read for a prediction of a model never
        claimed (each create's answer): its events come with its first claim or its
        end (a step's run can be redriven, so only a top-level prediction)."""
        never_ran = (
            row.kind == Kind.MODEL
            and row.run_id is None
            and row.started_at is None  # kept when a claim is given back
            and row.status in (Status.QUEUED, Status.AWAITING_INPUT)
        )
        counts = [] if never_ran else await self._store.delivery_counts(row.id)
        summary = summarize(counts, ended=row.status.terminal)
        return asdict(summary) | {"state": str(summary.state)}


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


__all__ = [
    "CreateOptions",
    "DeliveryView",
    "Download",
    "Limits",
    "NewInput",
    "PredictionService",
    "Webhook",
    "request_hash",
]
