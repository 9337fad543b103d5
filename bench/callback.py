"""freight benchmark B13: a callback step's round trip (workload in bench/README.md).

    .venv/bin/python bench/callback.py [--shapes embedded,cluster] [--rounds 2] [--n 50]

Serves ``bench/callback_project/``: ``first`` (a model that answers at once) ->
``ask`` (``kind: callback``) -> ``next`` (the same model). Per run, sequentially: the
run is created, its event stream followed until ``step.waiting`` (whose data carries
the success URL), that URL answered at once, and the run waited for. Per shape and
round, after ``--warmup`` discarded runs, ``--n`` timed runs; from the server's own
stamps of each run (one clock: same machine):

- ``round_trip``: ``ask`` reached (its ``started_at``) -> ``next`` started (its
  ``started_at``, claimed by a worker): the step announced on the stream, seen by
  this client, answered, the run advanced, the next step claimed;
- ``answer_to_next``: the answer taken (``ask``'s ``finished_at``) -> ``next``
  started: freight's part after the answer;
- ``reached_to_seen``: ``ask`` reached -> ``step.waiting`` read by this client;
- ``answer_call``: the answer's POST, as this client timed it.

One JSON line per shape and round (p50/p99 of each), then one median line per
shape. Shapes: ``embedded`` (``freight serve``: SQLite + a local directory) and
``cluster`` (``freight api`` + ``freight worker`` on a fresh PostgreSQL database at
127.0.0.1:5432 and a bucket on a moto S3 server, as bench/cluster.py). Bounded:
every request, stream and round has a deadline; every process started is stopped.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench
import cluster

ROOT = bench.ROOT
PROJECT = ROOT / "bench" / "callback_project"
PIPELINE = "cb"
SHAPES = ("embedded", "cluster")
REQUEST_TIMEOUT_S = 15.0
ROUND_DEADLINE_S = 240.0
SECRET_KEY = "c" * 32


@contextmanager
def serving(shape: str, workdir: Path) -> Iterator[str]:
    """The shape's processes on ``bench/callback_project``; yields the API's URL."""
    cli = [sys.executable, "-m", "freight.cli"]
    env = {
        **os.environ,
        "FREIGHT_SECRET_KEY": SECRET_KEY,
        "FREIGHT_LOG_LEVEL": "warning",
        "FREIGHT_STATE_DIR": str(workdir / "state"),
    }
    procs: list[cluster.Proc] = []
    moto = None
    dbname = None
    try:
        port = bench.free_port()
        url = f"http://127.0.0.1:{port}"
        if shape == "embedded":
            procs.append(
                cluster.Proc(
                    "serve", [*cli, "serve", str(PROJECT), "--port", str(port)], env, workdir
                )
            )
            procs[0].wait_ready(f"{url}/readyz")
            yield url
            return
        moto, endpoint = cluster.start_moto(workdir)
        dbname = f"freight_bench_cb_{uuid.uuid4().hex[:8]}"
        with cluster._admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        database_url = f"{cluster.PG}/{dbname}"
        cluster.migrate(database_url)
        env |= {
            "FREIGHT_DATABASE_URL": database_url,
            "FREIGHT_STORAGE_URL": cluster.s3_url(endpoint),
            "FREIGHT_PUBLIC_URL": url,
        }
        procs.append(
            cluster.Proc("api", [*cli, "api", str(PROJECT), "--port", str(port)], env, workdir)
        )
        procs[0].wait_ready(f"{url}/readyz")
        probe = bench.free_port()
        argv = [*cli, "worker", str(PROJECT), "--port", str(probe)]
        procs.append(cluster.Proc("worker", argv, env, workdir))
        procs[1].wait_ready(f"http://127.0.0.1:{probe}/readyz")
        yield url
    finally:
        for proc in reversed(procs):
            proc.stop()
        if moto is not None:
            moto.stop()
        if dbname is not None:
            with cluster._admin() as conn:
                drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                conn.execute(drop.format(sql.Identifier(dbname)))


def _at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def _waiting(client: httpx.Client, run_id: str, deadline: float) -> tuple[dict[str, Any], float]:
    """Follow the run's event stream to its ``step.waiting``: the step's object, and
    when this client read it."""
    with client.stream("GET", f"/v1/predictions/{run_id}/events") as stream:
        event = ""
        for line in stream.iter_lines():
            if time.monotonic() > deadline:
                break
            if line.startswith("event:"):
                event = line.partition(":")[2].strip()
            elif line.startswith("data:") and event == "step.waiting":
                return orjson.loads(line.partition(":")[2]), time.time()
            elif line.startswith("data:") and event in ("failed", "canceled", "expired"):
                raise SystemExit(f"B13 run {run_id} {event}: {line[:300]}")
    raise SystemExit(f"B13 run {run_id}: no step.waiting within {REQUEST_TIMEOUT_S} s")


def one(client: httpx.Client, i: int) -> dict[str, float]:
    """One run: created, its wait answered at once, followed to its end."""
    deadline = time.monotonic() + REQUEST_TIMEOUT_S
    created = client.post("/v1/predictions", json={"target": PIPELINE, "input": {"i": i}})
    created.raise_for_status()
    run_id = created.json()["id"]
    step, seen = _waiting(client, run_id, deadline)
    t0 = time.perf_counter()
    answered = client.post(step["callback"]["urls"]["success"], json={"i": i, "ok": True})
    answer_call = time.perf_counter() - t0
    answered.raise_for_status()
    run = client.get(f"/v1/predictions/{run_id}", params={"wait": REQUEST_TIMEOUT_S}).json()
    while run["status"] not in ("succeeded", "failed", "canceled", "expired"):
        if time.monotonic() > deadline:
            raise SystemExit(f"B13 run {run_id} not done in {REQUEST_TIMEOUT_S} s")
        run = client.get(f"/v1/predictions/{run_id}", params={"wait": REQUEST_TIMEOUT_S}).json()
    if run["status"] != "succeeded" or run["output"] != {"i": i, "ok": True}:
        raise SystemExit(f"B13 run {run_id}: {run['status']} {run.get('output')!r}")
    ask, after = run["steps"]["ask"], run["steps"]["next"]
    reached = _at(ask["started_at"])
    return {
        "round_trip": (_at(after["started_at"]) - reached) * 1000,
        "answer_to_next": (_at(after["started_at"]) - _at(ask["finished_at"])) * 1000,
        "reached_to_seen": (seen - reached) * 1000,
        "answer_call": answer_call * 1000,
    }


def measure(url: str, shape: str, n: int, warmup: int, round_: int) -> dict[str, Any]:
    with httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT_S + 5) as client:
        for i in range(warmup):
            one(client, 10**6 + i)
        deadline = time.monotonic() + ROUND_DEADLINE_S
        runs = []
        for i in range(n):
            if time.monotonic() > deadline:
                raise SystemExit(f"B13 {shape}: {i} of {n} runs in {ROUND_DEADLINE_S} s")
            runs.append(one(client, i))
    fields: dict[str, Any] = {}
    for key in runs[0]:
        values = [r[key] for r in runs]
        fields[f"{key}_p50_ms"] = bench.pct(values, 50)
        fields[f"{key}_p99_ms"] = bench.pct(values, 99)
    return bench.emit("B13", shape=shape, round=round_, n=n, **fields, load1=os.getloadavg()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--n", type=int, default=50, help="timed runs per shape and round")
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    shapes = [s for s in args.shapes.split(",") if s]
    unknown = set(shapes) - set(SHAPES)
    if unknown:
        parser.error(f"unknown shapes {sorted(unknown)} (choose from {', '.join(SHAPES)})")
    results: dict[str, list[dict[str, Any]]] = {shape: [] for shape in shapes}
    (ROOT / ".freight").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-b13-", dir=ROOT / ".freight") as tmp:
        for round_ in range(1, args.rounds + 1):
            for shape in shapes if round_ % 2 else shapes[::-1]:
                workdir = Path(tmp) / f"{shape}{round_}"
                workdir.mkdir()
                with serving(shape, workdir) as url:
                    results[shape].append(measure(url, shape, args.n, args.warmup, round_))
    for shape, rows in results.items():
        if rows:
            bench.emit(
                "B13-median",
                shape=shape,
                rounds=len(rows),
                **{
                    key: statistics.median(row[key] for row in rows)
                    for key in rows[0]
                    if isinstance(rows[0][key], int | float) and key not in ("round", "n")
                },
            )


if __name__ == "__main__":
    main()
