"""A pipeline target's chunks, run by the batch driver itself: one run per record.

Deterministic run ids (``<chunk>.r<n>``, idempotency keys too): a resumed driver
finds the runs already made instead of starting them again. The records' outputs
and errors are written as a replica writes a model's chunk, under keys of this
attempt's own, and the summary last: a summary found means its chunk is whole,
so that is what a resumed driver looks for (an output without its summary is a
crash between the writes, and the chunk runs again).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import orjson

from freight.batch import records
from freight.batch.job import CHUNK, JobRun, Lost
from freight.batch.spec import ChunkSpec
from freight.errors import StorageError
from freight.events import WorkSignal
from freight.ids import new_id
from freight.keys import (
    chunk_errors_key,
    chunk_output_key,
    chunk_output_of_summary,
    chunk_summary_key,
)
from freight.media import is_json_type
from freight.pipelines.start import new_run, start_rows
from freight.prediction import Prediction, Status
from freight.project import Pipelines
from freight.storage.base import Storage
from freight.store.base import Records

#: waits for a row to be terminal (the file runner's wait: woken by completions)
Wait = Callable[[JobRun, str], Awaitable[Prediction]]


class PipelineChunks:
    """The pipeline chunks of the jobs one driver holds, each an asyncio task."""

    def __init__(
        self,
        store: Records,
        storage: Storage,
        *,
        signal: WorkSignal,
        pipelines: Pipelines,
        wait: Wait,
    ) -> None:
        self._store = store
        self._storage = storage
        self._signal = signal
        self._pipelines = pipelines
        self._wait = wait
        self._tasks: dict[str, asyncio.Task[Prediction]] = {}

    def start(self, run: JobRun, cid: str, spec: ChunkSpec, data: bytes) -> None:
        self._tasks[cid] = asyncio.create_task(self._run(run, cid, spec, data))

    def forget(self, job_id: str) -> None:
        """Cancel the chunks of a job the driver stops running (or resumes)."""
        for cid in [c for c in self._tasks if c.startswith(job_id + ".")]:
            self._tasks.pop(cid).cancel()

    async def _run(self, run: JobRun, cid: str, spec: ChunkSpec, data: bytes) -> Prediction:
        """One run per record (deterministic ids: a resumed driver finds the runs already
        made); the records' outputs and errors written as a replica writes a model's
        chunk, the summary last: a summary found means its chunk is whole."""
        found = await self._finished(spec.objects)
        if found is not None:
            return _local_row(cid, summary=found[0], output_key=found[1])
        counter = iter(range(1 << 30))

        async def call(inputs: list[object]) -> list[object]:
            ids = [f"{cid}.r{next(counter)}" for _ in inputs]
            rows = [
                await self._start_run(run, rid, value)
                for rid, value in zip(ids, inputs, strict=True)
            ]
            return [await self._result(run, row) for row in rows]

        result = await records.arun_chunk(spec, data, call)
        output_key = chunk_output_key(spec.objects)
        if result.errors:
            await self._storage.put(chunk_errors_key(output_key), result.errors)
        await self._storage.put(output_key, result.output)
        summary = result.summary.to_json()
        await self._storage.put(chunk_summary_key(output_key), summary.encode())
        return _local_row(cid, summary=summary, output_key=output_key)

    async def _finished(self, base: str) -> tuple[str, str] | None:
        """The summary (and output key) of an attempt that finished this chunk."""
        async for info in self._storage.list(base + "."):
            if info.key.endswith(".json"):
                summary = (await self._storage.get(info.key)).decode()
                return summary, chunk_output_of_summary(info.key)
        return None

    async def _result(self, run: JobRun, row: Prediction) -> object:
        done = row if row.status.terminal else await self._wait(run, row.id)
        if done.status == Status.SUCCEEDED:
            if done.output_json is not None or done.output_key is None:
                return orjson.loads(done.output_json or "null")
            # an output over the inline limit is the run's object: the record is its JSON
            if not is_json_type(done.output_content_type):
                return RuntimeError(f"the run's output is {done.output_content_type}, not JSON")
            return orjson.loads(await self._storage.get(done.output_key))
        return RuntimeError(done.error_message or str(done.status))

    async def _start_run(self, run: JobRun, run_id: str, value: object) -> Prediction:
        """One record's pipeline run (its first steps queued in the same transaction)."""
        doc = run.doc
        bundle = self._pipelines.bundles[doc.target]
        row = new_run(
            doc.target, bundle, run_id=run_id, now=time.time(), timeout_s=doc.chunk_timeout_s
        )
        row.priority, row.tenant = doc.options.priority, run.row.tenant
        row.input_json = orjson.dumps(value).decode()
        row.idempotency_key = row.request_hash = run_id
        steps = start_rows(row, self._pipelines.specs[doc.target], new_id)
        stored, _ = await self._store.create_run(row, steps)
        for step in steps:
            self._signal.notify(step.target)
        return stored

    async def outcome(self, cid: str) -> Prediction:
        """The chunk's outcome in the shape of a chunk prediction's row (a storage
        failure raises: it is the job's, transient)."""
        try:
            return await self._tasks.pop(cid)
        except (asyncio.CancelledError, Lost, StorageError):
            raise
        except Exception as exc:
            return _local_row(cid, error=str(exc))


def _local_row(
    cid: str, *, summary: str | None = None, output_key: str | None = None, error: str = ""
) -> Prediction:
    """A chunk run here, as a row: succeeded with its summary, or failed (``error``)."""
    row = Prediction(
        id=cid,
        target="",
        kind=CHUNK,
        status=Status.SUCCEEDED,
        created_at=time.time(),
        output_json=summary,
        output_key=output_key,
    )
    if error:
        row.status, row.error_code, row.error_message = Status.FAILED, "batch_error", error
    return row


__all__ = ["PipelineChunks"]
