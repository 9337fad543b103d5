"""The asyncio client: runs the shared flows over aiohttp (or an httpx transport in tests).

The twin of ``_sync.py``; the protocol itself lives in ``_flows.py``. File
uploads and downloads move their disk I/O to a thread chunk by chunk, so a
1 GB payload neither sits in memory nor blocks the event loop.
"""

from __future__ import annotations

import asyncio
import builtins
import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from contextlib import aclosing
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, TypeVar, Unpack, overload

import httpx

from freight.client import _flows, _logs
from freight.client._aiohttp import AiohttpTransport
from freight.client._chunks import ChunkEvent, stream_call
from freight.client._events import Event, Follower, check_stream, outcome
from freight.client._flows import BatchJobOptions, When
from freight.client._logs import LogEvent, LogLine
from freight.client._models import (
    BatchJob,
    CallbackAnswered,
    Created,
    Delivery,
    FreightClientError,
    HandleBase,
    ModelInfo,
    PipelineInfo,
    Prediction,
    StreamEvent,
    UsageLine,
)
from freight.client._protocol import (
    CHUNK_BYTES,
    Call,
    Flow,
    ServerKey,
    Sleep,
    Step,
    partial_path,
    resolve_key,
    resolve_url,
    send_kwargs,
    transport_error,
)

T = TypeVar("T")


class AsyncPredictionHandle(HandleBase):
    """A prediction being followed with an :class:`AsyncClient`."""

    __slots__ = ("_client",)

    def __init__(self, client: AsyncClient, prediction: Prediction) -> None:
        super().__init__(prediction)
        self._client = client

    async def refresh(self) -> Prediction:
        self.prediction = await self._client.get(self.id)
        return self.prediction

    async def wait(self, timeout: float | None = None, poll_s: float = 0.5) -> Prediction:
        """Wait until terminal (TimeoutError after ``timeout`` seconds) and return it:
        long-polls the server, which holds each answer until the prediction ends."""
        if not self.prediction.terminal:
            self.prediction = await self._client.wait(self.id, timeout=timeout, poll_s=poll_s)
        return self.prediction

    async def output(self, timeout: float | None = None) -> Any:
        """The output (JSON value, or bytes), waiting for it; raises if the prediction failed."""
        prediction = await self.wait(timeout)
        return await self._client._drive(_flows.output(prediction, timeout=timeout))

    async def download(self, path: str | Path, timeout: float | None = None) -> Path:
        """Stream the output into ``path`` without holding it in memory."""
        prediction = await self.wait(timeout)
        return await self._client._drive(_flows.download(prediction, Path(path), timeout=timeout))

    async def cancel(self) -> Prediction:
        self.prediction = await self._client.cancel(self.id)
        return self.prediction

    def events(self, after: int | None = None) -> AsyncIterator[StreamEvent]:
        """Its events as they happen (see :meth:`AsyncClient.events`)."""
        return self._client.events(self.id, after=after)

    async def deliveries(self) -> list[Delivery]:
        """Its notifications and how their delivery went."""
        return await self._client.deliveries(self.id)


