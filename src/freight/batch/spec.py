"""What a batch job is asked to do: its input files, the spec of one chunk (what a
runner needs, besides the chunk's bytes, to run its records), and the vocabulary
of its options (the options themselves: :mod:`freight.batch.options`, kept apart
so that a runner, which imports this module, never imports pydantic: ~75 ms of
every replica's start, measured).

Vocabulary:

- *record*: one model input. With ``split="line"`` a line of a JSON Lines file
  (parsed JSON) or a data row of a CSV file (a dict keyed by the header); with
  ``split="none"`` a whole file.
- *call*: the records handed to the model together (``predict_batch``), at most
  ``records_per_call`` of them and ``max_call_bytes`` of input (always >= 1).
- *chunk*: the records of one queued prediction (kind ``chunk``): consecutive
  lines of one input file, never spanning two. A chunk runs alone on a replica;
  its calls run one after the other.
- *line*: 1-based line number in the (decompressed) input file, the CSV header
  being line 1: how a failed record is named in the error file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Final, Literal

import orjson

Split = Literal["line", "none"]
OnError = Literal["fail", "continue"]
Join = Literal["none", "input"]
Format = Literal["jsonl", "csv", "whole"]  # whole: split=none, the file is the record

SPLITS: Final = ("line", "none")
ON_ERRORS: Final = ("fail", "continue")
JOINS: Final = ("none", "input")

#: the content type of a chunk prediction's input: the runner runs its records
CHUNK_MEDIA_TYPE: Final = "application/x-freight-chunk"
#: default priority of chunk predictions: below interactive traffic (0)
DEFAULT_PRIORITY: Final = -10
DEFAULT_RECORDS_PER_CALL: Final = 64
DEFAULT_MAX_CALL_BYTES: Final = 6 * 1024 * 1024
DEFAULT_CONCURRENCY: Final = 4


@dataclass(frozen=True, slots=True)
class InputFile:
    """One input object of a job, resolved (listed, stat'ed) when the job starts."""

    key: str  # object-store key
    name: str  # its name relative to the input location
    size: int
    format: Format
    gzip: bool = False
    output: str | None = None  # its output's name under the output prefix (keys.output_names)


@dataclass(frozen=True, slots=True)
class ChunkSpec:
    """What a runner needs to run one chunk, carried as the chunk prediction's inline
    JSON (its records are the object at the prediction's ``input_key``)."""

    format: Format
    first_line: int  # line number of the chunk's first line
    objects: str  # the chunk's key base: each attempt writes keys.chunk_output_key(objects)
    header: list[str] | None = None  # CSV: the file's column names
    records_per_call: int = DEFAULT_RECORDS_PER_CALL
    max_call_bytes: int = DEFAULT_MAX_CALL_BYTES
    join: Join = "none"
    input_filter: str | None = None
    output_filter: str | None = None
    content_type: str | None = None  # split=none: the file's content type
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return orjson.dumps(asdict(self)).decode()

    @classmethod
    def from_json(cls, text: str | bytes) -> ChunkSpec:
        return cls(**orjson.loads(text))


@dataclass(frozen=True, slots=True)
class ChunkSummary:
    """What a runner reports for a chunk (the chunk prediction's output JSON)."""

    records: int  # records read (blank lines are not records)
    failed: int  # records in the error object
    output_bytes: int
    errors_bytes: int = 0
    columns: list[str] | None = None  # CSV output: the column names of its rows

    def to_json(self) -> str:
        return orjson.dumps(asdict(self)).decode()

    @classmethod
    def from_json(cls, text: str | bytes) -> ChunkSummary:
        return cls(**orjson.loads(text))
