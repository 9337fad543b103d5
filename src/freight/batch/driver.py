"""The batch driver: claims batch jobs like predictions and runs them as chunks.

For each input file of a job the driver splits the records into chunks (streaming:
one chunk in memory at a time), queues each chunk as a prediction of the model
(kind ``chunk``, a lower priority than interactive traffic), keeps at most
``concurrency`` of them queued or running, and assembles the output file by
streaming the chunk outputs into it in input order as they finish. Replicas run
the chunks (``freight.runner.chunks``), so chunks batch, scale and retry like any
prediction.

Resuming: chunk ids are deterministic (job, file, piece) and splitting is too, so
a driver that takes over a job after a crash re-splits the current file, finds the
chunks already queued or done (done ones are not run again), and rewrites that
file's output from its first chunk; files already finished are skipped. An output
object only appears whole (put_stream), so no record is ever written twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson

from freight.batch import records, split
from freight.batch.formats import csv_header
from freight.batch.job import (
    CHUNK,
    QUEUE,
    FileOutput,
    JobDoc,
    chunk_id,
    chunk_keys,
    input_file,
)
from freight.batch.spec import CHUNK_MEDIA_TYPE, ChunkSpec, ChunkSummary, InputFile
from freight.errors import NotFoundError, StoreUnavailableError
from freight.events import CompletionHub, WorkSignal
from freight.ids import new_id
from freight.pipelines.runs import RUN, bundle_of, step_rows
from freight.prediction import Completion, Prediction, Status
from freight.project import Pipelines
from freight.storage.base import Storage
from freight.store.base import Store

log = logging.getLogger("freight.batch")

#: jobs one driver runs at once
MAX_JOBS = 4
#: the driver saves a job's progress at most this often
SAVE_EVERY_S = 0.5
JSONL_TYPE = "application/jsonl"
CSV_TYPE = "text/csv"


class _Lost(Exception):
    """The job is no longer this driver's (its lease went to another driver)."""


@dataclass(slots=True)
class _Pending:
    """A chunk in the window: queued or running, its output not yet assembled."""

    id: str
    piece: int
    first_line: int
    lines: int
    records: int
    output_key: str
    errors_key: str
    input_key: str


@dataclass(slots=True)
class _Run:
    """One job this driver holds."""

    row: Prediction
    doc: JobDoc
    canceled: bool = False
    lost: bool = False
    saved_at: float = 0.0