class AsyncClient:
    """An asyncio freight client. ``url``: argument, else ``$FREIGHT_URL``, else localhost:8000.

    The network is aiohttp (see ``_aiohttp.py`` for why); ``transport`` replaces it
    with an httpx transport (an ``httpx.MockTransport`` in tests).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        timeout_s: float = 30.0,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        api_key: str | None = None,
    ) -> None:
        self.url = resolve_url(url)
        key = resolve_key(api_key)
        self._http: httpx.AsyncClient | None = None
        self._net: AiohttpTransport | None = None
        if transport is not None:
            self._http = httpx.AsyncClient(
                base_url=self.url,
                timeout=timeout_s,
                headers=headers,
                transport=transport,
                auth=ServerKey(key, self.url) if key else None,
            )
        else:
            self._net = AiohttpTransport(self.url, timeout_s, dict(headers or {}), key)

    # -- predictions ----------------------------------------------------------------------

    async def predict(
        self,
        target: str,
        input: Any = None,
        *,
        data: bytes | None = None,
        file: str | Path | None = None,
        content_type: str | None = None,
        input_uri: str | None = None,
        metadata: dict[str, Any] | None = None,
        priority: int | None = None,
        ttl_s: float | None = None,
        idempotency_key: str | None = None,
        wait: float | None = None,
        webhook: str | None = None,
        webhook_events: Sequence[str] | None = None,
    ) -> AsyncPredictionHandle:
        """Queue a prediction (uploading ``data``/``file`` when given) and return its handle.

        ``webhook``: a URL to POST its events to (``webhook_events``: ``started``,
        ``completed``; the server's default is ``completed`` only)."""
        flow = _flows.create(
            target,
            input,
            data=data,
            file=None if file is None else Path(file),
            content_type=content_type,
            input_uri=input_uri,
            metadata=metadata,
            priority=priority,
            ttl_s=ttl_s,
            idempotency_key=idempotency_key,
            wait=wait,
            webhook=webhook,
            webhook_events=webhook_events,
        )
        return AsyncPredictionHandle(self, await self._drive(flow))

    async def run(
        self,
        target: str,
        input: Any = None,
        *,
        data: bytes | None = None,
        content_type: str | None = None,
        timeout: float | None = None,
        webhook: str | None = None,
        webhook_events: Sequence[str] | None = None,
    ) -> Any:
        """Predict in real time and return the output (awaited if past the server deadline)."""
        flow = _flows.run(
            target,
            input,
            data=data,
            content_type=content_type,
            timeout=timeout,
            webhook=webhook,
            webhook_events=webhook_events,
        )
        return await self._drive(flow)

    async def run_pipeline(
        self,
        name: str,
        input: Any = None,
        *,
        timeout: float | None = None,
        webhook: str | None = None,
        webhook_events: Sequence[str] | None = None,
    ) -> Any:
        """Run a pipeline in real time and return its output (awaited if past the server
        deadline). ``run`` is for models: a pipeline has its own route."""
        flow = _flows.run_pipeline(
            name, input, timeout=timeout, webhook=webhook, webhook_events=webhook_events
        )
        return await self._drive(flow)

    async def get(self, prediction_id: str, *, wait: float | None = None) -> Prediction:
        return await self._drive(_flows.get(prediction_id, wait=wait))

    async def handle(self, prediction_id: str) -> AsyncPredictionHandle:
        """A handle on an existing prediction (one request to fetch its state)."""
        return AsyncPredictionHandle(self, await self.get(prediction_id))

    async def wait(
        self, prediction_id: str, *, timeout: float | None = None, poll_s: float = 0.5
    ) -> Prediction:
        """The prediction once terminal: long-polls ``GET /v1/predictions/{id}?wait=``,
        which the server answers at once for a finished one, else holds until it ends
        (one request, no stream to set up: a burst of waits costs the server least);
        a server that answers early anyway is asked again every ``poll_s`` at worst."""
        return await self._drive(_flows.wait_for(prediction_id, timeout=timeout, poll_s=poll_s))

    @overload
    def events(
        self,
        prediction_id: str,
        *,
        after: int | str | None = None,
        timeout: float | None = None,
        logs: Literal[False] = False,
        chunks: Literal[False] = False,
    ) -> AsyncGenerator[StreamEvent, None]: ...

    @overload
    def events(
        self,
        prediction_id: str,
        *,
        after: int | str | None = None,
        timeout: float | None = None,
        logs: bool,
        chunks: Literal[False] = False,
    ) -> AsyncGenerator[StreamEvent | LogEvent, None]: ...

    @overload
    def events(
        self,
        prediction_id: str,
        *,
        after: int | str | None = None,
        timeout: float | None = None,
        logs: bool = False,
        chunks: bool,
    ) -> AsyncGenerator[Event, None]: ...

    async def events(
        self,
        prediction_id: str,
        *,
        after: int | str | None = None,
        timeout: float | None = None,
        logs: bool = False,
        chunks: bool = False,
    ) -> AsyncGenerator[Event, None]:
        """The prediction's events (``GET /v1/predictions/{id}/events``) from the start,
        or after event ``after`` (an event's ``cursor``, or its ``id``), until its final
        one; dropped connections are resumed without repeats. With ``logs``, the lines
        its model prints too, each a :class:`LogEvent` as it arrives; with ``chunks``, a
        streaming model's chunks, each a :class:`ChunkEvent`. TimeoutError once
        ``timeout`` seconds have passed."""
        follower = Follower(prediction_id, after, timeout, logs=logs, chunks=chunks)
        async with aclosing(self._follow(follower)) as events:
            async for event in events:
                yield event

    async def stream(
        self,
        target: str,
        input: Any = None,
        *,
        data: bytes | None = None,
        content_type: str | None = None,
        timeout: float | None = None,
    ) -> AsyncGenerator[Any, None]:
        """Run a streaming model in real time and yield each chunk as it yields it (see
        :meth:`Client.stream`)."""
        follower = Follower(None, None, timeout, chunks=True)
        follower.start = stream_call(
            target, input, data=data, content_type=content_type, read_s=follower.read_s
        )
        async with aclosing(self._follow(follower)) as events:
            async for event in events:
                if isinstance(event, ChunkEvent):
                    yield event.chunk.value
        outcome(follower)

    async def _follow(self, follower: Follower) -> AsyncGenerator[Event, None]:
        """The events a follower asks for, across connections, until its final one."""
        while not follower.done:
            error: FreightClientError | None = None
            try:
                async with aclosing(self._lines(follower.call())) as lines:
                    async for line in lines:
                        event = follower.feed(line)
                        if event is not None:
                            yield event
                        if follower.done:
                            return
            except FreightClientError as exc:
                error = exc
            if pause := follower.ended(error):
                await asyncio.sleep(pause)

    async def deliveries(self, prediction_id: str) -> builtins.list[Delivery]:
        """The prediction's notifications (one per event and subscription) and their tries."""
        return await self._drive(_flows.deliveries(prediction_id))

    async def redeliver(self, delivery_id: str) -> Delivery:
        """Send a notification (``Delivery.id``) again now, with its original event id: one
        that died, was stopped by a 410 or waits for its retry. Raises
        :class:`FreightClientError` 404 ``delivery_not_found`` (unknown, or another
        tenant's), 409 ``invalid_state`` (being sent, or delivered)."""
        return await self._drive(_flows.redeliver(delivery_id))

    async def cancel(self, prediction_id: str) -> Prediction:
        return await self._drive(_flows.cancel(prediction_id))

    async def callback_success(self, url_or_token: str, output: Any = None) -> CallbackAnswered:
        """Answer a waiting callback step (``step.callback.urls``, or its token): it
        succeeds with ``output`` as its output, checked against the step's schema first.
        Raises :class:`FreightClientError` 400 ``answer_invalid`` (nothing changed), 403
        ``invalid_callback_token``, 409 ``callback_closed`` (answered, timed out) or
        ``callback_superseded`` (the token of an earlier wait)."""
        flow = _flows.callback_answer(url_or_token, "success", output, has_body=True)
        return await self._drive(flow)

    async def callback_failure(
        self, url_or_token: str, error: str = "", cause: str = ""
    ) -> CallbackAnswered:
        """Answer a waiting callback step with a failure: it fails with
        ``callback_failed``, its message naming ``error`` and ``cause``."""
        body = {"error": error, "cause": cause}
        flow = _flows.callback_answer(url_or_token, "failure", body, has_body=True)
        return await self._drive(flow)

    async def callback_heartbeat(self, url_or_token: str) -> CallbackAnswered:
        """Tell a waiting callback step its answer is being worked on: its deadline
        moves to now + its ``heartbeat_s`` (never past its ``timeout_s``)."""
        return await self._drive(_flows.callback_answer(url_or_token, "heartbeat"))

    async def create_many(self, items: Sequence[Mapping[str, Any]]) -> builtins.list[Created]:
        """Create many predictions at once (``POST /v1/predictions/bulk``, 1,000 per
        request): each item a dict as :meth:`create`'s body (``target``, ``input`` or
        ``input_uri``, ``metadata``, ``priority``, ``ttl_s``, ``webhook``: ``{"url",
        "events"}``) and its own ``idempotency_key``. Returns one :class:`Created` per
        item, in order: an item refused carries its error, the others are created."""
        return await self._drive(_flows.create_many(items))

    async def redrive(self, prediction_id: str) -> Prediction:
        """Restart a failed, timed-out or canceled pipeline run where it stopped: the
        steps that succeeded keep their outputs, the others run again (``redrives``
        counts it). Raises :class:`FreightClientError` 404 ``prediction_not_found``,
        409 ``invalid_state`` (not a run, or one that is running or succeeded)."""
        return await self._drive(_flows.redrive(prediction_id))

    async def logs(
        self, prediction_id: str, after: int = 0, limit: int = 1000
    ) -> builtins.list[LogLine]:
        """What the model printed or logged for the prediction: the lines whose seq is over
        ``after`` (at most ``limit``)."""
        return await self._drive(_logs.logs(prediction_id, after=after, limit=limit))

    async def follow_logs(
        self, prediction_id: str, after: int = 0, *, poll_s: float = 0.5
    ) -> AsyncIterator[LogLine]:
        """Each line as it is written, until the prediction has ended and its last line
        was read."""
        while True:
            step = _logs.follow_step(prediction_id, after, poll_s=poll_s)
            lines, last = await self._drive(step)
            for line in lines:
                yield line
            after = lines[-1].seq if lines else after
            if last:
                return

    async def list(
        self, *, target: str | None = None, status: str | None = None, limit: int = 50
    ) -> AsyncIterator[Prediction]:
        """Every matching prediction, fetching pages of ``limit`` lazily via the cursor."""
        cursor: str | None = None
        while True:
            flow = _flows.page(target=target, status=status, cursor=cursor, limit=limit)
            items, cursor = await self._drive(flow)
            for item in items:
                yield item
            if cursor is None:
                return

    async def models(self) -> builtins.list[ModelInfo]:
        return await self._drive(_flows.models())

    async def usage(
        self,
        *,
        start: When | None = None,
        end: When | None = None,
        group_by: Sequence[str] = ("tenant", "target"),
        tenant: str | None = None,
    ) -> builtins.list[UsageLine]:
        """What was run, and what it cost: predictions ended by outcome, compute, GPU,
        queue and cold-start seconds, bytes in and out, summed over the whole hours
        covering ``[start, end)`` (epoch seconds, datetimes or ISO 8601; the server's
        default: the last 24 hours) per ``group_by`` (any of tenant, target, kind, hour,
        status). ``tenant``: another tenant's (an admin key's); a key sees its own."""
        return await self._drive(
            _flows.usage(start=start, end=end, group_by=group_by, tenant=tenant)
        )

    async def pipelines(self) -> builtins.list[PipelineInfo]:
        """Every declared pipeline, by name."""
        return await self._drive(_flows.pipelines())

    async def pipeline(self, name: str) -> PipelineInfo:
        """One pipeline: its steps, their dependencies, and its graph (Mermaid)."""
        return await self._drive(_flows.pipeline(name))

    async def model(self, name: str) -> ModelInfo:
        """One model: settings, replicas, backlog, and its autoscaler's last decisions."""
        return await self._drive(_flows.model(name))

    async def health(self) -> dict[str, Any]:
        return await self._drive(_flows.health())

    # -- batch jobs -----------------------------------------------------------------------

    async def create_batch_job(
        self, target: str, input: str | Sequence[str], **options: Unpack[BatchJobOptions]
    ) -> BatchJob:
        """Create a batch job over ``input``: a stored object's URI (a prefix ending in
        ``/`` reads every file under it), or the names of files to upload next (the job
        then waits in ``awaiting_input``; see :meth:`upload_batch_input`). ``options``
        (:class:`~freight.client.BatchJobOptions`): ``output`` (a prefix for the results,
        default ``freight://batch/<id>/output/``), split, records_per_call, ... ; one
        left None takes the server's default."""
        body = _flows.batch_job_body(target, input, **options)
        return await self._drive(_flows.create_batch_job(body))

    async def batch(
        self,
        target: str,
        input: str | Path,
        *,
        progress: Callable[[str, int, int], None] | None = None,
        **options: Unpack[BatchJobOptions],
    ) -> BatchJob:
        """Run ``target`` over ``input`` and return the job, queued: an object URI is
        read in place; a local file, or every regular file of a local directory (named
        relative to it), is uploaded first (``progress(name, sent, total)`` follows each).
        ``options``: those of :meth:`create_batch_job`."""
        flow = _flows.batch(target, input, progress=progress, options=options)
        return await self._drive(flow)

    async def upload_batch_input(
        self,
        job: BatchJob,
        name: str,
        path: str | Path,
        progress: Callable[[int, int], None] | None = None,
        *,
        content_type: str | None = None,
    ) -> BatchJob:
        """Stream the file at ``path`` to ``job.upload_urls[name]``; the job's last upload
        queues it. ``progress(sent, total)`` follows it."""
        flow = _flows.upload_batch_input(
            job, name, Path(path), content_type=content_type, progress=progress
        )
        return await self._drive(flow)

    async def batch_job(self, job_id: str) -> BatchJob:
        return await self._drive(_flows.get_batch_job(job_id))

    async def wait_batch_job(
        self, job_id: str, *, timeout: float | None = None, poll_s: float = 1.0
    ) -> BatchJob:
        """The job once terminal, polled every ``poll_s`` seconds (TimeoutError after
        ``timeout``)."""
        return await self._drive(_flows.wait_batch_job(job_id, timeout=timeout, poll_s=poll_s))

    async def batch_jobs(
        self, *, status: str | None = None, target: str | None = None, limit: int = 50
    ) -> AsyncIterator[BatchJob]:
        """Every matching batch job, newest first, fetching pages of ``limit`` lazily."""
        cursor: str | None = None
        while True:
            flow = _flows.batch_page(status=status, target=target, cursor=cursor, limit=limit)
            items, cursor = await self._drive(flow)
            for item in items:
                yield item
            if cursor is None:
                return

    async def cancel_batch_job(self, job_id: str) -> BatchJob:
        """Stop the job; the records done so far stay in its outputs."""
        return await self._drive(_flows.cancel_batch_job(job_id))

    async def download(
        self, url: str, path: str | Path, progress: Callable[[int, int], None] | None = None
    ) -> Path:
        """Stream ``url`` (e.g. a batch output's presigned ``output_url``) into ``path``,
        never whole in memory; ``progress(received, total)`` follows it (total 0: unknown)."""
        return await self._drive(_flows.download_url(url, Path(path), progress=progress))

    # -- lifecycle ------------------------------------------------------------------------

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        if self._net is not None:
            await self._net.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- transport ------------------------------------------------------------------------

    async def _drive(self, flow: Flow[T]) -> T:
        reply: httpx.Response | None = None
        while True:
            try:
                step = flow.send(reply)
            except StopIteration as stop:
                result: T = stop.value
                return result
            reply = await self._perform(step)

    async def _perform(self, step: Step) -> httpx.Response | None:
        if isinstance(step, Sleep):
            await asyncio.sleep(step.seconds)
            return None
        try:
            if step.upload is None:
                return await self._send(step, step.content)
            with step.upload.open("rb") as f:
                total = os.fstat(f.fileno()).st_size
                return await self._send(step, _chunks(f, total, step.progress))
        except httpx.TransportError as exc:
            raise transport_error(exc, self.url) from exc

    async def _lines(self, call: Call) -> AsyncGenerator[str, None]:
        """The lines of an event stream, as they arrive."""
        if self._net is not None:
            async with aclosing(self._net.lines(call)) as lines:
                async for line in lines:
                    yield line
            return
        assert self._http is not None
        try:
            request = self._http.build_request(**send_kwargs(call), content=call.content)
            response = await self._http.send(request, stream=True)
            try:
                if response.is_error:
                    await response.aread()
                check_stream(response)
                async for line in response.aiter_lines():
                    yield line
            finally:
                await response.aclose()
        except httpx.TransportError as exc:
            raise transport_error(exc, self.url) from exc

    async def _send(
        self, call: Call, content: bytes | AsyncIterator[bytes] | None
    ) -> httpx.Response:
        if self._net is not None:
            return await self._net.send(call, content)
        assert self._http is not None
        request = self._http.build_request(**send_kwargs(call), content=content)
        response = await self._http.send(request, stream=True)
        try:
            if call.download_to is not None and response.is_success:
                await _save(response, call.download_to, call.progress)
            else:
                await response.aread()
        finally:
            await response.aclose()
        return response


async def _chunks(
    f: IO[bytes], total: int, progress: Callable[[int, int], None] | None
) -> AsyncIterator[bytes]:
    sent = 0
    while chunk := await asyncio.to_thread(f.read, CHUNK_BYTES):
        yield chunk
        sent += len(chunk)
        if progress is not None:
            progress(sent, total)


async def _save(
    response: httpx.Response, path: Path, progress: Callable[[int, int], None] | None
) -> None:
    """Stream the body to a temporary file, renamed into place only when complete."""
    part = partial_path(path)
    total = int(response.headers.get("content-length") or 0)
    received = 0
    try:
        with part.open("wb") as f:
            async for chunk in response.aiter_bytes(CHUNK_BYTES):
                await asyncio.to_thread(f.write, chunk)
                received += len(chunk)
                if progress is not None:
                    progress(received, total)
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
