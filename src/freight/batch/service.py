"""The batch-job service: what the API (and the CLI through it) may do with jobs.

A job is checked whole at create — its target exists, its options parse (JMESPath
included), its input location holds at least one readable file of a known format,
its output location is in the store — so a mistake fails the request with a 4xx,
not an hour later. What runs it is the driver of some agent
(:mod:`freight.batch.driver`), which claims the job row like a prediction.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterable
from dataclasses import dataclass
from typing import Any

import jmespath
import jmespath.exceptions
import orjson

from freight.access import ANONYMOUS, Principal
from freight.batch.job import JOB, QUEUE, JobDoc, input_file
from freight.batch.options import Options
from freight.config import Settings
from freight.confine import confine
from freight.errors import ConflictError, ForbiddenError, InvalidRequestError, NotFoundError
from freight.events import WorkSignal
from freight.ids import new_id
from freight.keys import (
    batch_output_prefix,
    batch_upload_prefix,
    check_readable,
    key_of_uri,
    manifest_key,
    skip_listed,
    writable,
)
from freight.pipelines.start import run_timeout_s
from freight.prediction import Prediction, Status
from freight.project import Pipelines
from freight.quotas import Quotas
from freight.registry import ModelSpec
from freight.storage.base import Storage
from freight.store.base import Store
from freight.subscriptions import Subscriptions, Webhook

#: how many job rows a listing reads per page of the store (the store lists by kind;
#: jobs of other targets are skipped here: a job's target lives in its document)
LIST_SCAN = 200
#: a job runs its driver's lease at most this many times before it fails
JOB_MAX_ATTEMPTS = 100
#: a job may run this long (the reaper fails a job row held past it)
JOB_TIMEOUT_S = 7 * 24 * 3600.0


@dataclass(frozen=True, slots=True)
class JobRequest:
    target: str
    input_uri: str | None
    uploads: list[str] | None
    output_uri: str | None
    options: Options
    metadata: dict[str, Any] | None = None
    webhook: Webhook | None = None


def _name_ok(name: str) -> bool:
    parts = name.split("/")
    return bool(name) and not name.startswith("/") and all(p not in ("", ".", "..") for p in parts)


def _check_filters(options: Options) -> None:
    for name in ("input_filter", "output_filter"):
        expression = getattr(options, name)
        if expression is not None:
            try:
                jmespath.compile(expression)
            except jmespath.exceptions.JMESPathError as exc:
                raise InvalidRequestError(
                    f"{name} is not a JMESPath expression: {exc}", field=name
                ) from exc


def _check_uploads(uploads: list[str], options: Options) -> None:
    bad = [n for n in uploads if not _name_ok(n)]
    if bad or not uploads or len(set(uploads)) != len(uploads):
        raise InvalidRequestError(
            "upload names must be distinct relative paths without '..'", names=bad
        )
    for name in uploads:
        if input_file(name, name, 0, options) is None:
            raise InvalidRequestError(
                f"cannot tell the format of {name!r}: name it .jsonl, .csv (optionally "
                ".gz) or give content_type",
                code="unknown_format",
                name=name,
            )


class BatchService:
    def __init__(
        self,
        settings: Settings,
        specs: dict[str, ModelSpec],
        store: Store,
        storage: Storage,
        *,
        signal: WorkSignal,
        pipelines: Pipelines | None = None,
        subscriptions: Subscriptions | None = None,
        quotas: Quotas | None = None,
    ) -> None:
        self._settings = settings
        self._quotas = quotas
        self._specs = specs
        self._store = store
        self._storage = storage
        self._signal = signal
        self._pipelines = pipelines or Pipelines()
        self._subscriptions = subscriptions or Subscriptions()

    # -- create --------------------------------------------------------------------
    async def create(self, request: JobRequest, who: Principal = ANONYMOUS) -> Prediction:
        """Check the request whole, then queue the job (or wait for its uploads), owned
        by the caller's tenant."""
        if not who.may_use(request.target):
            raise ForbiddenError(
                f"this key may not use {request.target!r}",
                code="target_not_allowed",
                target=request.target,
            )
        job_id, now = new_id(), time.time()
        doc = self._doc(request, job_id)
        if request.output_uri is not None:
            await confine(self._store, who, doc.output_prefix, request.output_uri, write=True)
        if request.input_uri is not None:
            key = self._key_of(request.input_uri, "input")
            await confine(self._store, who, key, request.input_uri, write=False)
        if self._quotas is not None:  # a job adds work for its target as a prediction does
            await self._quotas.check(who.tenant, request.target)
        row = Prediction(
            id=job_id,
            target=QUEUE,
            kind=JOB,
            status=Status.QUEUED,
            created_at=now,
            queued_at=now,
            max_attempts=JOB_MAX_ATTEMPTS,
            timeout_s=JOB_TIMEOUT_S,
            priority=request.options.priority,
            metadata=orjson.dumps(request.metadata).decode() if request.metadata else None,
            tenant=who.tenant,
        )
        row.notify = self._subscriptions.notify_for(request.target, request.webhook)
        if request.uploads is not None:
            doc.input_prefix, doc.uploads = batch_upload_prefix(job_id), request.uploads
            row.status, row.queued_at = Status.AWAITING_INPUT, None
            row.upload_expires_at = now + self._settings.upload_url_expires_s
        else:
            assert request.input_uri is not None
            await self._resolve_input(doc, request.input_uri)
        row.definition = doc.to_json()
        stored, _ = await self._store.create(row)
        if stored.status == Status.QUEUED:
            self._signal.notify(QUEUE)
        return stored

    def _doc(self, request: JobRequest, job_id: str) -> JobDoc:
        kind, timeout_s, attempts = self._target(request.target)
        _check_filters(request.options)
        if request.uploads is not None:
            _check_uploads(request.uploads, request.options)
        output = batch_output_prefix(job_id)
        if request.output_uri is not None:
            output = self._output(request.output_uri)
        return JobDoc(
            target=request.target,
            target_kind=kind,
            options=request.options,
            output_prefix=output,
            input_uri=request.input_uri,
            chunk_timeout_s=timeout_s,
            chunk_max_attempts=attempts,
        )

    def _target(self, target: str) -> tuple[str, float, int]:
        """What the job runs: its kind, a chunk's (or a run's) timeout and attempts."""
        max_run_s = self._settings.max_run_s
        if target in self._pipelines.specs:
            return "pipeline", run_timeout_s(self._pipelines.specs[target], max_run_s), 1
        if target in self._specs:
            spec = self._specs[target]
            timeout_s = min(spec.timeout_s or max_run_s, max_run_s)
            return "model", timeout_s, spec.max_attempts or self._settings.max_attempts
        raise NotFoundError(
            f"no model or pipeline named {target!r}", code="unknown_target", target=target
        )

    def _output(self, uri: str) -> str:
        """The output prefix a caller named: in the store, outside freight's spaces."""
        output = self._key_of(uri, "output")
        if output and not output.endswith("/"):
            output += "/"
        if not writable(output):
            raise InvalidRequestError(
                f"output {uri!r} would write among freight's own objects (inputs/, outputs/, "
                "batch/) or at the store's root: give a prefix of yours",
                code="invalid_location",
                field="output",
            )
        return output

    def _key_of(self, uri: str, what: str) -> str:
        key = key_of_uri(uri, self._storage.key_for_uri)
        if key is None:
            raise InvalidRequestError(
                f"{what} {uri!r} is not in freight's object store: give freight://<key> or a "
                "URI of the configured store",
                code="invalid_location",
            )
        return key

    async def _resolve_input(self, doc: JobDoc, uri: str) -> None:
        """One object, or a prefix of several: at least one file of a known format."""
        key = check_readable(self._key_of(uri, "input"), uri)
        if key and not key.endswith("/"):
            info = await self._storage.stat(key)
            if info is not None:
                name = key.rpartition("/")[2]
                if input_file(key, name, info.size, doc.options) is None:
                    raise InvalidRequestError(
                        f"cannot tell the format of {uri!r}: name it .jsonl, .csv (optionally "
                        ".gz) or give content_type",
                        code="unknown_format",
                    )
                doc.input_key = key
                return
            key += "/"
        async for info in self._storage.list(key):
            if skip_listed(key, info.key):
                continue
            if input_file(info.key, info.key[len(key) :], info.size, doc.options) is not None:
                doc.input_prefix = key
                return
        raise NotFoundError(
            f"no readable input file at {uri!r} (JSON Lines or CSV, optionally gzip)",
            code="input_not_found",
            uri=uri,
        )

    # -- uploads -------------------------------------------------------------------
    async def upload(
        self, job_id: str, name: str, chunks: AsyncIterable[bytes], content_type: str
    ) -> Prediction:
        """Land one of the job's uploads; the last one to land queues the job."""
        row = await self.get(job_id)
        doc = JobDoc.from_json(row.definition or "{}")
        if row.status != Status.AWAITING_INPUT:
            raise ConflictError(
                f"batch job {job_id} is {row.status}, not awaiting input",
                code="invalid_state",
                status=str(row.status),
            )
        if name not in (doc.uploads or []):
            raise NotFoundError(f"batch job {job_id} expects no upload named {name!r}", name=name)
        assert doc.input_prefix is not None
        await self._storage.put_stream(
            doc.input_prefix + name,
            chunks,
            content_type=content_type,
            max_bytes=self._settings.max_payload_bytes,
        )
        landed = await asyncio.gather(
            *(self._storage.stat(doc.input_prefix + n) for n in doc.uploads or [])
        )
        if any(info is None for info in landed):
            return row
        try:
            row = await self._store.mark_input_ready(
                job_id,
                input_key=doc.input_prefix,
                input_content_type=content_type,
                input_bytes=sum(info.size for info in landed if info is not None),
                now=time.time(),
            )
        except ConflictError:  # a racing last upload queued it first
            return await self.get(job_id)
        self._signal.notify(QUEUE)
        return row

    # -- read, list, cancel --------------------------------------------------------
    async def get(self, job_id: str, who: Principal | None = None) -> Prediction:
        """The job; with ``who``, only when it is that caller's (another tenant's
        answers exactly as an unknown id does)."""
        row = await self._store.get(job_id)
        if row is None or row.kind != JOB or (who is not None and not _owns(who, row)):
            raise NotFoundError("batch job not found", id=job_id)
        return row

    async def list(
        self,
        *,
        status: Status | None = None,
        target: str | None = None,
        after_id: str | None = None,
        limit: int = 50,
        who: Principal | None = None,
    ) -> list[Prediction]:
        """Newest first; ``after_id`` is the last id of the previous page; with ``who``,
        that caller's jobs only."""
        found: list[Prediction] = []
        tenant = None if who is None else who.tenant
        while len(found) < limit:
            page = await self._store.list(
                kind=JOB, status=status, after_id=after_id, limit=LIST_SCAN, tenant=tenant
            )
            for row in page:
                job_target = JobDoc.from_json(row.definition or "{}").target
                if target is not None and job_target != target:
                    continue
                if who is None or who.may_use(job_target):
                    found.append(row)
            if len(page) < LIST_SCAN:
                break
            after_id = page[-1].id
        return found[:limit]

    async def cancel(self, job_id: str, who: Principal | None = None) -> Prediction:
        """Cancel the job and its queued chunks; what is done stays in the outputs (its
        driver finishes the output files with the chunks already done)."""
        row = await self.get(job_id, who)
        row, _ = await self._store.cancel(job_id, now=time.time())
        doc = JobDoc.from_json(row.definition or "{}")
        for chunk in doc.window:
            with contextlib.suppress(NotFoundError):
                await self._store.cancel(chunk, now=time.time())
        return row

    # -- rendering helpers -----------------------------------------------------------
    async def download_urls(self, row: Prediction) -> dict[str, str]:
        """Presigned URLs of the job's finished outputs and error files (recorded only
        once written whole: no stat needed), and of its manifest once it exists."""
        doc, expires_s = doc_of(row), self._settings.download_url_expires_s
        keys = [o.output_key for o in doc.outputs]
        keys += [o.errors_key for o in doc.outputs if o.errors_key]
        manifest = manifest_key(doc.output_prefix)
        if row.status.terminal and await self._storage.stat(manifest) is not None:
            keys.append(manifest)
        return {key: await self._storage.presign_get(key, expires_s=expires_s) for key in keys}


def _owns(who: Principal, row: Prediction) -> bool:
    return row.tenant == who.tenant and who.may_use(doc_of(row).target)


def doc_of(row: Prediction) -> JobDoc:
    return JobDoc.from_json(row.definition or "{}")


__all__ = ["BatchService", "JobRequest", "doc_of"]
