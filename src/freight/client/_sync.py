"""The blocking client: runs the shared flows over an ``httpx.Client``.

All protocol logic lives in ``_flows.py``; this module only performs each
step (send a request, stream a file up or down, sleep) and exposes the flows
as methods. ``_async.py`` is its twin for asyncio.
"""

from __future__ import annotations

import builtins
import os
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import closing
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, TypeVar, Unpack, overload

import httpx

from freight.client import _flows, _logs
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


class PredictionHandle(HandleBase):
    """A prediction being followed with a :class:`Client`."""

    __slots__ = ("_client",)

    def __init__(self, client: Client, prediction: Prediction) -> None:
        super().__init__(prediction)
        self._client = client

    def refresh(self) -> Prediction:
        self.prediction = self._client.get(self.id)
        return self.prediction

    def wait(self, timeout: float | None = None, poll_s: float = 0.5) -> Prediction:
        """Block until terminal (TimeoutError after ``timeout`` seconds) and return it:
        long-polls the server, which holds each answer until the prediction ends."""
        if not self.prediction.terminal:
            self.prediction = self._client.wait(self.id, timeout=timeout, poll_s=poll_s)
        return self.prediction

    def output(self, timeout: float | None = None) -> Any:
        """The output (JSON value, or bytes), waiting for it; raises if the prediction failed."""
        return self._client._drive(_flows.output(self.wait(timeout), timeout=timeout))

    def download(self, path: str | Path, timeout: float | None = None) -> Path:
        """Stream the output into ``path`` without holding it in memory."""
        flow = _flows.download(self.wait(timeout), Path(path), timeout=timeout)
        return self._client._drive(flow)

    def cancel(self) -> Prediction:
        self.prediction = self._client.cancel(self.id)
        return self.prediction

    def events(self, after: int | None = None) -> Iterator[StreamEvent]:
        """Its events as they happen (see :meth:`Client.events`)."""
        return self._client.events(self.id, after=after)

    def deliveries(self) -> list[Delivery]:
        """Its notifications and how their delivery went."""
        return self._client.deliveries(self.id)


