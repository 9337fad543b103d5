"""One input file of a batch job, as its driver runs it: chunks, then the output.

The file is split into chunks (streaming: one chunk in memory at a time); each is
queued as a prediction of the model (kind ``chunk``, below interactive traffic)
and at most ``concurrency`` are queued or running at once. Replicas run them
(``freight.runner.chunks``), so chunks batch, scale and retry like any
prediction; a pipeline target's chunks are run here, one run per record. Chunks
are waited for in input order; once all are done, the output is assembled from
their objects in that order (CSV: one header, the union of every chunk's
columns, see :mod:`freight.batch.formats`) and written whole (put_stream).

Fencing: a chunk's objects are keyed by attempt (:mod:`freight.keys`), and only
the key its winner recorded is read: the row's ``output_key`` (the store applies
one completion per attempt), or for a pipeline chunk the summary written last.

Storage: a chunk that could not read or write its objects ended ``storage_error``;
that is the job's transient failure (StorageError: the driver backs off and
resumes), and resuming queues the chunk again as its next retry
(:func:`~freight.batch.job.chunk_id`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import orjson

from freight.batch import split
from freight.batch.formats import csv_header, realigned, union_columns
from freight.batch.job import CHUNK, FileOutput, JobDoc, JobRun, Lost, chunk_id
from freight.batch.pipeline_chunks import PipelineChunks
from freight.batch.spec import CHUNK_MEDIA_TYPE, ChunkSpec, ChunkSummary, InputFile
from freight.errors import NotFoundError, StorageError
from freight.events import CompletionHub, WorkSignal
from freight.keys import (
    chunk_base,
    chunk_errors_key,
    chunk_input_key,
    chunk_output_key,
    errors_key,
    output_name,
)
from freight.prediction import Prediction, Status
from freight.project import Pipelines
from freight.storage.base import Storage
from freight.store.base import Records

JSONL_TYPE = "application/jsonl"
CSV_TYPE = "text/csv"
#: the code of a chunk that could not read or write its objects (runner.chunks)
STORAGE_ERROR = StorageError.code


@dataclass(slots=True)
class _Pending:
    """A chunk in the window: queued or running (or run here: ``local``)."""

    id: str
    base: str  # its objects' key base
    first_line: int
    lines: int
    records: int
    local: bool = False


@dataclass(frozen=True, slots=True)
class _Done:
    """A finished chunk's objects, as its winner recorded them."""

    output_key: str | None  # None: the chunk failed whole (its errors say why)
    errors_key: str | None
    columns: list[str] | None


#: saves the job's progress (throttled unless forced); raises Lost when it is gone
Save = Callable[[JobRun, bool], Awaitable[None]]


