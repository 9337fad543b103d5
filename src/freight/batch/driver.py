"""The batch driver: claims batch jobs like predictions and runs them, file by file.

A job row is claimed with a lease (renewed by heartbeats); its input files are
resolved once (listed, named: :func:`freight.keys.output_names`) and run one
after the other (:class:`~freight.batch.files.FileRunner`); each finished file
is recorded in the job's document before its chunk objects are deleted; the
manifest is written last, then the job's outcome.

Resuming: chunk ids are deterministic (job, file, piece) and splitting is too, so
a driver that takes over a job after a crash re-splits the current file, finds the
chunks already queued or done (done ones are not run again), and rewrites that
file's output from its first chunk; files already finished are skipped. An output
object only appears whole (put_stream), so no record is ever written twice.

Why an object-store failure does not fail the job: a job may run for days, and
resuming is what the driver does anyway. A StorageError (what the storage layer
raises for anything but a missing object or a bad key) resumes the job in place
after a back-off (1 s doubling to 60 s); after :data:`STORAGE_RETRIES` failures
in a row with no progress between them (about 3 minutes) the job is given back
to the queue (an attempt counted: :data:`~freight.batch.service.JOB_MAX_ATTEMPTS`
of them, some 5 hours of outage, fail it ``storage_error``). Only permanent
errors fail it at once: a missing input, bad gzip, a bad CSV header.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import replace
from typing import Protocol

import orjson

from freight.batch.files import FileRunner
from freight.batch.job import QUEUE, JobDoc, JobRun, Lost, input_file
from freight.batch.spec import InputFile
from freight.errors import StorageError, StoreUnavailableError
from freight.events import CompletionHub, WorkSignal
from freight.keys import chunks_prefix, manifest_key, output_names, skip_listed
from freight.prediction import Completion, Release, Status
from freight.project import Pipelines
from freight.storage.base import Storage
from freight.store.base import Queue, Records

log = logging.getLogger("freight.batch")

#: jobs one driver runs at once
MAX_JOBS = 4
#: the driver saves a job's progress at most this often
SAVE_EVERY_S = 0.5
#: storage failures in a row, with no progress between them, resumed in place
STORAGE_RETRIES = 8
#: the back-off after the first of them, doubling up to RETRY_MAX_S
RETRY_BASE_S = 1.0
RETRY_MAX_S = 60.0


class DriverStore(Queue, Records, Protocol):
    """The store roles the driver uses: job rows claimed and leased like predictions
    (``Queue``), chunks and pipeline runs created and read (``Records``)."""


class BatchDriver:
    def __init__(
        self,
        store: DriverStore,
        storage: Storage,
        *,
        signal: WorkSignal,
        hub: CompletionHub,
        worker_id: str,
        lease_s: float,
        poll_s: float,
        max_jobs: int = MAX_JOBS,
        pipelines: Pipelines | None = None,
        retry_s: float = RETRY_BASE_S,
    ) -> None:
        self._store = store
        self._storage = storage
        self._signal = signal
        self._hub = hub
        self._worker_id = worker_id
        self._lease_s = lease_s
        self._poll_s = poll_s
        self._max_jobs = max_jobs
        self._retry_s = retry_s
        self._files = FileRunner(
            store,
            storage,
            signal=signal,
            hub=hub,
            poll_s=poll_s,
            pipelines=pipelines or Pipelines(),
            save=self._save,
        )
        self._runs: dict[str, JobRun] = {}
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
            run = JobRun(row, JobDoc.from_json(row.definition or "{}"))
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

    async def _mark_gone(self, run: JobRun) -> None:
        row = await self._store.get(run.row.id)
        if row is not None and row.status == Status.CANCELED:
            run.canceled = True
        else:
            run.lost = True
        self._signal.notify(QUEUE)

    # -- one job -------------------------------------------------------------------
    async def _drive(self, run: JobRun) -> None:
        try:
            await self._resuming(run)
        except Lost:
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
            self._files.forget(run.row.id)
            self._runs.pop(run.row.id, None)

    async def _resuming(self, run: JobRun) -> None:
        """The job, resumed in place after each storage failure (see the module
        docstring); given back to the queue when they go on without progress."""
        failures, mark = 0, (-1, -1)
        while True:
            try:
                await self._job(run)
                return
            except StorageError as exc:
                doc = run.doc
                now = (len(doc.outputs), doc.records_done + doc.records_failed)
                failures, mark = (1 if now > mark else failures + 1), max(now, mark)
                self._files.forget(run.row.id)
                if failures > STORAGE_RETRIES:
                    await self._give_back(run, exc)
                    return
                delay = min(self._retry_s * 2 ** (failures - 1), RETRY_MAX_S)
                log.warning(
                    "object store failed on batch job %s (%s): resuming in %.1f s",
                    run.row.id,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)

    async def _give_back(self, run: JobRun, exc: StorageError) -> None:
        """Requeue the job (its attempt counted) for any driver to resume."""
        log.error("batch job %s given back: the object store keeps failing (%s)", run.row.id, exc)
        with contextlib.suppress(Lost, StoreUnavailableError):
            await self._save(run, True)
        release = Release(
            id=run.row.id,
            attempt=run.row.attempts,
            worker_id=self._worker_id,
            error_code=StorageError.code,
            error_message=f"the object store kept failing: {exc}",
        )
        await self._store.release([release], now=time.time())
        self._signal.notify(QUEUE)

    async def _job(self, run: JobRun) -> None:
        doc = run.doc
        if doc.started_at is None:
            doc.started_at = time.time()
        if doc.files is None:
            doc.files = await self._resolve(doc)
            await self._save(run, True)
        for index, file in enumerate(doc.files):
            if index < len(doc.outputs):
                continue
            if run.canceled or doc.error is not None:
                break
            doc.done, doc.failed, doc.consumed, doc.window = 0, 0, 0, []
            output = await self._files.run(run, index, file)
            doc.outputs.append(output)
            doc.done, doc.failed, doc.consumed, doc.window = 0, 0, 0, []
            await self._save(run, True)
            # only once the file is recorded done: a driver resuming before this point
            # re-assembles the file from these chunk objects
            await self._cleanup(chunks_prefix(run.row.id, index))
        doc.split_all = not run.canceled and doc.error is None
        await self._finish(run)

    async def _resolve(self, doc: JobDoc) -> list[InputFile]:
        """The job's input files, each with its output's name."""
        files: list[InputFile] = []
        if doc.input_key is not None:
            info = await self._storage.stat(doc.input_key)
            name = doc.input_key.rpartition("/")[2]
            found = input_file(doc.input_key, name, info.size if info else 0, doc.options)
            files = [found] if found else []
        else:
            prefix = doc.input_prefix or ""
            async for info in self._storage.list(prefix):
                if skip_listed(prefix, info.key):
                    continue
                found = input_file(info.key, info.key[len(prefix) :], info.size, doc.options)
                if found is not None:
                    files.append(found)
        names = output_names([f.name for f in files])
        return [replace(f, output=name) for f, name in zip(files, names, strict=True)]

    async def _save(self, run: JobRun, force: bool = False) -> None:
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
            raise Lost

    async def _cleanup(self, prefix: str) -> None:
        """Chunk objects no longer needed: best effort (a leftover is only space)."""
        try:
            async for info in self._storage.list(prefix):
                await self._storage.delete(info.key)
        except StorageError as exc:
            log.warning("chunk objects under %s left behind: %s", prefix, exc)

    # -- the end -----------------------------------------------------------------------
    async def _finish(self, run: JobRun) -> None:
        """Write the manifest, then the job's outcome (unless it was canceled: the row
        is terminal already, the outputs and manifest keep what was done)."""
        doc, row = run.doc, run.row
        status = Status.SUCCEEDED
        if doc.error is not None:
            status = Status.FAILED
        if run.canceled:
            status = Status.CANCELED
        manifest = manifest_key(doc.output_prefix)
        await self._storage.put(
            manifest, orjson.dumps(_manifest(run, status)), content_type="application/json"
        )
        # every file is recorded: what is left (a zombie attempt's objects) goes
        await self._cleanup(chunks_prefix(row.id))
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
            output_key=manifest,
            output_content_type="application/json",
        )
        if doc.error is not None:
            completion.error_code = doc.error["code"]
            completion.error_message = doc.error["message"]
        await self._store.complete([completion])
        self._hub.publish([row.id])


def _manifest(run: JobRun, status: Status) -> dict[str, object]:
    doc = run.doc
    return {
        "job": run.row.id,
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


__all__ = ["BatchDriver"]