class Client:
    """A blocking freight client. ``url``: argument, else ``$FREIGHT_URL``, else localhost:8000.

    ``transport`` replaces the network (an ``httpx.MockTransport`` in tests);
    ``upload_progress(sent, total)`` / ``download_progress(received, total)`` are
    called as file uploads and downloads stream (the CLI's bars; total 0 = unknown).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        timeout_s: float = 30.0,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
        upload_progress: Callable[[int, int], None] | None = None,
        download_progress: Callable[[int, int], None] | None = None,
        api_key: str | None = None,
    ) -> None:
        self.url = resolve_url(url)
        key = resolve_key(api_key)
        self.upload_progress = upload_progress
        self.download_progress = download_progress
        self._http = httpx.Client(
            base_url=self.url,
            timeout=timeout_s,
            headers=headers,
            transport=transport,
            auth=ServerKey(key, self.url) if key else None,
        )

    # -- predictions ----------------------------------------------------------------------

    def predict(
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
    ) -> PredictionHandle:
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
        return PredictionHandle(self, self._drive(flow))

    def run(
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
        return self._drive(flow)

    def run_pipeline(
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
        return self._drive(flow)

    def get(self, prediction_id: str, *, wait: float | None = None) -> Prediction:
        return self._drive(_flows.get(prediction_id, wait=wait))

    def handle(self, prediction_id: str) -> PredictionHandle:
        """A handle on an existing prediction (one request to fetch its state)."""
        return PredictionHandle(self, self.get(prediction_id))

    def wait(
        self, prediction_id: str, *, timeout: float | None = None, poll_s: float = 0.5
    ) -> Prediction:
        """The prediction once terminal: long-polls ``GET /v1/predictions/{id}?wait=``,
        which the server answers at once for a finished one, else holds until it ends
        (one request, no stream to set up: a burst of waits costs the server least);
        a server that answers early anyway is asked again every ``poll_s`` at worst."""
        return self._drive(_flows.wait_for(prediction_id, timeout=timeout, poll_s=poll_s))

    @overload
    def events(
        self,
        prediction_id: str,
        *,
        after: int | str | None = None,
        timeout: float | None = None,
        logs: Literal[False] = False,
        chunks: Literal[False] = False,
    ) -> Generator[StreamEvent, None, None]: ...

    @overload
    def events(
        self,
        prediction_id: str,
        *,
        after: int | str | None = None,
        timeout: float | None = None,
        logs: bool,
        chunks: Literal[False] = False,
    ) -> Generator[StreamEvent | LogEvent, None, None]: ...

    @overload
    def events(
        self,
        prediction_id: str,
        *,
        after: int | str | None = None,
        timeout: float | None = None,
        logs: bool = False,
        chunks: bool,
    ) -> Generator[Event, None, None]: ...

    def events(
        self,
        prediction_id: str,
        *,
        after: int | str | None = None,
        timeout: float | None = None,
        logs: bool = False,
        chunks: bool = False,
    ) -> Generator[Event, None, None]:
        """The prediction's events (``GET /v1/predictions/{id}/events``) from the start,
        or after event ``after`` (an event's ``cursor``, or its ``id``), until its final
        one; dropped connections are resumed without repeats. With ``logs``, the lines
        its model prints too, each a :class:`LogEvent` as it arrives; with ``chunks``, a
        streaming model's chunks, each a :class:`ChunkEvent`. TimeoutError once
        ``timeout`` seconds have passed."""
        yield from self._follow(Follower(prediction_id, after, timeout, logs=logs, chunks=chunks))

    def stream(
        self,
        target: str,
        input: Any = None,
        *,
        data: bytes | None = None,
        content_type: str | None = None,
        timeout: float | None = None,
    ) -> Generator[Any, None, None]:
        """Run a streaming model (its ``predict`` a generator) on ``input`` (JSON) or
        ``data`` (bytes of ``content_type``), in real time, and yield each chunk as it
        yields it: the text, the JSON value or the bytes. A connection that drops is
        resumed on the prediction's event stream, no chunk lost or seen twice; a model
        at zero replicas is waited for. Raises :class:`FreightClientError` 424 with the
        prediction's error when it fails (after the chunks it yielded before), or is
        canceled; TimeoutError once ``timeout`` seconds have passed."""
        follower = Follower(None, None, timeout, chunks=True)
        follower.start = stream_call(
            target, input, data=data, content_type=content_type, read_s=follower.read_s
        )
        for event in self._follow(follower):
            if isinstance(event, ChunkEvent):
                yield event.chunk.value
        outcome(follower)

    def _follow(self, follower: Follower) -> Generator[Event, None, None]:
        """The events a follower asks for, across connections, until its final one."""
        while not follower.done:
            error: FreightClientError | None = None
            try:
                with closing(self._lines(follower.call())) as lines:
                    for line in lines:
                        event = follower.feed(line)
                        if event is not None:
                            yield event
                        if follower.done:
                            return
            except FreightClientError as exc:
                error = exc
            if pause := follower.ended(error):
                time.sleep(pause)

    def deliveries(self, prediction_id: str) -> builtins.list[Delivery]:
        """The prediction's notifications (one per event and subscription) and their tries."""
        return self._drive(_flows.deliveries(prediction_id))

    def redeliver(self, delivery_id: str) -> Delivery:
        """Send a notification (``Delivery.id``) again now, with its original event id: one
        that died, was stopped by a 410 or waits for its retry. Raises
        :class:`FreightClientError` 404 ``delivery_not_found`` (unknown, or another
        tenant's), 409 ``invalid_state`` (being sent, or delivered)."""
        return self._drive(_flows.redeliver(delivery_id))

    def cancel(self, prediction_id: str) -> Prediction:
        return self._drive(_flows.cancel(prediction_id))

    def callback_success(self, url_or_token: str, output: Any = None) -> CallbackAnswered:
        """Answer a waiting callback step (``step.callback.urls``, or its token): it
        succeeds with ``output`` as its output, checked against the step's schema first.
        Raises :class:`FreightClientError` 400 ``answer_invalid`` (nothing changed), 403
        ``invalid_callback_token``, 409 ``callback_closed`` (answered, timed out) or
        ``callback_superseded`` (the token of an earlier wait)."""
        flow = _flows.callback_answer(url_or_token, "success", output, has_body=True)
        return self._drive(flow)

    def callback_failure(
        self, url_or_token: str, error: str = "", cause: str = ""
    ) -> CallbackAnswered:
        """Answer a waiting callback step with a failure: it fails with
        ``callback_failed``, its message naming ``error`` and ``cause``."""
        body = {"error": error, "cause": cause}
        flow = _flows.callback_answer(url_or_token, "failure", body, has_body=True)
        return self._drive(flow)

    def callback_heartbeat(self, url_or_token: str) -> CallbackAnswered:
        """Tell a waiting callback step its answer is being worked on: its deadline
        moves to now + its ``heartbeat_s`` (never past its ``timeout_s``)."""
        return self._drive(_flows.callback_answer(url_or_token, "heartbeat"))

    def create_many(self, items: Sequence[Mapping[str, Any]]) -> builtins.list[Created]:
        """Create many predictions at once (``POST /v1/predictions/bulk``, 1,000 per
        request): each item a dict as :meth:`create`'s body (``target``, ``input`` or
        ``input_uri``, ``metadata``, ``priority``, ``ttl_s``, ``webhook``: ``{"url",
        "events"}``) and its own ``idempotency_key``. Returns one :class:`Created` per
        item, in order: an item refused carries its error, the others are created."""
        return self._drive(_flows.create_many(items))

    def redrive(self, prediction_id: str) -> Prediction:
        """Restart a failed, timed-out or canceled pipeline run where it stopped: the
        steps that succeeded keep their outputs, the others run again (``redrives``
        counts it). Raises :class:`FreightClientError` 404 ``prediction_not_found``,
        409 ``invalid_state`` (not a run, or one that is running or succeeded)."""
        return self._drive(_flows.redrive(prediction_id))

    def logs(self, prediction_id: str, after: int = 0, limit: int = 1000) -> builtins.list[LogLine]:
        """What the model printed or logged for the prediction: the lines whose seq is over
        ``after`` (at most ``limit``)."""
        return self._drive(_logs.logs(prediction_id, after=after, limit=limit))

    def follow_logs(
        self, prediction_id: str, after: int = 0, *, poll_s: float = 0.5
    ) -> Iterator[LogLine]:
        """Each line as it is written, until the prediction has ended and its last line
        was read."""
        while True:
            lines, last = self._drive(_logs.follow_step(prediction_id, after, poll_s=poll_s))
            yield from lines
            after = lines[-1].seq if lines else after
            if last:
                return

    def list(
        self, *, target: str | None = None, status: str | None = None, limit: int = 50
    ) -> Iterator[Prediction]:
        """Every matching prediction, fetching pages of ``limit`` lazily via the cursor."""
        cursor: str | None = None
        while True:
            flow = _flows.page(target=target, status=status, cursor=cursor, limit=limit)
            items, cursor = self._drive(flow)
            yield from items
            if cursor is None:
                return

    def models(self) -> builtins.list[ModelInfo]:
        return self._drive(_flows.models())

    def usage(
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
        return self._drive(_flows.usage(start=start, end=end, group_by=group_by, tenant=tenant))

    def pipelines(self) -> builtins.list[PipelineInfo]:
        """Every declared pipeline, by name."""
        return self._drive(_flows.pipelines())

    def pipeline(self, name: str) -> PipelineInfo:
        """One pipeline: its steps, their dependencies, and its graph (Mermaid)."""
        return self._drive(_flows.pipeline(name))

    def model(self, name: str) -> ModelInfo:
        """One model: settings, replicas, backlog, and its autoscaler's last decisions."""
        return self._drive(_flows.model(name))

    def health(self) -> dict[str, Any]:
        return self._drive(_flows.health())

    # -- batch jobs -----------------------------------------------------------------------

    def create_batch_job(
        self, target: str, input: str | Sequence[str], **options: Unpack[BatchJobOptions]
    ) -> BatchJob:
        """Create a batch job over ``input``: a stored object's URI (a prefix ending in
        ``/`` reads every file under it), or the names of files to upload next (the job
        then waits in ``awaiting_input``; see :meth:`upload_batch_input`). ``options``
        (:class:`~freight.client.BatchJobOptions`): ``output`` (a prefix for the results,
        default ``freight://batch/<id>/output/``), split, records_per_call, ... ; one
        left None takes the server's default."""
        body = _flows.batch_job_body(target, input, **options)
        return self._drive(_flows.create_batch_job(body))

    def batch(
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
        return self._drive(flow)

    def upload_batch_input(
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
        return self._drive(flow)

    def batch_job(self, job_id: str) -> BatchJob:
        return self._drive(_flows.get_batch_job(job_id))

    def wait_batch_job(
        self, job_id: str, *, timeout: float | None = None, poll_s: float = 1.0
    ) -> BatchJob:
        """The job once terminal, polled every ``poll_s`` seconds (TimeoutError after
        ``timeout``)."""
        return self._drive(_flows.wait_batch_job(job_id, timeout=timeout, poll_s=poll_s))

    def batch_jobs(
        self, *, status: str | None = None, target: str | None = None, limit: int = 50
    ) -> Iterator[BatchJob]:
        """Every matching batch job, newest first, fetching pages of ``limit`` lazily."""
        cursor: str | None = None
        while True:
            flow = _flows.batch_page(status=status, target=target, cursor=cursor, limit=limit)
            items, cursor = self._drive(flow)
            yield from items
            if cursor is None:
                return

    def cancel_batch_job(self, job_id: str) -> BatchJob:
        """Stop the job; the records done so far stay in its outputs."""
        return self._drive(_flows.cancel_batch_job(job_id))

    def download(
        self, url: str, path: str | Path, progress: Callable[[int, int], None] | None = None
    ) -> Path:
        """Stream ``url`` (e.g. a batch output's presigned ``output_url``) into ``path``,
        never whole in memory; ``progress(received, total)`` follows it (total 0: unknown)."""
        return self._drive(_flows.download_url(url, Path(path), progress=progress))

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- transport ------------------------------------------------------------------------

    def _drive(self, flow: Flow[T]) -> T:
        reply: httpx.Response | None = None
        while True:
            try:
                step = flow.send(reply)
            except StopIteration as stop:
                result: T = stop.value
                return result
            reply = self._perform(step)

    def _perform(self, step: Step) -> httpx.Response | None:
        if isinstance(step, Sleep):
            time.sleep(step.seconds)
            return None
        try:
            if step.upload is None:
                return self._send(step, step.content)
            with step.upload.open("rb") as f:
                total = os.fstat(f.fileno()).st_size
                progress = step.progress or self.upload_progress
                return self._send(step, _chunks(f, total, progress))
        except httpx.TransportError as exc:
            raise transport_error(exc, self.url) from exc

    def _lines(self, call: Call) -> Generator[str, None, None]:
        """The lines of an event stream, as they arrive."""
        try:
            request = self._http.build_request(**send_kwargs(call), content=call.content)
            response = self._http.send(request, stream=True)
            try:
                if response.is_error:
                    response.read()
                check_stream(response)
                yield from response.iter_lines()
            finally:
                response.close()
        except httpx.TransportError as exc:
            raise transport_error(exc, self.url) from exc

    def _send(self, call: Call, content: bytes | Iterator[bytes] | None) -> httpx.Response:
        request = self._http.build_request(**send_kwargs(call), content=content)
        response = self._http.send(request, stream=True)
        try:
            if call.download_to is not None and response.is_success:
                _save(response, call.download_to, call.progress or self.download_progress)
            else:
                response.read()
        finally:
            response.close()
        return response


def _chunks(
    f: IO[bytes], total: int, progress: Callable[[int, int], None] | None
) -> Iterator[bytes]:
    sent = 0
    while chunk := f.read(CHUNK_BYTES):
        yield chunk
        sent += len(chunk)
        if progress is not None:
            progress(sent, total)


def _save(
    response: httpx.Response, path: Path, progress: Callable[[int, int], None] | None
) -> None:
    """Stream the body to a temporary file, renamed into place only when complete.

    An identity-encoded body is read raw: httpx's decoding layer halved the
    throughput of 1 GB downloads here, and there is nothing to decode."""
    part = partial_path(path)
    total = int(response.headers.get("content-length") or 0)
    encoding = response.headers.get("content-encoding", "identity").lower()
    raw = encoding == "identity" and not response.is_stream_consumed  # (in-memory bodies)
    chunks = response.iter_raw(CHUNK_BYTES) if raw else response.iter_bytes(CHUNK_BYTES)
    received = 0
    try:
        with part.open("wb") as f:
            for chunk in chunks:
                f.write(chunk)
                received += len(chunk)
                if progress is not None:
                    progress(received, total)
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