class FileRunner:
    """Runs input files of the jobs one driver holds."""

    def __init__(
        self,
        store: Records,
        storage: Storage,
        *,
        signal: WorkSignal,
        hub: CompletionHub,
        poll_s: float,
        pipelines: Pipelines,
        save: Save,
    ) -> None:
        self._store = store
        self._storage = storage
        self._signal = signal
        self._hub = hub
        self._poll_s = poll_s
        self._pipelines = pipelines
        self._save = save
        self._pipeline = PipelineChunks(
            store, storage, signal=signal, pipelines=pipelines, wait=self._wait
        )

    def forget(self, job_id: str) -> None:
        """Cancel the pipeline chunks of a job this driver stops running (or resumes)."""
        self._pipeline.forget(job_id)

    async def run(self, run: JobRun, index: int, file: InputFile) -> FileOutput:
        """Run the file's chunks, then write its output (and error file) whole."""
        doc = run.doc
        done = await self._chunks(run, index, file)
        output_key = doc.output_prefix + (file.output or output_name(file.name))
        content_type = {"csv": CSV_TYPE, "jsonl": JSONL_TYPE}.get(file.format)
        await self._storage.put_stream(
            output_key,
            self._assembled(done),
            content_type=content_type or "application/octet-stream",
        )
        failed = [d.errors_key for d in done if d.errors_key is not None]
        errors = errors_key(output_key) if failed else None
        if errors is not None:
            await self._storage.put_stream(errors, self._concat(failed), content_type=JSONL_TYPE)
        return FileOutput(file.name, file.key, output_key, errors, doc.done, doc.failed)

    async def _assembled(self, done: list[_Done]) -> AsyncIterator[bytes]:
        """The chunks' outputs in input order; CSV under one header of every column."""
        tables = [d.columns for d in done if d.columns is not None]
        union = union_columns(tables)
        if union:
            yield csv_header(union)
        for chunk in done:
            if chunk.output_key is None:
                continue
            if chunk.columns is None or chunk.columns == union:
                async for data in self._storage.get_stream(chunk.output_key):
                    yield data
            else:  # a chunk with fewer or other columns: its cells moved to the union's
                yield realigned(await self._storage.get(chunk.output_key), chunk.columns, union)

    async def _concat(self, keys: list[str]) -> AsyncIterator[bytes]:
        for key in keys:
            async for data in self._storage.get_stream(key):
                yield data

    # -- the chunks of a file --------------------------------------------------------
    async def _chunks(self, run: JobRun, index: int, file: InputFile) -> list[_Done]:
        """Queue the file's chunks (a window of ``concurrency``); their outcomes in order."""
        doc = run.doc
        window: deque[_Pending] = deque()
        done: list[_Done] = []
        if file.format == "whole":
            window.append(await self._queue_whole(run, index, file))
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
                    done.append(await self._settle(run, window))
            doc.consumed = file.size
        while window and not run.lost:
            done.append(await self._settle(run, window))
        if run.lost:
            raise Lost
        return done

    def _spec(self, doc: JobDoc, file: InputFile, base: str, piece: split.Piece) -> ChunkSpec:
        options = doc.options
        return ChunkSpec(
            format=file.format,
            first_line=piece.first_line,
            objects=base,
            header=piece.header,
            records_per_call=options.records_per_call,
            max_call_bytes=options.max_call_bytes,
            join=options.join,
            input_filter=options.input_filter,
            output_filter=options.output_filter,
        )

    async def _queue_piece(
        self, run: JobRun, index: int, file: InputFile, piece: split.Piece
    ) -> _Pending:
        doc = run.doc
        base = chunk_base(run.row.id, index, piece.index)
        spec = self._spec(doc, file, base, piece)
        lines = piece.data.count(b"\n")
        cid = chunk_id(run.row.id, index, piece.index)
        if doc.target_kind == "pipeline":
            self._pipeline.start(run, cid, spec, piece.data)
            doc.window.append(cid)
            return _Pending(cid, base, piece.first_line, lines, piece.records, local=True)
        cid, row = await self._latest(run.row.id, index, piece.index)
        if row is None:
            in_key = chunk_input_key(base)
            if cid == chunk_id(run.row.id, index, piece.index):
                await self._storage.put(in_key, piece.data)
            await self._queue_chunk(run, cid, spec, in_key, len(piece.data))
        doc.window.append(cid)
        return _Pending(cid, base, piece.first_line, lines, piece.records)

    async def _latest(self, job_id: str, index: int, piece: int) -> tuple[str, Prediction | None]:
        """The chunk's current retry: its first that did not end ``storage_error``
        (None when it is yet to be queued)."""
        retry = 0
        while True:
            cid = chunk_id(job_id, index, piece, retry)
            row = await self._store.get(cid)
            if row is None or not _storage_failed(row):
                return cid, row
            retry += 1

    async def _queue_whole(self, run: JobRun, index: int, file: InputFile) -> _Pending:
        """split=none: the file is one record; its chunk reads it where it is."""
        doc = run.doc
        base = chunk_base(run.row.id, index, 0)
        cid, row = await self._latest(run.row.id, index, 0)
        if row is None:
            info = await self._storage.stat(file.key)
            spec = ChunkSpec(
                format="whole",
                first_line=1,
                objects=base,
                join=doc.options.join,
                input_filter=doc.options.input_filter,
                output_filter=doc.options.output_filter,
                content_type=doc.options.content_type or (info.content_type if info else None),
            )
            await self._queue_chunk(run, cid, spec, file.key, file.size)
        doc.window.append(cid)
        return _Pending(cid, base, 1, 1, 1)

    async def _queue_chunk(
        self, run: JobRun, cid: str, spec: ChunkSpec, input_key: str, size: int
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
            tenant=run.row.tenant,
        )
        await self._store.create(row)
        self._signal.notify(doc.target)

    async def _wait(self, run: JobRun, cid: str) -> Prediction:
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
                    raise Lost
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(future), self._poll_s)
                await self._save(run, False)  # what was throttled earlier shows while this waits
            finally:
                self._hub.unsubscribe(cid, future)

    async def _settle(self, run: JobRun, window: deque[_Pending]) -> _Done:
        """Wait for the oldest chunk; count its records; its objects as recorded."""
        doc, pending = run.doc, window[0]
        first = doc.records_done + doc.records_failed == 0  # shown at once, not throttled
        row = await (
            self._pipeline.outcome(pending.id) if pending.local else self._wait(run, pending.id)
        )
        if _storage_failed(row):  # transient: the driver backs off, resumes, queues it again
            raise StorageError(f"chunk {row.id}: {row.error_message}", id=row.id)
        window.popleft()
        with contextlib.suppress(ValueError):
            doc.window.remove(pending.id)
        if row.status == Status.SUCCEEDED and row.output_json is not None and row.output_key:
            summary = ChunkSummary.from_json(row.output_json)
            doc.done += summary.records - summary.failed
            doc.failed += summary.failed
            if summary.failed:
                _fail_job(doc, "record_failed", f"{summary.failed} record(s) failed")
            errors = chunk_errors_key(row.output_key) if summary.failed else None
            outcome = _Done(row.output_key, errors, summary.columns)
        elif row.status == Status.CANCELED:
            run.canceled = True
            outcome = _Done(None, None, None)
        else:
            outcome = await self._chunk_failed(run, pending, row)
        await self._save(run, first)
        return outcome

    async def _chunk_failed(self, run: JobRun, pending: _Pending, row: Prediction) -> _Done:
        """A chunk that did not run (crashes, timeout, model unavailable): each of its
        records failed with the chunk's error, one line for them all."""
        doc = run.doc
        error = {"code": row.error_code or str(row.status), "message": row.error_message or ""}
        entry = {"line": pending.first_line, "lines": pending.lines, "error": error}
        key = chunk_errors_key(chunk_output_key(pending.base, f"failed{run.row.attempts}"))
        await self._storage.put(key, orjson.dumps(entry) + b"\n")
        doc.failed += pending.records
        last = pending.first_line + pending.lines - 1
        _fail_job(doc, "chunk_failed", f"lines {pending.first_line}-{last}: {error['message']}")
        return _Done(None, key, None)


def _storage_failed(row: Prediction) -> bool:
    return row.status == Status.FAILED and row.error_code == STORAGE_ERROR


def _fail_job(doc: JobDoc, code: str, message: str) -> None:
    """on_error=fail: the first failure is the job's error (it stops queueing)."""
    if doc.options.on_error == "fail" and doc.error is None:
        doc.error = {"code": code, "message": f"{message} (on_error=fail); see the error file"}


__all__ = ["FileRunner"]
