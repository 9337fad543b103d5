"""The agent's deliverer: sends what the outbox holds, apart from the prediction path.

The database writes an outbox row per event and subscription with each status
change (migration 0006); this loop leases due rows (the oldest unfinished event
of each prediction and subscription, so a receiver gets one prediction's events
in order), reads their predictions in one read, sends each in its own task,
bounded in concurrency and in time per attempt, and records the outcomes,
together as they come in (one transaction for all that ended meanwhile):
delivered, retried later with exponential back-off and full jitter, dead once
``max_age_s`` has passed, or stopped by a ``410 Gone``. A slow or dead receiver
holds only its own rows: other rows are claimed and sent meanwhile, and
predictions never wait for any of it. It runs apart from the API's event loop, in
a process (:mod:`freight.agent.delivery_process`) or a thread
(:mod:`freight.agent.delivery_thread`) of its own, with its own store handle.

Delivery is at least once: a worker that dies mid-send leaves its rows leased
until the lease expires, then any worker sends them again under the same event
id (``webhook-id``), which receivers de-duplicate on. Claims skip each other's
rows, so no event is sent by two workers at once.

What is sent is the prediction object as ``GET /v1/predictions/{id}`` renders it
(:func:`freight.views.render`: presigned output URLs, a run's steps map, URLs on
object references), read when the event is sent. A ``started`` event describes
the prediction as it was when that attempt started (running, no output, error or
end), however late it is sent: a receiver retrying through an outage must not
see a ``started`` that says ``succeeded``. Signed routes of the API (downloads
from a local directory store) are made absolute with ``public_url``, else the
API's own ``http://host:port``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import socket
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from freight import logsetup, tracing
from freight.access import DEFAULT_TENANT
from freight.batch.job import JOB, JobDoc
from freight.batch.view import job_dict
from freight.config import Settings
from freight.deliveries import DeliveryResult, DeliveryStatus, OutboxRow
from freight.notify.event import WAITING, Event, Outcome
from freight.notify.signing import WebhookSecrets
from freight.notify.sinks.base import Sink
from freight.pipelines import callback
from freight.prediction import Kind, Prediction
from freight.storage.base import Storage
from freight.store.base import Outbox, Records
from freight.views import add_callbacks, as_started, callback_dict, render

log = logging.getLogger("freight.delivery")

#: sinks kept open (per-request webhooks make one per URL), least recently used closed
MAX_OPEN_SINKS = 256
#: hosts that name no address a receiver could reach
_WILDCARDS = frozenset({"", "0.0.0.0", "::", "[::]"})


def links_base(settings: Settings) -> str:
    """The base URL put in front of the API's signed routes in notifications: the
    public URL, else the API's own address (a wildcard host: this machine's name)."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    host = socket.gethostname() if settings.host in _WILDCARDS else settings.host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{settings.port}"


