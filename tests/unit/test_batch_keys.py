"""The batch key schemes of ``freight.keys``: output names, freight's own spaces, what a
listed prefix reads, and a chunk's objects per attempt."""

from __future__ import annotations

import pytest

from freight.batch.job import input_file
from freight.batch.options import Options
from freight.keys import (
    chunk_base,
    chunk_errors_key,
    chunk_output_key,
    chunk_output_of_summary,
    chunk_summary_key,
    output_name,
    output_names,
    readable,
    skip_listed,
    writable,
)


def test_outputs_are_named_without_gz() -> None:
    """``<name>.out``, ``.gz`` dropped (outputs are written uncompressed)."""
    assert output_name("a/rows.csv.gz") == "a/rows.csv.out"
    assert output_name("rows.JSONL.GZ") == "rows.JSONL.out"
    assert output_name("data.jsonl") == "data.jsonl.out"


def test_output_names_never_clash_nor_take_an_inputs_name() -> None:
    """A plain file and its gzip twin, or an input already named like an output, keep
    every output distinct and off the inputs' names (a job may write where it reads)."""
    assert output_names(["rows.csv", "rows.csv.gz"]) == ["rows.csv.out", "rows.csv.gz.out"]
    assert output_names(["rows.csv.gz", "rows.csv"]) == ["rows.csv.gz.out", "rows.csv.out"]
    assert output_names(["rows.csv.gz"]) == ["rows.csv.out"]
    names = ["d.jsonl", "d.jsonl.out"]
    chosen = output_names(names)
    assert len(set(chosen)) == 2 and not set(chosen) & set(names)


@pytest.mark.parametrize(
    ("prefix", "ok"),
    [
        ("results/2026/", True),
        ("", False),
        ("in", False),
        ("inputs/", False),
        ("outputs/x/", False),
        ("batch/j/output/", False),
        ("batches/", True),
    ],
)
def test_a_job_writes_outside_freights_own_spaces(prefix: str, ok: bool) -> None:
    """No output prefix in (or above) inputs/, outputs/, batch/."""
    assert writable(prefix) is ok


@pytest.mark.parametrize(
    ("key", "ok"),
    [
        ("data/x.jsonl", True),
        ("inputs/p1", True),
        ("outputs/p1", True),
        ("batch/j/output/", True),
        ("batch/j/input/a.csv", True),
        ("batch/j/chunks/0-0.in", False),
        ("batch/j/", False),
        ("batch/", False),
    ],
)
def test_what_a_caller_may_read(key: str, ok: bool) -> None:
    """Everything but a job's working objects (and a folder holding them)."""
    assert readable(key) is ok


def test_a_listed_prefix_skips_bookkeeping_and_freights_objects() -> None:
    """Manifests and error files anywhere, and freight's spaces under a prefix above
    them, are not inputs; a job's outputs are."""
    assert skip_listed("out/", "out/manifest.json")
    assert skip_listed("out/", "out/a/data.jsonl.out.errors")
    assert not skip_listed("out/", "out/data.jsonl.out")
    assert skip_listed("", "inputs/p1") and skip_listed("", "batch/j/output/x.out")
    assert not skip_listed("batch/j/output/", "batch/j/output/x.jsonl.out")


def test_a_jobs_output_reads_as_its_input_did() -> None:
    """``<name>.out`` has its input's format, never compressed."""
    options = Options()
    csv = input_file("k", "rows.csv.out", 1, options)
    gz = input_file("k", "rows.csv.gz.out", 1, options)
    assert csv is not None and (csv.format, csv.gzip) == ("csv", False)
    assert gz is not None and (gz.format, gz.gzip) == ("csv", False)
    assert input_file("k", "x.png.out", 1, options) is None


def test_each_attempt_at_a_chunk_has_objects_of_its_own() -> None:
    """Fresh output keys per attempt; errors and summary keys follow the output's."""
    base = chunk_base("j", 0, 3)
    one, two = chunk_output_key(base), chunk_output_key(base)
    assert one != two and one.startswith(base + ".") and one.endswith(".out")
    assert chunk_errors_key(one) == one.removesuffix(".out") + ".err"
    assert chunk_output_of_summary(chunk_summary_key(one)) == one
    assert not chunk_output_key(chunk_base("j", 0, 30)).startswith(base + ".")
