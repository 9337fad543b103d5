"""bench/compare.py's pure part (bench/comparison.py): its workloads against
bench/README.md, reading the scripts' JSON lines, medians, verdicts and the table.
No benchmark runs here."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_bench_comparison", BENCH / "comparison.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


c = _load()


def _run(workload: str, side: str, round_: int, figures: dict[str, float]) -> Any:
    """A run that went well."""
    return c.Run(workload, side, round_, "ok", figures, 1.0)


def test_every_workload_of_the_readme_is_compared_or_named_left_out() -> None:
    """Each id of bench/README.md's workload table has a compare entry or a reason."""
    table = (BENCH / "README.md").read_text().split("\n\n| command |")[0]
    ids = set(re.findall(r"^\| (B\d+(?:-[\w]+)?) \|", table, re.M))
    assert {"B1", "B2", "B4-for_each", "B3-interop", "B14"} <= ids
    compared = {w.id for w in c.WORKLOADS}
    assert ids <= compared | set(c.LEFT_OUT)
    assert not set(c.LEFT_OUT) & compared


def test_every_workload_runs_a_script_with_the_flags_it_passes() -> None:
    """The script exists and takes every --flag given, full and quick (a renamed flag
    would fail every run of a sitting)."""
    for w in c.WORKLOADS:
        source = (BENCH / w.script).read_text()
        for flag in (a for a in (*w.args, *w.full, *w.quick) if a.startswith("--")):
            assert f'"{flag}"' in source, (w.id, flag)
        assert w.argv(quick=True)[0] == f"bench/{w.script}"
        assert w.deadline_s > 0 and w.figures


def test_select_keeps_the_table_order_and_refuses_unknown_ids() -> None:
    """--only is case-blind, runs in the table's order, and names the unknown ids."""
    assert [w.id for w in c.select("b4,B1")] == ["B1", "B4"]
    assert len(c.select(None)) == len(c.WORKLOADS)
    with pytest.raises(ValueError, match="B99"):
        c.select("B1,B99")


def test_sides_alternate_by_round() -> None:
    """The base runs first in odd rounds, last in even ones."""
    assert c.sides_of(1) == ("before", "after")
    assert c.sides_of(2) == ("after", "before")


def test_parse_lines_keeps_json_objects_only() -> None:
    """Log lines, broken JSON and non-objects among the output are skipped."""
    text = 'starting\n{"workload": "B1", "rps": 3}\n{broken\n[1, 2]\n  {"a": 1}  \n'
    assert c.parse_lines(text) == [{"workload": "B1", "rps": 3}, {"a": 1}]


def test_pick_matches_fields_prefixes_and_nested_keys() -> None:
    """A figure reads its line by workload and fields, a ``*`` value as a prefix, a
    dotted key into nested objects, the largest of several lines; nothing else."""
    lines = [
        {"workload": "B4", "route": "realtime", "overhead_p50_ms": 11.0},
        {"workload": "B4", "route": "async", "overhead_p50_ms": 12.5},
        {"workload": "B4-median", "route": "async", "overhead_p50_ms": 99.0},
        {"workload": "B5", "metric": "peak_rss", "process": "-m freight.runner --ref a", "v": 30},
        {"workload": "B5", "metric": "peak_rss", "process": "-m freight.runner --ref b", "v": 40},
        {"workload": "B5", "metric": "peak_rss", "process": "-m freight.cli serve", "v": 120},
        {"workload": "B9-rss", "peak_rss_mib": {"server": 125, "runner": 200}},
        {"workload": "B6-summary", "dropped": True, "nan": float("nan")},
    ]
    assert (
        c.pick(c.Figure("q", "B4", "overhead_p50_ms", "lower", (("route", "async"),)), lines)
        == 12.5
    )
    runner = c.Figure("r", "B5", "v", "lower", (("process", "-m freight.runner*"),))
    assert c.pick(runner, lines) == 40.0
    assert c.pick(c.Figure("n", "B9-rss", "peak_rss_mib.runner", "lower"), lines) == 200.0
    assert c.pick(c.Figure("b", "B6-summary", "dropped", "lower"), lines) is None
    assert c.pick(c.Figure("x", "B6-summary", "nan", "lower"), lines) is None
    assert c.pick(c.Figure("m", "B7-summary", "overhead_p50_ms", "lower"), lines) is None


