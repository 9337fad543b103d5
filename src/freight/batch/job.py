"""A batch job as the queue stores it: one row of kind ``batch`` whose ``definition``
holds this document — what was asked (target, options, input, output) and how far
the driver got (files finished, counts) — so any driver can resume it.

Why a row of the predictions table: a job then has the queue's whole life for
free — claim with a lease (its driver), lease expiry when that driver dies (another
resumes it), cancel, upload through a presigned URL, idempotency, retention, and
notifications from the outbox triggers (``batch_job.started`` / ``.completed``).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Final

import orjson

from freight.batch.options import Options
from freight.batch.spec import InputFile
from freight.keys import OUTPUT_SUFFIX
from freight.prediction import Kind, Prediction

#: the ``target`` column of every job row: the queue the drivers claim from (the
#: job's own target, a model or a pipeline, is in its document)
QUEUE: Final = "@batch"
#: the ``kind`` of a job row, and of the predictions that run its chunks
JOB: Final = Kind.BATCH
CHUNK: Final = Kind.CHUNK


@dataclass(slots=True)
class FileOutput:
    """One finished input file: where its output went and what it held."""

    name: str
    input_key: str
    output_key: str
    errors_key: str | None
    records: int
    failed: int


@dataclass(slots=True)
class JobDoc:
    target: str
    target_kind: str  # model | pipeline
    options: Options
    output_prefix: str
    input_uri: str | None = None  # as given (None: uploaded)
    input_prefix: str | None = None  # a prefix of many files, or the upload prefix
    input_key: str | None = None  # one object
    uploads: list[str] | None = None  # names to upload, under input_prefix
    chunk_timeout_s: float = 3600.0
    chunk_max_attempts: int = 3
    # progress, written by the driver
    files: list[InputFile] | None = None  # resolved when the job starts
    outputs: list[FileOutput] = field(default_factory=list)
    done: int = 0  # records of the current file done so far (finished files: outputs)
    failed: int = 0
    consumed: int = 0  # bytes of the current file read so far
    split_all: bool = False  # every file was split: totals are exact
    started_at: float | None = None
    window: list[str] = field(default_factory=list)  # chunk ids queued or running
    error: dict[str, Any] | None = None  # why the job failed (on_error=fail)

    # -- derived figures -----------------------------------------------------------
    @property
    def records_done(self) -> int:
        return sum(o.records for o in self.outputs) + self.done

    @property
    def records_failed(self) -> int:
        return sum(o.failed for o in self.outputs) + self.failed

    @property
    def bytes_total(self) -> int | None:
        return None if self.files is None else sum(f.size for f in self.files)

    def progress(self) -> float:
        total = self.bytes_total
        if not total:
            return 1.0 if self.split_all else 0.0
        done_files = {o.name for o in self.outputs}
        read = sum(f.size for f in self.files or [] if f.name in done_files) + self.consumed
        return min(1.0, read / total)

    def rate(self, now: float | None = None) -> float | None:
        """Records per second since the driver started the job."""
        if self.started_at is None:
            return None
        elapsed = (now or time.time()) - self.started_at
        return self.records_done / elapsed if elapsed > 0 else None

    def eta_s(self, now: float | None = None) -> float | None:
        if self.started_at is None:
            return None
        fraction = self.progress()
        if fraction <= 0:
            return None
        elapsed = (now or time.time()) - self.started_at
        return max(0.0, elapsed * (1 - fraction) / fraction)

    # -- (de)serialisation ---------------------------------------------------------
    def to_json(self) -> str:
        data = asdict(self)
        data["options"] = self.options.to_json()
        return orjson.dumps(data).decode()

    @classmethod
    def from_json(cls, text: str) -> JobDoc:
        data = orjson.loads(text)
        data["options"] = Options.from_json(data["options"])
        if data.get("files") is not None:
            data["files"] = [InputFile(**f) for f in data["files"]]
        data["outputs"] = [FileOutput(**o) for o in data.get("outputs", [])]
        return cls(**data)


class Lost(Exception):
    """The job is no longer this driver's (its lease went to another driver)."""


@dataclass(slots=True)
class JobRun:
    """One job a driver holds."""

    row: Prediction
    doc: JobDoc
    canceled: bool = False
    lost: bool = False
    saved_at: float = 0.0


def chunk_id(job_id: str, file_index: int, piece_index: int, retry: int = 0) -> str:
    """Deterministic: a resumed driver finds the chunks its predecessor queued. A chunk
    whose objects could not be read or written (``storage_error``) is queued again
    as the next ``retry``."""
    base = f"{job_id}.{file_index}.{piece_index}"
    return f"{base}.r{retry}" if retry else base


_CSV_TYPES: Final = {"text/csv", "application/csv"}
_JSONL_TYPES: Final = {
    "application/jsonl",
    "application/x-ndjson",
    "application/x-jsonlines",
    "application/json-lines",
    "application/json",
}


def input_file(key: str, name: str, size: int, options: Options) -> InputFile | None:
    """What a stored object is as an input of this job; None when its format cannot
    be told (neither its name nor the job's ``content_type`` says). A job's output
    (``<name>.out``, never compressed) reads as its ``<name>`` did: jobs chain."""
    lower = name.lower()
    chained = lower.endswith(OUTPUT_SUFFIX)
    lower = lower.removesuffix(OUTPUT_SUFFIX)
    gzip = not chained and lower.endswith(".gz")
    stem = lower.removesuffix(".gz")
    if options.split == "none":
        return InputFile(key=key, name=name, size=size, format="whole", gzip=False)
    forced = (options.content_type or "").split(";", 1)[0].strip().lower()
    if forced in _CSV_TYPES or (not forced and stem.endswith(".csv")):
        return InputFile(key=key, name=name, size=size, format="csv", gzip=gzip)
    if forced in _JSONL_TYPES or (
        not forced and stem.endswith((".jsonl", ".ndjson", ".json", ".jsonlines"))
    ):
        return InputFile(key=key, name=name, size=size, format="jsonl", gzip=gzip)
    return None
