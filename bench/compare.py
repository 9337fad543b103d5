"""Every workload of bench/README.md before and after a change, in one sitting.

    .venv/bin/python bench/compare.py [--base REV] [--rounds 2] [--only B1,B2,...]
        [--quick] [--out FILE.jsonl]
    make bench-compare BASE=REV [ROUNDS=2] [QUICK=1] [ONLY=B1,B2]

Checks out ``--base`` (default: where this branch left ``main``, or ``HEAD~1`` on
``main`` itself) into a temporary ``git worktree`` and runs each workload
(bench/comparison.py: the script, its sizes, its headline figures) ``--rounds`` times
on each side: *before* is the base's ``src/``, *after* this checkout's (uncommitted
changes included), both through ``PYTHONPATH`` under this checkout's bench scripts,
so both sides run the same harness. Each round runs every workload, the base first in
odd rounds and last in even ones. A workload the base's code cannot serve (a route it
did not have) is n/a; a run that fails is reported with its error and the rest goes
on. One JSON line per run as it goes (``--out``: every line each script printed,
tagged), then the Markdown table of the medians. Bounded: each run has its workload's
deadline (then SIGINT, so the script stops its servers; then SIGKILL); the worktree is
removed at the end, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from comparison import (
    TREE,
    Run,
    Side,
    Sitting,
    Workload,
    parse_lines,
    read_run,
    render,
    select,
    sides_of,
)

ROOT = Path(__file__).resolve().parent.parent
STOP_S = 20.0  # after SIGINT, for the script's own clean-up (its servers), before SIGKILL


def git(*args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def _commit(rev: str) -> str | None:
    with contextlib.suppress(SystemExit):
        return git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    return None


def default_base() -> str:
    """Where this branch left ``origin/main`` (or ``main``); on main itself, ``HEAD~1``."""
    head = git("rev-parse", "HEAD")
    for ref in ("origin/main", "main"):
        if _commit(ref) and (fork := git("merge-base", "HEAD", ref)) != head:
            return fork
    return "HEAD~1"


def describe(rev: str) -> str:
    text = git("log", "-1", "--format=%h %s", rev)
    return text if len(text) <= 90 else text[:89] + "…"


@contextlib.contextmanager
def base_tree(rev: str) -> Iterator[Path]:
    """``rev`` checked out (detached) in a temporary worktree, removed on the way out."""
    parent = Path(tempfile.mkdtemp(prefix="freight-base-"))
    tree = parent / "tree"
    try:
        git("worktree", "add", "--detach", "--quiet", str(tree), rev)
        yield tree
    finally:
        with contextlib.suppress(SystemExit):
            git("worktree", "remove", "--force", str(tree))
        shutil.rmtree(parent, ignore_errors=True)
        with contextlib.suppress(SystemExit):
            git("worktree", "prune")


# -- what a side can run ------------------------------------------------------------------


def holds(tree: Path, requires: tuple[str, str]) -> bool:
    pattern, text = requires
    for path in tree.glob(pattern):
        with contextlib.suppress(OSError):
            if path.is_file() and text in path.read_text(errors="replace"):
                return True
    return False


def missing(needs: str | None) -> str | None:
    """Why the machine cannot run a workload (``None``: it can)."""
    if needs == "wrk" and shutil.which("wrk") is None:
        return "skipped: wrk not installed (apt-get install -y wrk)"
    if needs == "postgresql":
        try:
            socket.create_connection(("127.0.0.1", 5432), timeout=2).close()
        except OSError:
            return "skipped: no PostgreSQL at 127.0.0.1:5432"
    return None


# -- one run ------------------------------------------------------------------------------


def _start_time(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()[19]


def descendants(root: int) -> dict[int, str | None]:
    """Every live process under ``root`` with its start time (to kill only those)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                raw = Path(f"/proc/{entry}/stat").read_text()
                parents[int(entry)] = int(raw[raw.rindex(")") + 2 :].split()[1])
    found: dict[int, str | None] = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        for child, parent in parents.items():
            if parent == pid and child not in found:
                found[child] = _start_time(child)
                todo.append(child)
    return found


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT (the script's ``finally`` stops its servers), then SIGKILL to everything
    it had started: servers run in sessions of their own, out of its process group."""
    tree = descendants(proc.pid)
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(STOP_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    for pid, started in tree.items():
        if started is not None and _start_time(pid) == started:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def run_once(
    workload: Workload, side: Side, round_: int, tree: Path, quick: bool, work: Path
) -> tuple[Run, str]:
    """One run of the workload's script with ``tree``'s ``src/``; (the run, its stdout)."""
    out, err = (
        work / f"{workload.id}-{side}-{round_}.out",
        work / f"{workload.id}-{side}-{round_}.err",
    )
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "PYTHONUNBUFFERED": "1"}
    started = time.monotonic()
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, *workload.argv(quick)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
        rc: int | None
        try:
            rc = proc.wait(workload.deadline_s)
        except subprocess.TimeoutExpired:
            rc = None
            stop(proc)
        except BaseException:  # Ctrl-C: the run's servers go with it
            stop(proc)
            raise
    text = out.read_text(errors="replace")
    errors = err.read_text(errors="replace")
    return read_run(workload, side, round_, text, errors, rc, time.monotonic() - started), text


def _log(record: dict[str, Any], raw: IO[str] | None = None) -> None:
    line = json.dumps(record, ensure_ascii=False)
    print(line, flush=True)
    if raw is not None:
        raw.write(line + "\n")


def _not_run(workload: Workload, side: Side, round_: int, trees: dict[Side, Path]) -> Run | None:
    """A run that cannot happen on this machine or with this side's code, else None."""
    if why := missing(workload.needs):
        return Run(workload.id, side, round_, "skipped", note=why)
    if workload.requires and not holds(trees[side], workload.requires):
        return Run(workload.id, side, round_, "n/a", note=f"n/a ({TREE[side]} lacks it)")
    return None


def sitting(
    workloads: list[Workload],
    rounds: int,
    quick: bool,
    trees: dict[Side, Path],
    raw: IO[str] | None,
    runs: list[Run],
) -> None:
    """Every round of every workload, both sides; each run appended to ``runs``."""
    with tempfile.TemporaryDirectory(prefix="freight-compare-") as tmp:
        for round_ in range(1, rounds + 1):
            for workload in workloads:
                for side in sides_of(round_):
                    run = _not_run(workload, side, round_, trees)
                    text = ""
                    if run is None:
                        run, text = run_once(workload, side, round_, trees[side], quick, Path(tmp))
                    runs.append(run)
                    if raw is not None:
                        for line in parse_lines(text):
                            tag = {"compare": workload.id, "side": side, "round": round_}
                            raw.write(json.dumps({**tag, "line": line}, ensure_ascii=False) + "\n")
                    _log(
                        {
                            "compare": workload.id,
                            "side": side,
                            "round": round_,
                            "status": run.status,
                            "s": round(run.seconds, 1),
                            "figures": run.figures,
                            **({"note": run.note} if run.note else {}),
                        },
                        raw,
                    )


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _load() -> str:
    return " / ".join(f"{v:.1f}" for v in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", help="the revision to compare with (default: see above)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", help="comma-separated workload ids (default: all)")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--out", type=Path, help="also write every JSON line to this file")
    args = parser.parse_args()
    try:
        workloads = select(args.only)
    except ValueError as e:
        parser.error(str(e))
    base = args.base or default_base()
    base_sha = _commit(base) or parser.error(f"no commit {base!r}")
    if args.rounds < 1:
        parser.error("--rounds must be 1 or more")
    dirty = git("status", "--porcelain", "--", "src")  # what the after side runs
    head = describe("HEAD") + (" + uncommitted changes" if dirty else "")
    # Ctrl-C and SIGTERM end the sitting cleanly even where SIGINT came ignored (a
    # background job); the scripts, exec'd, then get SIGINT's default: KeyboardInterrupt
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    started, load_start = time.monotonic(), _load()
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    runs: list[Run] = []
    interrupted = False
    with contextlib.ExitStack() as stack:
        raw = stack.enter_context(args.out.open("w")) if args.out else None
        try:
            tree = stack.enter_context(base_tree(base_sha))
            for src in (tree / "src", ROOT / "src"):  # no side pays for compiling on its first run
                subprocess.run(
                    [sys.executable, "-m", "compileall", "-q", str(src)], timeout=300, check=False
                )
            sitting(workloads, args.rounds, args.quick, {"before": tree, "after": ROOT}, raw, runs)
        except KeyboardInterrupt:
            interrupted = True
    seconds = time.monotonic() - started
    header = Sitting(
        describe(base_sha),
        head,
        date,
        load_start,
        _load(),
        os.cpu_count() or 0,
        args.rounds,
        args.quick,
        seconds,
    )
    print()
    print(render(header, workloads, runs))
    if interrupted:
        print("\n(interrupted: the rounds above are all there is)")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