def attempt_of(row: OutboxRow) -> int:
    """The attempt an event is about (its id is ``<prediction>:<type>:<attempt>``)."""
    tail = row.event_id.rpartition(":")[2]
    return int(tail) if tail.isdigit() else row.seq // 2


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential back-off with full jitter, for ``max_age_s`` after the event."""

    base_s: float = 0.5
    max_delay_s: float = 600.0
    max_age_s: float = 24 * 3600.0

    def delay_s(self, attempt: int, rng: random.Random) -> float:
        """Wait before try ``attempt + 1``: uniform in [0, min(max, base * 2^(attempt-1))],
        so many receivers failing together do not retry together."""
        ceiling = min(self.max_delay_s, self.base_s * 2 ** max(0, attempt - 1))
        return rng.uniform(0, ceiling)


#: how much of a receiver's answer an attempt keeps (shown to operators)
RESPONSE_KEPT = 1024


def _excerpt(text: str | None) -> str | None:
    """The first KB of an answer, without NUL (which PostgreSQL's text refuses)."""
    return None if not text else text[:RESPONSE_KEPT].replace("\x00", "\ufffd")


def result_of(
    row: OutboxRow,
    outcome: Outcome,
    *,
    worker_id: str,
    now: float,
    policy: RetryPolicy,
    rng: random.Random,
) -> DeliveryResult:
    """What to record for one attempt (pure)."""
    base = DeliveryResult(
        id=row.id,
        worker_id=worker_id,
        attempt=row.attempts,
        at=now,
        status=DeliveryStatus.DELIVERED,
        status_code=outcome.status_code,
        error=outcome.error,
        latency_ms=outcome.latency_ms,
        response=_excerpt(outcome.response),
    )
    if outcome.delivered:
        return base
    if outcome.stop:
        base.status = DeliveryStatus.STOPPED
        return base
    next_at = now + policy.delay_s(row.attempts, rng)
    if next_at - row.created_at > policy.max_age_s:
        base.status = DeliveryStatus.DEAD
        return base
    base.status, base.next_at = DeliveryStatus.PENDING, next_at
    return base


class DeliveryStore(Outbox, Records, Protocol):
    """The store roles the deliverer uses: the outbox it sends, the records it renders."""


class DeliveryHost(Protocol):
    """Where a node's deliverer runs, apart from the API's event loop: its own thread
    (:class:`~freight.agent.delivery_thread.DeliveryThread`) or process
    (:class:`~freight.agent.delivery_process.DeliveryProcess`)."""

    def start(self) -> None: ...

    def wake(self) -> None:
        """Something may be due (an outbox row was committed); from any thread, cheap."""

    async def stop(self, grace_s: float = 5.0) -> None:
        """Claim nothing more; sends in flight finish within the grace (their rows are
        sent again after the lease otherwise); return once it has ended."""


class SinkFor(Protocol):
    """Builds the sink of one subscription entry of a prediction's ``notify`` list."""

    def __call__(self, entry: dict[str, Any], secrets: WebhookSecrets) -> Sink: ...

    async def aclose(self) -> None:
        """Close what its sinks share (the webhooks' session), once they are closed."""


class Deliverer:
    def __init__(
        self,
        store: DeliveryStore,
        sink_for: SinkFor,
        *,
        worker_id: str,
        policy: RetryPolicy | None = None,
        concurrency: int = 32,
        timeout_s: float = 10.0,
        lease_s: float = 60.0,
        poll_s: float = 0.5,
        secrets_refresh_s: float = 30.0,
        secrets_overlap_s: float = 24 * 3600.0,
        storage: Storage | None = None,
        base_url: str = "",
        url_expires_s: int = 3600,
        callback_key: bytes | None = None,
    ) -> None:
        """``storage``, ``base_url``, ``url_expires_s``: how presigned download URLs are
        made (without ``storage``, events carry none); ``callback_key``: how a waiting
        callback step's answer URLs are signed (without it, events carry none)."""
        self._store = store
        self._callback_key = callback_key
        self._storage = storage
        self._base_url = base_url.rstrip("/")
        self._url_expires_s = url_expires_s
        self._sink_for = sink_for
        self._worker_id = worker_id
        self._policy = policy or RetryPolicy()
        self._slots = asyncio.Semaphore(concurrency)
        self._concurrency = concurrency
        self._timeout_s = timeout_s
        self._lease_s = max(lease_s, timeout_s * 2)
        self._poll_s = poll_s
        self._secrets_refresh_s = secrets_refresh_s
        self._secrets_overlap_s = secrets_overlap_s
        self._wake = asyncio.Event()
        self._rng = random.Random()
        self._sinks: OrderedDict[tuple[str, tuple[str, ...]], Sink] = OrderedDict()
        # each tenant's signing keys, and when they were read
        self._secrets: dict[str, tuple[WebhookSecrets, float]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._results: list[DeliveryResult] = []  # ended attempts, not yet recorded
        self._recorder: asyncio.Task[None] | None = None
        self._stopping = False

    def wake(self) -> None:
        """Something may be due (a completion just committed its outbox rows)."""
        self._wake.set()

    async def run(self) -> None:
        """Until :meth:`stop`: claim due rows and send each in its own task."""
        while not self._stopping:
            try:
                claimed = await self._claim()
            except Exception as exc:  # the store is down: try again after a poll
                log.warning("delivery: cannot claim (%s)", exc)
                claimed = 0
            if claimed == 0:
                await self._sleep()

    async def stop(self, grace_s: float = 5.0) -> None:
        """Claim nothing more; let sends in flight finish within the grace (their rows
        are sent again by someone after the lease otherwise); close the sinks."""
        self._stopping = True
        self._wake.set()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=grace_s)
        await self._record_all()  # what ended within the grace is recorded
        for sink in self._sinks.values():
            try:
                await sink.close()
            except Exception as exc:
                log.warning("delivery: closing sink %s: %s", sink.name, exc)
        self._sinks.clear()
        await self._sink_for.aclose()

    async def _sleep(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), self._poll_s)
        self._wake.clear()

    async def _claim(self) -> int:
        room = self._concurrency - len(self._tasks)
        if room <= 0:
            await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
            return 1
        rows = await self._store.claim_deliveries(
            room, worker_id=self._worker_id, lease_s=self._lease_s, now=time.time()
        )
        if not rows:
            return 0
        unread: Exception | None = None
        try:  # the batch's predictions in one read
            found = {p.id: p for p in await self._store.get_many([r.prediction_id for r in rows])}
        except Exception as exc:  # the store is down: these attempts fail, retried later
            log.warning("delivery: cannot read the claimed predictions (%s)", exc)
            found, unread = {}, exc
        for row in rows:
            task = asyncio.create_task(
                self._deliver(row, found.get(row.prediction_id), unread), name=f"deliver:{row.id}"
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(rows)

    async def _deliver(
        self, row: OutboxRow, prediction: Prediction | None, unread: Exception | None
    ) -> None:
        logsetup.bind(prediction_id=row.prediction_id)  # this task's log lines name it
        async with self._slots:
            try:
                if unread is not None:
                    raise unread
                outcome = await self._send(row, prediction)
            except Exception as exc:  # a bug in a sink must not lose the row
                if unread is None:
                    log.exception("delivery of %s failed", row.id)
                outcome = Outcome.failed(f"{type(exc).__name__}: {exc}")
            result = result_of(
                row,
                outcome,
                worker_id=self._worker_id,
                now=time.time(),
                policy=self._policy,
                rng=self._rng,
            )
            log.debug("delivery %s: %s", row.id, result.status)
            self._record(result)

    def _record(self, result: DeliveryResult) -> None:
        """Record with whatever else ends meanwhile: one transaction for them all."""
        self._results.append(result)
        if self._recorder is None or self._recorder.done():
            self._recorder = asyncio.create_task(self._record_all(), name="deliver:record")

    async def _record_all(self) -> None:
        if self._recorder is not None and self._recorder is not asyncio.current_task():
            await asyncio.gather(self._recorder, return_exceptions=True)
        while self._results:
            batch, self._results = self._results, []
            try:
                await self._store.finish_deliveries(batch)
            except Exception as exc:  # left leased: sent again after the lease
                log.warning("delivery: cannot record %d attempts (%s)", len(batch), exc)
            # the next event of each of their subscriptions may be due (now, or later)
            self.wake()

    async def _send(self, row: OutboxRow, prediction: Prediction | None) -> Outcome:
        if prediction is None or prediction.notify is None:
            return Outcome.gone(error="the prediction no longer exists")
        entries: list[dict[str, Any]] = orjson.loads(prediction.notify)
        if row.subscription >= len(entries):
            return Outcome.gone(error="the subscription no longer exists")
        entry = entries[row.subscription]
        # a caller's webhook is signed with its tenant's secret; the operator's own
        # sinks (freight.yaml) with the operator's, whoever the prediction's tenant is
        signer = prediction.tenant if "url" in entry else DEFAULT_TENANT
        sink = await self._sink(entry, signer)
        if prediction.kind == JOB:  # a batch job: its own object and event types
            doc = JobDoc.from_json(prediction.definition or "{}")
            data = job_dict(prediction, doc, urls=await self._job_urls(prediction, doc))
            type_ = f"batch_job.{row.event_type}"
        elif row.event_type == callback.EVENT:  # a run's callback step waits
            data, type_ = await self._waiting(prediction, row), WAITING
        else:
            data, type_ = await self._view(prediction, row), f"prediction.{row.event_type}"
        event = Event.for_prediction(
            row.event_id,
            data,
            timestamp=row.created_at,
            type=type_,
            traceparent=prediction.trace_context,
        )
        if tracing.ENABLED:
            return await self._traced(sink, event, prediction, row)
        return await self._send_event(sink, event)

    async def _send_event(self, sink: Sink, event: Event) -> Outcome:
        began = time.monotonic()
        try:
            async with asyncio.timeout(self._timeout_s):
                outcome = await sink.send(event)
        except TimeoutError:
            outcome = Outcome.failed(f"no answer within {self._timeout_s:g} s")
        took = round((time.monotonic() - began) * 1000, 3)
        return dataclasses.replace(outcome, latency_ms=took)

    async def _traced(
        self, sink: Sink, event: Event, prediction: Prediction, row: OutboxRow
    ) -> Outcome:
        """One attempt as a span of the prediction's trace; what is sent carries the
        span's ``traceparent``, so the receiver's own spans join the trace."""
        span = tracing.start(
            "freight.deliver",
            tracing.context_of(prediction.trace_context),
            kind=tracing.PRODUCER,
            attributes={
                "freight.prediction_id": prediction.id,
                "freight.event": event.type,
                "freight.sink.type": sink.type,
                "freight.delivery.attempt": row.attempts,
            },
        )
        try:
            with tracing.current(span):
                sent = dataclasses.replace(event, traceparent=tracing.traceparent(span))
                outcome = await self._send_event(sink, sent)
            if outcome.status_code is not None:
                span.set_attribute("freight.delivery.status_code", outcome.status_code)
            if not outcome.delivered:
                tracing.failed(span, outcome.error or "not delivered")
            return outcome
        finally:
            span.end()

    async def _view(self, prediction: Prediction, row: OutboxRow) -> dict[str, Any]:
        """The prediction as GET renders it; for ``started``, as that attempt started
        (a run's steps map then left out: what it was at the start is not kept)."""
        if row.event_type == "started":
            started = as_started(prediction, attempt_of(row), row.created_at)
            return await render(started, self._presign)
        steps = await self._store.steps(prediction.id) if prediction.kind == Kind.PIPELINE else None
        return await render(prediction, self._presign, steps=steps)

    async def _waiting(self, run: Prediction, row: OutboxRow) -> dict[str, Any]:
        """A ``step.waiting`` event: the run as GET renders it (with its steps), and under
        ``callback`` the wait it announces (its step, input, deadline and answer URLs,
        signed for that wait: once it is over they answer 409; ``deadline`` then null)."""
        steps = await self._store.steps(run.id)
        data = await render(run, self._presign, steps=steps)
        add_callbacks(data, run, steps, self._token, self._absolute)
        claim = callback.claim_of_event(row.event_id)
        step = None if claim is None else await self._store.get(claim.row_id)
        if claim is None or step is None or self._callback_key is None:
            return data
        token = callback.token_of(self._callback_key, claim)
        announced = callback_dict(step, token, self._absolute)
        if not (claim.names(step) and callback.waits(step)):
            announced |= {"attempt": claim.attempt, "deadline": None}
        data["callback"] = announced
        return data

    def _token(self, row: Prediction) -> str | None:
        if self._callback_key is None:
            return None
        return callback.token_of(self._callback_key, callback.Claim.of(row))

    def _absolute(self, path: str) -> str:
        return self._base_url + path

    async def _presign(self, key: str) -> str | None:
        if self._storage is None:
            return None
        url = await self._storage.presign_get(key, expires_s=self._url_expires_s)
        return url if "://" in url else self._base_url + url

    async def _job_urls(self, job: Prediction, doc: JobDoc) -> dict[str, str | None]:
        """A job's download URLs as its GET gives them: each finished output and error
        file, and the manifest once the job ended and wrote it."""
        keys = [o.output_key for o in doc.outputs]
        keys += [o.errors_key for o in doc.outputs if o.errors_key]
        manifest = doc.output_prefix + "manifest.json"
        if job.status.terminal and self._storage and await self._storage.stat(manifest):
            keys.append(manifest)
        return {key: await self._presign(key) for key in keys}

    async def _sink(self, entry: dict[str, Any], tenant: str) -> Sink:
        secrets = await self._current_secrets(tenant)
        key = (orjson.dumps(entry, option=orjson.OPT_SORT_KEYS).decode(), secrets.all)
        sink = self._sinks.get(key)
        if sink is None:
            sink = self._sink_for(entry, secrets)
            await sink.open()
            self._sinks[key] = sink
            if len(self._sinks) > MAX_OPEN_SINKS:  # one per caller URL: keep it bounded
                _, oldest = self._sinks.popitem(last=False)
                await oldest.close()
        self._sinks.move_to_end(key)
        return sink

    async def _current_secrets(self, tenant: str) -> WebhookSecrets:
        """A tenant's signing keys (one tenant's receiver can neither verify nor forge
        another's events), re-read every ``secrets_refresh_s`` so that a rotation done
        from any machine reaches every worker."""
        cached = self._secrets.get(tenant)
        if cached is None or time.monotonic() - cached[1] > self._secrets_refresh_s:
            keys = await self._store.webhook_secrets(
                now=time.time(), overlap_s=self._secrets_overlap_s, tenant=tenant
            )
            if not keys:
                secret = WebhookSecrets.generate().current
                await self._store.rotate_webhook_secret(secret, now=time.time(), tenant=tenant)
                keys = [secret]
            cached = self._secrets[tenant] = (WebhookSecrets(keys[0], keys[1:]), time.monotonic())
        return cached[0]


def deliverer_for(
    settings: Settings, store: DeliveryStore, storage: Storage, sink_for: SinkFor, worker_id: str
) -> Deliverer:
    """The deliverer the settings describe."""
    return Deliverer(
        store,
        sink_for,
        worker_id=worker_id,
        policy=RetryPolicy(
            base_s=settings.delivery_backoff_s,
            max_delay_s=settings.delivery_backoff_max_s,
            max_age_s=settings.delivery_max_age_s,
        ),
        concurrency=settings.delivery_concurrency,
        timeout_s=settings.delivery_timeout_s,
        lease_s=settings.delivery_lease_s,
        poll_s=settings.poll_interval_s,
        secrets_overlap_s=settings.webhook_secret_overlap_s,
        storage=storage,  # events carry presigned URLs as GET does
        base_url=links_base(settings),
        url_expires_s=settings.download_url_expires_s,
        # a callback step's waiting event carries its answer URLs (one key per cluster)
        callback_key=callback.key_of(settings.secret()),
    )


__all__ = [
    "Deliverer",
    "DeliveryHost",
    "RetryPolicy",
    "SinkFor",
    "attempt_of",
    "deliverer_for",
    "links_base",
    "result_of",
]