class BatchDriver:
    def __init__(
        self,
        store: Store,
        storage: Storage,
        *,
        signal: WorkSignal,
        hub: CompletionHub,
        worker_id: str,
        lease_s: float,
        poll_s: float,
        max_jobs: int = MAX_JOBS,
        pipelines: Pipelines | None = None,
    ) -> None:
        self._store = store
        self._storage = storage
        self._signal = signal
        self._hub = hub
        self._worker_id = worker_id
        self._lease_s = lease_s
        self._poll_s = poll_s
        self._max_jobs = max_jobs
        self._pipelines = pipelines or Pipelines()
        self._local: dict[str, asyncio.Task[None]] = {}  # pipeline chunks run here
        self._runs: dict[str, _Run] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False

    # -- lifecycle -----------------------------------------------------------------
    async def run(self) -> None:
        """Claim jobs while there is room; renew their leases."""
        beat = asyncio.create_task(self._heartbeats(), name="batch:heartbeat")
        try:
            while not self._stopping:
                try:
                    await self._claim()
                except StoreUnavailableError:
                    log.warning("store unavailable; the batch driver retries")
                    await asyncio.sleep(self._poll_s)
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat

    def stop(self) -> None:
        """Stop claiming and driving: the jobs held go back to the queue when their
        leases expire (or at once on an exclusive store's next start)."""
        self._stopping = True
        self._signal.notify(QUEUE)
        for task in self._tasks:
            task.cancel()

    def running_ids(self) -> list[str]:
        return list(self._runs)

    async def _claim(self) -> None:
        room = self._max_jobs - len(self._runs)
        rows = []
        if room > 0:
            rows = await self._store.claim(
                QUEUE, room, worker_id=self._worker_id, lease_s=self._lease_s, now=time.time()
            )
        for row in rows:
            run = _Run(row, JobDoc.from_json(row.definition or "{}"))
            self._runs[row.id] = run
            task = asyncio.create_task(self._drive(run), name=f"batch:{row.id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if not rows:
            await self._signal.wait(QUEUE, self._poll_s)

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self._lease_s / 3)
            ids = list(self._runs)
            if not ids:
                continue
            try:
                lost = await self._store.heartbeat(
                    self._worker_id, ids, lease_s=self._lease_s, now=time.time()
                )
            except StoreUnavailableError:
                continue
            for job_id in lost:
                run = self._runs.get(job_id)
                if run is not None:
                    await self._mark_gone(run)

    async def _mark_gone(self, run: _Run) -> None:
        row = await self._store.get(run.row.id)
        if row is not None and row.status == Status.CANCELED:
            run.canceled = True
        else:
            run.lost = True
        self._signal.notify(QUEUE)

    # -- one job -------------------------------------------------------------------
    async def _drive(self, run: _Run) -> None:
        try:
            await self._job(run)
        except _Lost:
            log.info("batch job %s went to another driver", run.row.id)
        except asyncio.CancelledError:
            raise
        except StoreUnavailableError:
            log.warning("store unavailable driving batch job %s: left to lease expiry", run.row.id)
        except Exception as exc:
            log.exception("batch job %s failed", run.row.id)
            run.doc.error = {"code": "batch_error", "message": str(exc)}
            with contextlib.suppress(Exception):
                await self._finish(run)
        finally:
            self._runs.pop(run.row.id, None)

    async def _job(self, run: _Run) -> None:
        doc = run.doc
        if doc.started_at is None:
            doc.started_at = time.time()
        if doc.files is None:
            doc.files = await self._files(doc)
            await self._save(run, force=True)
        for index, file in enumerate(doc.files):
            if index < len(doc.outputs):
                continue
            if run.canceled or doc.error is not None:
                break
            doc.done, doc.failed, doc.consumed, doc.window = 0, 0, 0, []
            output = await self._file(run, index, file)
            doc.outputs.append(output)
            doc.done, doc.failed, doc.consumed, doc.window = 0, 0, 0, []
            await self._save(run, force=True)
            # only once the file is recorded done: a driver resuming before this point
            # re-assembles the file from these chunk objects
            await self._cleanup(run.row.id, index)
        doc.split_all = not run.canceled and doc.error is None
        await self._finish(run)

    async def _files(self, doc: JobDoc) -> list[InputFile]:
        if doc.input_key is not None:
            info = await self._storage.stat(doc.input_key)
            name = doc.input_key.rpartition("/")[2]
            found = input_file(doc.input_key, name, info.size if info else 0, doc.options)
            return [found] if found else []
        prefix = doc.input_prefix or ""
        files: list[InputFile] = []
        async for info in self._storage.list(prefix):
            found = input_file(info.key, info.key[len(prefix) :], info.size, doc.options)
            if found is not None:
                files.append(found)
        return files

    async def _save(self, run: _Run, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - run.saved_at < SAVE_EVERY_S:
            return
        run.saved_at = now
        held = await self._store.save_progress(
            run.row.id,
            worker_id=self._worker_id,
            attempt=run.row.attempts,
            definition=run.doc.to_json(),
        )
        if not held:
            await self._mark_gone(run)
        if run.lost:
            raise _Lost

    # -- one file --------------------------------------------------------------------
    async def _file(self, run: _Run, index: int, file: InputFile) -> FileOutput:
        doc = run.doc
        output_key = f"{doc.output_prefix}{file.name}.out"
        errors: list[str] = []
        content_type = CSV_TYPE if file.format == "csv" else JSONL_TYPE
        if file.format == "whole":
            content_type = "application/octet-stream"
        await self._storage.put_stream(
            output_key, self._assemble(run, index, file, errors), content_type=content_type
        )
        errors_key = None
        if errors:
            errors_key = output_key + ".errors"
            await self._storage.put_stream(
                errors_key, self._concat(errors), content_type=JSONL_TYPE
            )
        return FileOutput(
            name=file.name,
            input_key=file.key,
            output_key=output_key,
            errors_key=errors_key,
            records=doc.done,
            failed=doc.failed,
        )

    async def _concat(self, keys: list[str]) -> AsyncIterator[bytes]:
        for key in keys:
            async for data in self._storage.get_stream(key):
                yield data

    async def _cleanup(self, job_id: str, index: int) -> None:
        """The chunk objects of a finished file (its output now holds them)."""
        prefix = f"batch/{job_id}/chunks/{index}-"
        async for info in self._storage.list(prefix):
            with contextlib.suppress(Exception):
                await self._storage.delete(info.key)

    async def _assemble(
        self, run: _Run, index: int, file: InputFile, errors: list[str]
    ) -> AsyncIterator[bytes]:
        """The file's output, chunk by chunk in input order, as the chunks finish."""
        doc = run.doc
        window: deque[_Pending] = deque()
        header_written = False
        if file.format == "whole":
            pending = await self._queue_whole(run, index, file)
            window.append(pending)
        else:
            stream = self._storage.get_stream(file.key)
            pieces = split.pieces(
                stream,
                format=file.format,
                gzip=file.gzip,
                records_for=lambda i: split.chunk_records(i, doc.options.records_per_call),
                max_bytes=split.CHUNK_MAX_BYTES,
                max_line_bytes=min(doc.options.max_call_bytes, split.RECORD_MAX_BYTES),
            )
            async for piece in pieces:
                if run.canceled or run.lost or doc.error is not None:
                    break
                window.append(await self._queue_piece(run, index, file, piece))
                doc.consumed = piece.consumed
                while len(window) >= doc.options.concurrency:
                    async for data in self._head(run, window, errors, header_written):
                        header_written = True
                        yield data
            doc.consumed = file.size
        while window and not run.lost:
            async for data in self._head(run, window, errors, header_written):
                header_written = True
                yield data
        if run.lost:
            raise _Lost

    async def _queue_piece(
        self, run: _Run, index: int, file: InputFile, piece: split.Piece
    ) -> _Pending:
        doc = run.doc
        cid = chunk_id(run.row.id, index, piece.index)
        in_key, out_key, err_key = chunk_keys(run.row.id, index, piece.index)
        spec = ChunkSpec(
            format=file.format,
            first_line=piece.first_line,
            output_key=out_key,
            errors_key=err_key,
            header=piece.header,
            records_per_call=doc.options.records_per_call,
            max_call_bytes=doc.options.max_call_bytes,
            join=doc.options.join,
            input_filter=doc.options.input_filter,
            output_filter=doc.options.output_filter,
        )
        lines = piece.data.count(b"\n")
        pending = _Pending(
            cid, piece.index, piece.first_line, lines, piece.records, out_key, err_key, in_key
        )
        if doc.target_kind == "pipeline":
            self._local[cid] = asyncio.create_task(self._pipeline_chunk(run, cid, spec, piece.data))
        elif await self._store.get(cid) is None:
            await self._storage.put(in_key, piece.data)
            await self._queue_chunk(run, cid, spec, in_key, len(piece.data))
        doc.window.append(cid)
        return pending

    async def _pipeline_chunk(self, run: _Run, cid: str, spec: ChunkSpec, data: bytes) -> None:
        """A pipeline target's chunk, run by the driver itself: one run per record
        (deterministic ids: a resumed driver finds the runs already made), the
        records' outputs and errors written as a replica writes a model's chunk."""
        if await self._storage.stat(spec.output_key) is not None:
            return  # done before a crash
        counter = iter(range(1 << 30))

        async def call(inputs: list[object]) -> list[object]:
            ids = [f"{cid}.r{next(counter)}" for _ in inputs]
            rows = [
                await self._start_run(run, rid, value)
                for rid, value in zip(ids, inputs, strict=True)
            ]
            results: list[object] = []
            for row in rows:
                done = row if row.status.terminal else await self._wait(run, row.id)
                if done.status == Status.SUCCEEDED:
                    text = done.output_json
                    results.append(orjson.loads(text) if text is not None else None)
                else:
                    results.append(RuntimeError(done.error_message or str(done.status)))
            return results

        result = await records.arun_chunk(spec, data, call)
        if result.errors:
            await self._storage.put(spec.errors_key, result.errors)
        await self._storage.put(spec.output_key, result.output)
        await self._storage.put(spec.output_key + ".json", result.summary.to_json().encode())

    async def _start_run(self, run: _Run, run_id: str, value: object) -> Prediction:
        """One record's pipeline run (its first steps queued in the same transaction)."""
        doc, now = run.doc, time.time()
        pipeline = self._pipelines.specs[doc.target]
        row = Prediction(
            id=run_id,
            target=doc.target,
            kind=RUN,
            status=Status.RUNNING,
            created_at=now,
            queued_at=now,
            started_at=now,
            max_attempts=1,
            timeout_s=doc.chunk_timeout_s,
            lease_expires_at=now + pipeline.timeout_s if pipeline.timeout_s else None,
            priority=doc.options.priority,
            input_json=orjson.dumps(value).decode(),
            definition=self._pipelines.bundles[doc.target],
            idempotency_key=run_id,
            request_hash=run_id,
        )
        steps = step_rows(pipeline, row, bundle_of(row.definition or ""), new_id)
        stored, _ = await self._store.create_run(row, steps)
        for step in steps:
            self._signal.notify(step.target)
        return stored

    async def _queue_whole(self, run: _Run, index: int, file: InputFile) -> _Pending:
        """split=none: the file is one record; its chunk reads it where it is."""
        cid = chunk_id(run.row.id, index, 0)
        _, out_key, err_key = chunk_keys(run.row.id, index, 0)
        info = await self._storage.stat(file.key)
        spec = ChunkSpec(
            format="whole",
            first_line=1,
            output_key=out_key,
            errors_key=err_key,
            join=run.doc.options.join,
            input_filter=run.doc.options.input_filter,
            output_filter=run.doc.options.output_filter,
            content_type=run.doc.options.content_type or (info.content_type if info else None),
        )
        if await self._store.get(cid) is None:
            await self._queue_chunk(run, cid, spec, file.key, file.size)
        run.doc.window.append(cid)
        return _Pending(cid, 0, 1, 1, 1, out_key, err_key, file.key)

    async def _queue_chunk(
        self, run: _Run, cid: str, spec: ChunkSpec, input_key: str, size: int
    ) -> None:
        doc, now = run.doc, time.time()
        row = Prediction(
            id=cid,
            target=doc.target,
            kind=CHUNK,
            status=Status.QUEUED,
            created_at=now,
            queued_at=now,
            priority=doc.options.priority,
            max_attempts=doc.chunk_max_attempts,
            timeout_s=doc.chunk_timeout_s,
            input_json=spec.to_json(),
            input_key=input_key,
            input_content_type=CHUNK_MEDIA_TYPE,
            input_bytes=size,
            idempotency_key=cid,
            request_hash=cid,
        )
        await self._store.create(row)
        self._signal.notify(doc.target)

    async def _wait(self, run: _Run, cid: str) -> Prediction:
        """The chunk once terminal (woken by its completion, else polled)."""
        while True:
            future = self._hub.subscribe(cid)
            try:
                row = await self._store.get(cid)
                if row is None:
                    raise NotFoundError("chunk vanished", id=cid)
                if row.status.terminal:
                    return row
                if run.canceled:
                    with contextlib.suppress(NotFoundError):
                        await self._store.cancel(cid, now=time.time())
                    continue
                if run.lost:
                    raise _Lost
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(future), self._poll_s)
                await self._save(run)  # what was throttled earlier shows while this waits
            finally:
                self._hub.unsubscribe(cid, future)

    async def _head(
        self, run: _Run, window: deque[_Pending], errors: list[str], header_written: bool
    ) -> AsyncIterator[bytes]:
        """Wait for the oldest chunk and yield its output; count its records."""
        doc, pending = run.doc, window[0]
        first = doc.records_done + doc.records_failed == 0  # shown at once, not throttled
        if doc.target_kind == "pipeline":
            row = await self._local_outcome(run, pending)
        else:
            row = await self._wait(run, pending.id)
        window.popleft()
        with contextlib.suppress(ValueError):
            doc.window.remove(pending.id)
        if row.status == Status.SUCCEEDED and row.output_json is not None:
            summary = ChunkSummary.from_json(row.output_json)
            if summary.columns is not None and not header_written:
                yield csv_header(summary.columns)
            async for data in self._storage.get_stream(pending.output_key):
                yield data
            doc.done += summary.records - summary.failed
            doc.failed += summary.failed
            if summary.failed:
                errors.append(pending.errors_key)
                if doc.options.on_error == "fail" and doc.error is None:
                    doc.error = {
                        "code": "record_failed",
                        "message": f"{summary.failed} record(s) failed (on_error=fail); "
                        "see the error file",
                    }
        elif row.status == Status.CANCELED:
            run.canceled = True
        else:
            await self._chunk_failed(run, pending, row, errors)
        await self._save(run, force=first)

    async def _local_outcome(self, run: _Run, pending: _Pending) -> Prediction:
        """A pipeline chunk's outcome in the shape of a chunk prediction's row."""
        task = self._local.pop(pending.id, None)
        row = Prediction(
            id=pending.id,
            target=run.doc.target,
            status=Status.SUCCEEDED,
            created_at=time.time(),
            kind=CHUNK,
        )
        try:
            if task is not None:
                await task
            row.output_json = (await self._storage.get(pending.output_key + ".json")).decode()
        except (asyncio.CancelledError, _Lost):
            raise
        except Exception as exc:
            row.status, row.error_code, row.error_message = Status.FAILED, "batch_error", str(exc)
        return row

    async def _chunk_failed(
        self, run: _Run, pending: _Pending, row: Prediction, errors: list[str]
    ) -> None:
        """A chunk that did not run (crashes, timeout, model unavailable): each of its
        records failed with the chunk's error."""
        doc = run.doc
        error = {"code": row.error_code or str(row.status), "message": row.error_message or ""}
        line = {"line": pending.first_line, "lines": pending.lines, "error": error}
        await self._storage.put(pending.errors_key, orjson.dumps(line) + b"\n")
        errors.append(pending.errors_key)
        doc.failed += pending.records
        if doc.options.on_error == "fail" and doc.error is None:
            doc.error = {
                "code": "chunk_failed",
                "message": f"lines {pending.first_line}-{pending.first_line + pending.lines - 1}"
                f" failed: {error['message']}",
            }

    # -- the end -----------------------------------------------------------------------
    async def _finish(self, run: _Run) -> None:
        """Write the manifest, then the job's outcome (unless it was canceled: the row
        is terminal already, the outputs and manifest keep what was done)."""
        doc, row = run.doc, run.row
        status = Status.SUCCEEDED
        if doc.error is not None:
            status = Status.FAILED
        if run.canceled:
            status = Status.CANCELED
        manifest_key = doc.output_prefix + "manifest.json"
        manifest = {
            "job": row.id,
            "target": doc.target,
            "status": str(status),
            "outputs": [
                {
                    "name": o.name,
                    "input_uri": f"freight://{o.input_key}",
                    "output_uri": f"freight://{o.output_key}",
                    "errors_uri": f"freight://{o.errors_key}" if o.errors_key else None,
                    "records": o.records,
                    "failed": o.failed,
                }
                for o in doc.outputs
            ],
        }
        await self._storage.put(
            manifest_key, orjson.dumps(manifest), content_type="application/json"
        )
        await self._store.save_progress(
            row.id, worker_id=self._worker_id, attempt=row.attempts, definition=doc.to_json()
        )
        if run.canceled:
            self._hub.publish([row.id])
            return
        summary = {"records": doc.records_done, "failed": doc.records_failed}
        completion = Completion(
            id=row.id,
            attempt=row.attempts,
            worker_id=self._worker_id,
            status=status,
            finished_at=time.time(),
            output_json=orjson.dumps(summary).decode(),
            output_key=manifest_key,
            output_content_type="application/json",
        )
        if doc.error is not None:
            completion.error_code = doc.error["code"]
            completion.error_message = doc.error["message"]
        await self._store.complete([completion])
        self._hub.publish([row.id])


__all__ = ["BatchDriver"]