def test_read_run_tells_ok_failed_timed_out_and_lacking_code_apart() -> None:
    """Figures from stdout; a failure's last stderr line; a deadline; an import or
    attribute error (the same script on both sides) means the side's code lacks it."""
    (b1,) = c.select("B1")
    out = json.dumps({"workload": "B1", "completed_per_s": 1000.0, "p99_ms": 50})
    ok = c.read_run(b1, "after", 1, out, "", 0, 12.0)
    assert (ok.status, ok.figures["completed/s"], ok.figures["p99 ms"]) == ("ok", 1000.0, 50.0)
    trace = "Traceback (most recent call last):\n  ...\nRuntimeError: server exited\n"
    failed = c.read_run(b1, "before", 2, "", trace, 1, 3.0)
    assert (failed.status, failed.note) == ("failed", "RuntimeError: server exited")
    late = c.read_run(b1, "before", 1, "", "", None, 240.0)
    assert late.status == "failed" and "deadline" in late.note
    lacks = "AttributeError: 'AsyncClient' object has no attribute 'create_many'"
    na = c.read_run(b1, "before", 1, "", lacks, 1, 3.0)
    assert na.status == "n/a" and na.note.startswith("n/a (base lacks it")
    empty = c.read_run(b1, "after", 1, "nothing\n", "", 0, 3.0)
    assert (empty.status, empty.note) == ("failed", "no figure in its output")


def test_side_cell_shows_the_median_then_each_round() -> None:
    """Median, then the rounds in order; failed rounds counted; else the reason."""
    runs = [
        _run("B1", "before", 2, {"x": 3.0}),
        _run("B1", "before", 1, {"x": 1.0}),
        _run("B1", "before", 3, {"x": 2.0}),
    ]
    assert c.side_cell(sorted(runs, key=lambda r: r.round), "x") == "2.00 (1.00 · 3.00 · 2.00)"
    assert c.side_cell([_run("B1", "before", 1, {"x": 1500.0})], "x") == "1,500"
    broken = c.Run("B1", "after", 2, "failed", {}, 1.0, "RuntimeError: a | b")
    assert (
        c.side_cell([_run("B1", "after", 1, {"x": 15.0}), broken], "x") == "15.0; 1 round(s) failed"
    )
    assert c.side_cell([broken], "x") == "failed (round 2): RuntimeError: a \\| b"
    lacking = c.Run("B1-bulk", "before", 1, "n/a", {}, 0.0, "n/a (base lacks it)")
    assert c.side_cell([lacking], "x") == "n/a (base lacks it)"
    assert c.side_cell([], "x") == "not run"


@pytest.mark.parametrize(
    ("better", "before", "after", "expected"),
    [
        ("higher", [100.0, 110.0], [120.0, 130.0], "1.19x **better**"),
        ("lower", [100.0, 110.0], [120.0, 130.0], "1.19x **worse**"),
        ("higher", [120.0, 130.0], [100.0, 110.0], "0.84x **worse**"),
        ("lower", [0.75, 0.76], [1.20, 1.34], "1.68x **worse**"),
        ("higher", [100.0, 125.0], [120.0, 130.0], "1.11x"),  # the ranges overlap
        ("higher", [100.0, 101.0], [102.0, 103.0], "1.02x"),  # apart, but under 5 %
        ("higher", [100.0], [150.0], "1.50x"),  # one round: no spread to judge by
        ("higher", [], [150.0], ""),
    ],
)
def test_verdict_marks_only_changes_beyond_the_rounds_spread(
    better: str, before: list[float], after: list[float], expected: str
) -> None:
    """after/before of the medians, marked by direction when the ranges are apart."""
    assert c.verdict(better, before, after) == expected


def test_render_writes_the_header_a_row_per_figure_and_the_failures() -> None:
    """The table has the sitting's header, one row per figure of each workload, and
    lists the failed runs below it."""
    workloads = c.select("B1,B2")
    runs = [
        _run("B1", side, r, {"completed/s": v, "p99 ms": 50.0, "server CPU ms/prediction": 0.9})
        for side, r, v in [
            ("before", 1, 1000.0),
            ("after", 1, 1200.0),
            ("before", 2, 1050.0),
            ("after", 2, 1250.0),
        ]
    ]
    runs.append(c.Run("B2", "before", 1, "failed", {}, 2.0, "SystemExit: server not ready"))
    runs.append(_run("B2", "after", 1, {"burst s": 0.64, "p99 ms": 470.0}))
    sitting = c.Sitting(
        "aaa1111 base", "bbb2222 head", "2026-12-08 10:00 UTC", "1.0", "2.0", 2, 2, False, 600.0
    )
    table = c.render(sitting, workloads, runs)
    assert "- before: aaa1111 base" in table and "2 cores" in table and "10.0 min" in table
    rows = [line for line in table.splitlines() if line.startswith("| B")]
    assert len(rows) == 6  # B1: 3 figures, B2: 3
    before, after = "1,025 (1,000 · 1,050)", "1,225 (1,200 · 1,250)"
    assert rows[0] == f"| B1 | completed/s ↑ | {before} | {after} | 1.20x **better** |"
    assert rows[3].startswith(
        "| B2 | burst s ↓ | failed (round 1): SystemExit: server not ready | 0.64 |"
    )
    assert table.endswith("- B2, before, round 1: SystemExit: server not ready")
