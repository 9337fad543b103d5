"""What bench/compare.py runs, and how it reads and tabulates what it gets: no I/O.

Each workload of bench/README.md is one bench script's command line (its size at
``--quick`` beside it) and the headline figures read from the JSON lines it prints.
A figure's cell is the median of the rounds with every round after it; the
``after/before`` column marks a change *better* or *worse* only when the two sides'
ranges do not overlap and the medians differ by at least ``MIN_CHANGE``.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Better = Literal["higher", "lower"]
Side = Literal["before", "after"]
SIDES: tuple[Side, Side] = ("before", "after")
TREE = {"before": "base", "after": "head"}  # whose code each side runs
MIN_CHANGE = 0.05  # a 2-round spread is narrow by chance; smaller changes are not marked


@dataclass(frozen=True)
class Figure:
    """One headline figure: ``key`` (dotted for a nested field) of the JSON lines whose
    ``workload`` is ``line`` and whose fields equal ``match`` (a value ending in ``*``
    matches as a prefix); several such lines (one per process): their largest."""

    label: str
    line: str
    key: str
    better: Better
    match: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Workload:
    """One bench script's run of one workload: ``args``, then ``full`` (or ``quick``:
    smaller sizes for a smoke run), bounded by ``deadline_s``.

    ``requires``: a path (a glob under the tree's root) and a text one of its files must
    hold, or that tree's code cannot serve the workload (n/a, not run); ``needs``: what
    the machine must have (``wrk``, ``postgresql``)."""

    id: str
    script: str
    args: tuple[str, ...]
    full: tuple[str, ...]
    quick: tuple[str, ...]
    figures: tuple[Figure, ...]
    deadline_s: float
    requires: tuple[str, str] | None = None
    needs: str | None = None

    def argv(self, quick: bool) -> list[str]:
        return [f"bench/{self.script}", *self.args, *(self.quick if quick else self.full)]


def _f(label: str, line: str, key: str, better: Better, **match: Any) -> Figure:
    return Figure(label, line, key, better, tuple(match.items()))


def _bench(only: str, quick: tuple[str, ...], *figures: Figure, **kw: Any) -> Workload:
    """A workload of bench.py: one fresh server per run (B1, B1-bulk, B2, B3)."""
    return Workload(only, "bench.py", ("--rounds", "1", "--only", only), (), quick, figures, **kw)


def _b4(label: str, key: str, route: str) -> Figure:
    return _f(label, "B4", key, "lower", route=route)


def _rss(label: str, process: str) -> Figure:
    return _f(label, "B5", "vm_hwm_mib", "lower", metric="peak_rss", process=process)


def _b14(form: str) -> Figure:
    return _f(f"{form} first chunk p50 ms", "B14", "first_chunk_p50_ms", "lower", form=form)


_COLD = ("src/freight/**/*.py", "cold_starts")  # the autoscaler's cold starts
WORKLOADS: tuple[Workload, ...] = (
    _bench(
        "B1",
        ("--n", "300"),
        _f("completed/s", "B1", "completed_per_s", "higher"),
        _f("p99 ms", "B1", "p99_ms", "lower"),
        _f("server CPU ms/prediction", "B1", "server_cpu_ms_per_prediction", "lower"),
        deadline_s=240,
    ),
    _bench(
        "B1-bulk",
        ("--n", "300"),
        _f("completed/s", "B1-bulk", "completed_per_s", "higher"),
        _f("server CPU ms/prediction", "B1-bulk", "server_cpu_ms_per_prediction", "lower"),
        deadline_s=240,
        requires=("src/freight/client/*.py", "def create_many"),
    ),
    _bench(
        "B2",
        (),
        _f("burst s", "B2", "burst_s", "lower"),
        _f("p99 ms", "B2", "p99_ms", "lower"),
        _f("server CPU ms/prediction", "B2", "server_cpu_ms_per_prediction", "lower"),
        deadline_s=180,
    ),
    _bench(
        "B2-flood",
        (),
        _f("burst s", "B2-flood", "burst_s", "lower"),
        _f("p99 ms", "B2-flood", "p99_ms", "lower"),
        _f("server CPU ms/prediction", "B2-flood", "server_cpu_ms_per_prediction", "lower"),
        deadline_s=180,
    ),
    _bench(
        "B3",
        ("--duration", "2"),
        _f("req/s", "B3", "rps", "higher"),
        _f("p99 ms", "B3", "p99_ms", "lower"),
        deadline_s=180,
        needs="wrk",
    ),
    Workload(
        "B4",
        "pipeline.py",
        ("--rounds", "1"),
        (),
        ("--n", "30"),
        (
            _b4("real time: overhead p50 ms", "overhead_p50_ms", "realtime"),
            _b4("queued: overhead p50 ms", "overhead_p50_ms", "async"),
            _b4("real time: server CPU ms/run", "server_cpu_ms_per_run", "realtime"),
            _b4("queued: server CPU ms/run", "server_cpu_ms_per_run", "async"),
        ),
        300,
        requires=("src/freight/api/routes/pipelines.py", "predict"),
    ),
    Workload(
        "B4-for_each",
        "pipeline.py",
        ("--deadline-s", "60", "--for-each", "100,1000"),
        (),
        (),
        (
            _f("µs/element, N=100", "B4-for_each", "per_element_us", "lower", elements=100),
            _f("µs/element, N=1,000", "B4-for_each", "per_element_us", "lower", elements=1000),
        ),
        240,
        requires=("src/freight/pipelines/*.py", "for_each"),
    ),
    Workload(
        "B5",
        "payload.py",
        ("--deadline-s", "240", "--size-mib"),
        ("256",),
        ("32",),
        (
            _f("end to end MB/s", "B5", "mb_per_s", "higher", metric="end_to_end"),
            _rss("serve peak RSS MiB", "-m freight.cli*"),
            _rss("runner peak RSS MiB", "-m freight.runner*"),
        ),
        300,
    ),
    Workload(
        "B6",
        "scaling.py",
        ("--only", "B6", "--phase-s"),
        ("8",),
        ("3",),
        (
            _f("steady p50 ms", "B6-steady", "p50_ms", "lower"),
            _f("burst p50 ms", "B6-burst", "p50_ms", "lower"),
            _f("burst p99 ms", "B6-burst", "p99_ms", "lower"),
            _f("dropped", "B6-summary", "dropped", "lower"),
        ),
        240,
        requires=_COLD,
    ),
    Workload(
        "B7",
        "scaling.py",
        ("--only", "B7", "--rounds"),
        ("3",),
        ("1",),
        (_f("overhead p50 ms", "B7-summary", "overhead_p50_ms", "lower"),),
        180,
        requires=_COLD,
    ),
    Workload(
        "B7-sklearn",
        "scaling.py",
        ("--only", "B7-sklearn", "--rounds"),
        ("3",),
        ("1",),
        (
            _f("overhead p50 ms, exec", "B7-sklearn-summary", "exec_p50_ms", "lower"),
            _f("overhead p50 ms, fork", "B7-sklearn-summary", "fork_p50_ms", "lower"),
        ),
        240,
        requires=_COLD,
    ),
    Workload(
        "B9",
        "batch.py",
        ("--rounds", "1"),
        ("--records", "20000", "--rss", "10000"),
        ("--records", "5000", "--rss", "2000"),
        (
            _f("records/s over a plain loop's", "B9-summary", "ratio", "higher"),
            _f("time to first record s", "B9-summary", "first_record_s", "lower"),
            _f("runner peak RSS MiB", "B9-rss", "peak_rss_mib.runner", "lower"),
            _f("server peak RSS MiB", "B9-rss", "peak_rss_mib.server", "lower"),
        ),
        300,
        requires=("src/freight/api/routes/batch_jobs.py", "batch"),
    ),
    Workload(
        "B10",
        "notify.py",
        ("--rounds", "1"),
        (),
        ("--n", "300"),
        (
            _f("B1 with webhooks / without", "B10-summary", "ratio", "higher"),
            _f("delivery p50 ms", "B10-summary", "delivery_p50_ms", "lower"),
            _f("delivery p50 ms, unloaded", "B10-unloaded", "delivery_p50_ms", "lower"),
        ),
        300,
    ),
    Workload(
        "B11",
        "fairness.py",
        ("--rounds", "1"),
        (),
        ("--backlog", "2000", "--n", "30"),
        (
            _f("B's p95 wait behind A's backlog ms", "B11", "backlog_p95_ms", "lower"),
            _f("that over B alone", "B11", "ratio", "lower"),
        ),
        240,
    ),
    Workload(
        "B13",
        "callback.py",
        ("--shapes", "embedded", "--rounds", "1"),
        ("--n", "30"),
        ("--n", "10", "--warmup", "2"),
        (
            _f("round trip p50 ms", "B13", "round_trip_p50_ms", "lower"),
            _f("answer to next step p50 ms", "B13", "answer_to_next_p50_ms", "lower"),
        ),
        240,
        requires=("src/freight/pipelines/*.py", "callback"),
    ),
    Workload(
        "B14",
        "streaming.py",
        ("--shapes", "embedded", "--rounds", "1"),
        ("--n", "30"),
        ("--n", "10", "--warmup", "2"),
        (_b14("sse"), _b14("bytes"), _b14("queued")),
        240,
        requires=("src/freight/streaming.py", ""),
    ),
    Workload(
        "B3-interop",
        "interop.py",
        ("--rounds", "1", "--duration"),
        ("5",),
        ("2",),
        (
            _f("SageMaker route req/s", "B3-sagemaker", "rps", "higher"),
            _f(
                "SageMaker / native req/s",
                "B3-interop-summary",
                "sagemaker_rps_vs_native",
                "higher",
            ),
            _f("SageMaker / native CPU", "B3-interop-summary", "sagemaker_cpu_vs_native", "lower"),
        ),
        240,
        requires=("src/freight/api/routes/sagemaker.py", "invocations"),
        needs="wrk",
    ),
    Workload(
        "B1-cluster",
        "cluster.py",
        ("--workers", "1", "--rounds", "1"),
        ("--n", "1000", "--warmup", "100"),
        ("--n", "300", "--warmup", "30"),
        (
            _f("completed/s", "B1-cluster", "completed_per_s", "higher"),
            _f("API CPU ms/prediction", "B1-cluster", "api_cpu_ms_per_prediction", "lower"),
        ),
        300,
        needs="postgresql",
    ),
)
# workloads named in bench/README.md or the shared BENCH.md that are not run here: B8
# has no script; B12 (console pages) needs chromium and a million-row database and
# reads no path a prediction takes
LEFT_OUT = {"B8": "no script", "B12": "chromium and a 1M-row database; off the hot paths"}


def select(only: str | None) -> list[Workload]:
    """The workloads named in ``only`` (comma-separated ids, any case), in table order."""
    if not only:
        return list(WORKLOADS)
    named = [w.strip() for w in only.split(",") if w.strip()]
    known = {w.id.lower() for w in WORKLOADS}
    if unknown := [w for w in named if w.lower() not in known]:
        names = ", ".join(w.id for w in WORKLOADS)
        raise ValueError(f"unknown workloads {unknown} (choose from {names})")
    wanted = {w.lower() for w in named}
    return [w for w in WORKLOADS if w.id.lower() in wanted]


def sides_of(round_: int) -> tuple[Side, Side]:
    """Before then after in odd rounds, after then before in even ones (drift spread)."""
    return SIDES if round_ % 2 else (SIDES[1], SIDES[0])


# -- reading a run ------------------------------------------------------------------------


def parse_lines(text: str) -> list[dict[str, Any]]:
    """The JSON objects among a script's output lines (anything else is skipped)."""
    out = []
    for raw in text.splitlines():
        raw = raw.strip()
        if not raw.startswith("{"):
            continue
        try:
            value = json.loads(raw)
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out


def _matches(line: dict[str, Any], figure: Figure) -> bool:
    if line.get("workload") != figure.line:
        return False
    for key, want in figure.match:
        got = line.get(key)
        if isinstance(want, str) and want.endswith("*"):
            if not (isinstance(got, str) and got.startswith(want[:-1])):
                return False
        elif got != want:
            return False
    return True


def _number(line: dict[str, Any], key: str) -> float | None:
    value: Any = line
    for part in key.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return None  # bools, strings, missing and NaN are no figure
    return float(value)


def pick(figure: Figure, lines: Iterable[dict[str, Any]]) -> float | None:
    values = [
        v
        for line in lines
        if _matches(line, figure) and (v := _number(line, figure.key)) is not None
    ]
    return max(values) if values else None


def error_tail(stderr: str, limit: int = 160) -> str:
    """The last line of a failed run's stderr (a traceback's exception, a SystemExit's
    message), on one line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return lines[-1][:limit] if lines else ""


_LACKS = ("ImportError", "ModuleNotFoundError", "cannot import name", "has no attribute")


def lacks_feature(tail: str) -> bool:
    """Whether a run's error says its tree's code lacks what the bench script uses (the
    scripts and the environment are the same on both sides: the code is what differs)."""
    return any(sign in tail for sign in _LACKS)


Status = Literal["ok", "failed", "n/a", "skipped"]


@dataclass
class Run:
    """One run of one workload on one side: its figures (by label), or why there are none."""

    workload: str
    side: Side
    round: int
    status: Status
    figures: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    note: str = ""


def read_run(
    workload: Workload,
    side: Side,
    round_: int,
    stdout: str,
    stderr: str,
    rc: int | None,
    seconds: float,
) -> Run:
    """A finished run (``rc`` None: killed at its deadline) from what it printed."""
    lines = parse_lines(stdout)
    figures = {f.label: v for f in workload.figures if (v := pick(f, lines)) is not None}
    run = Run(workload.id, side, round_, "ok", figures, seconds)
    if rc is None:
        run.status, run.note = "failed", f"past its {workload.deadline_s:.0f} s deadline"
    elif rc != 0:
        tail = error_tail(stderr) or f"exit status {rc}"
        lacks = lacks_feature(tail) and not figures
        run.status = "n/a" if lacks else "failed"
        run.note = f"n/a ({TREE[side]} lacks it: {tail})" if lacks else tail
    elif not figures:
        run.status, run.note = "failed", error_tail(stderr) or "no figure in its output"
    return run


# -- the table ----------------------------------------------------------------------------


def fmt(value: float) -> str:
    size = abs(value)
    if size >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if size >= 10 else f"{value:.2f}"


def _cell_text(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def side_cell(runs: Sequence[Run], label: str) -> str:
    """The median and every round's value (round order); else why there is none."""
    values = [r.figures[label] for r in runs if label in r.figures]
    failed = [r for r in runs if label not in r.figures and r.status == "failed"]
    if not values:
        why = [r for r in runs if r.status in ("n/a", "skipped")] or failed
        if not why:
            return "not run" if not runs else "no figure"
        note = why[0].note
        return _cell_text(f"failed (round {why[0].round}): {note}" if why is failed else note)
    text = fmt(statistics.median(values))
    if len(values) > 1:
        text += f" ({' · '.join(fmt(v) for v in values)})"
    if failed:
        text += f"; {len(failed)} round(s) failed"
    return text


def verdict(better: Better, before: Sequence[float], after: Sequence[float]) -> str:
    """after/before of the medians; *better* or *worse* when the two sides' ranges do
    not overlap (at least 2 rounds each) and the medians differ by ``MIN_CHANGE``."""
    if not before or not after:
        return ""
    old, new = statistics.median(before), statistics.median(after)
    if old == 0:
        return "same" if new == 0 else ""
    ratio = new / old
    text = f"{ratio:.2f}x"
    if min(len(before), len(after)) < 2 or abs(ratio - 1) < MIN_CHANGE:
        return text
    if min(after) > max(before):
        up = True
    elif max(after) < min(before):
        up = False
    else:
        return text
    return f"{text} **{'better' if up == (better == 'higher') else 'worse'}**"


@dataclass(frozen=True)
class Sitting:
    """The header: what was compared, when, on what."""

    base: str
    head: str
    date: str
    load_start: str
    load_end: str
    nproc: int
    rounds: int
    quick: bool
    seconds: float


def render(sitting: Sitting, workloads: Sequence[Workload], runs: Sequence[Run]) -> str:
    """The Markdown table (one row per figure), its header and the failures' list."""
    size = "--quick sizes (a smoke run, not figures to keep)" if sitting.quick else "full sizes"
    out = [
        f"## Before / after, {sitting.date}",
        "",
        f"- before: {sitting.base}",
        f"- after: {sitting.head}",
        f"- machine: {sitting.nproc} cores; load average {sitting.load_start} at the start, "
        f"{sitting.load_end} at the end",
        f"- {sitting.rounds} round(s) per side, alternating (before first in odd rounds); "
        f"medians; {size}; {sitting.seconds / 60:.1f} min",
        "",
        "| workload | figure | before (rounds) | after (rounds) | after/before |",
        "|---|---|---|---|---|",
    ]
    for w in workloads:
        mine = sorted((r for r in runs if r.workload == w.id), key=lambda r: r.round)
        by_side = {side: [r for r in mine if r.side == side] for side in SIDES}
        for f in w.figures:
            values = {
                s: [r.figures[f.label] for r in by_side[s] if f.label in r.figures] for s in SIDES
            }
            cells = [side_cell(by_side[s], f.label) for s in SIDES]
            arrow = "↑" if f.better == "higher" else "↓"
            change = verdict(f.better, values["before"], values["after"])
            out.append(f"| {w.id} | {f.label} {arrow} | {cells[0]} | {cells[1]} | {change} |")
    failures = [r for r in runs if r.status == "failed"]
    if failures:
        out += ["", "Failed runs:", ""]
        out += [
            f"- {r.workload}, {r.side}, round {r.round}: {_cell_text(r.note)}" for r in failures
        ]
    return "\n".join(out)
