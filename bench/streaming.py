"""freight benchmark B14: time to first chunk of a streaming model (bench/README.md).

    .venv/bin/python bench/streaming.py [--shapes embedded,cluster] [--rounds 2] [--n 100]

Serves ``bench/streaming_project/``: ``teller``, a generator yielding the words of a
text it computes. Per shape and round, after ``--warmup`` discarded calls, ``--n``
sequential calls of each form, each timed by this client from the request's first
byte sent to its first chunk read (one HTTP/1.1 connection kept alive):

- ``direct``: the reference, no freight: the model loaded in this process, its
  ``predict`` called and the generator's first value taken (what a runner does);
- ``sse``: ``POST /v1/models/teller/predict`` with ``Accept: text/event-stream``,
  to the first ``chunk`` event;
- ``bytes``: the same with ``Accept: text/plain``, to the first byte of the body;
- ``sdk``: ``freight.Client.stream``, to its first value;
- ``queued``: ``POST /v1/predictions`` (202), then ``GET …/events?chunks=true``, to
  its first ``chunk`` event;
- ``whole``: for scale, the same real-time call without streaming, to the whole
  output: freight's real-time round trip in the same sitting.

Each call reads its stream to the end (the model yields 16 words) before the next.
One JSON line per shape, round and form (p50/p99, and ``added_p50_ms``: p50 minus the
direct call's), then one median line per shape and form. Shapes: ``embedded``
(``freight serve``: SQLite + a local directory) and ``cluster`` (``freight api`` +
``freight worker`` on a fresh PostgreSQL database at 127.0.0.1:5432 and a bucket on
a moto S3 server, as bench/cluster.py). Bounded: every request and round has a
deadline; every process started is stopped. The target (issue 17): ≤ 20 ms p50 added.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench
import cluster

import freight

ROOT = bench.ROOT
PROJECT = ROOT / "bench" / "streaming_project"
SHAPES = ("embedded", "cluster")
FORMS = ("direct", "sse", "bytes", "sdk", "queued", "whole")
INPUT = {"n": 16}
REQUEST_TIMEOUT_S = 15.0
ROUND_DEADLINE_S = 240.0


@contextmanager
def serving(shape: str, workdir: Path) -> Iterator[str]:
    """The shape's processes on ``bench/streaming_project``; yields the API's URL."""
    cli = [sys.executable, "-m", "freight.cli"]
    env = {**os.environ, "FREIGHT_LOG_LEVEL": "warning", "FREIGHT_STATE_DIR": str(workdir)}
    procs: list[cluster.Proc] = []
    moto, dbname = None, None
    try:
        port = bench.free_port()
        url = f"http://127.0.0.1:{port}"
        if shape == "embedded":
            argv = [*cli, "serve", str(PROJECT), "--port", str(port)]
            procs.append(cluster.Proc("serve", argv, env, workdir))
            procs[0].wait_ready(f"{url}/readyz")
            yield url
            return
        moto, endpoint = cluster.start_moto(workdir)
        dbname = f"freight_bench_stream_{uuid.uuid4().hex[:8]}"
        with cluster._admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        database_url = f"{cluster.PG}/{dbname}"
        cluster.migrate(database_url)
        env |= {
            "FREIGHT_DATABASE_URL": database_url,
            "FREIGHT_STORAGE_URL": cluster.s3_url(endpoint),
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


def _first_event(lines: Iterator[str], kind: str = "chunk") -> float:
    """Read the SSE lines to their end; when the first ``kind`` event's data came."""
    first, event = None, ""
    for line in lines:
        if line.startswith("event:"):
            event = line.partition(":")[2].strip()
        elif line.startswith("data:") and event == kind and first is None:
            first = time.perf_counter()
        elif line.startswith("data:") and event in ("failed", "canceled", "expired"):
            raise SystemExit(f"B14: the prediction {event}: {line[:300]}")
    if first is None:
        raise SystemExit("B14: a stream without a chunk")
    return first


def direct() -> Callable[[], float]:
    sys.path.insert(0, str(PROJECT))
    from models import Teller  # the same class the server's runner loads

    model = Teller()
    model.load()

    def call() -> float:
        t0 = time.perf_counter()
        words = model.predict(dict(INPUT))
        next(words)
        first = time.perf_counter() - t0
        for _ in words:
            pass
        return first

    return call


def forms(client: httpx.Client, sdk: freight.Client) -> dict[str, Callable[[], float]]:
    path = "/v1/models/teller/predict"

    def sse() -> float:
        t0 = time.perf_counter()
        headers = {"Accept": "text/event-stream"}
        with client.stream("POST", path, json=INPUT, headers=headers) as answer:
            answer.raise_for_status()
            return _first_event(answer.iter_lines()) - t0

    def raw() -> float:
        t0 = time.perf_counter()
        first = None
        with client.stream("POST", path, json=INPUT, headers={"Accept": "text/plain"}) as answer:
            answer.raise_for_status()
            for piece in answer.iter_raw():
                if first is None and piece:
                    first = time.perf_counter()
        assert first is not None
        return first - t0

    def stream() -> float:
        t0 = time.perf_counter()
        words = sdk.stream("teller", INPUT)
        next(words)
        first = time.perf_counter() - t0
        for _ in words:
            pass
        return first

    def whole() -> float:
        t0 = time.perf_counter()
        answer = client.post(path, json=INPUT)  # no stream: the output once it is all there
        answer.raise_for_status()
        return time.perf_counter() - t0

    def queued() -> float:
        t0 = time.perf_counter()
        created = client.post("/v1/predictions", json={"target": "teller", "input": INPUT})
        created.raise_for_status()
        events = f"/v1/predictions/{created.json()['id']}/events"
        with client.stream("GET", events, params={"chunks": "true"}) as answer:
            answer.raise_for_status()
            return _first_event(answer.iter_lines()) - t0

    return {"sse": sse, "bytes": raw, "sdk": stream, "queued": queued, "whole": whole}


def measure(url: str, shape: str, n: int, warmup: int, round_: int) -> list[dict[str, Any]]:
    out = []
    with (
        httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT_S) as client,
        freight.Client(url, timeout_s=REQUEST_TIMEOUT_S) as sdk,
    ):
        calls = {"direct": direct(), **forms(client, sdk)}
        deadline = time.monotonic() + ROUND_DEADLINE_S
        times: dict[str, list[float]] = {form: [] for form in calls}
        for call in calls.values():
            for _ in range(warmup):
                call()
        for i in range(n):  # the forms interleaved: a busy spell hits them alike
            if time.monotonic() > deadline:
                raise SystemExit(f"B14 {shape}: {i} of {n} calls in {ROUND_DEADLINE_S} s")
            for form, call in calls.items():
                times[form].append(call() * 1000)
    base = bench.pct(times["direct"], 50)
    for form, values in times.items():
        p50 = bench.pct(values, 50)
        out.append(
            bench.emit(
                "B14",
                shape=shape,
                round=round_,
                form=form,
                n=n,
                first_chunk_p50_ms=p50,
                first_chunk_p99_ms=bench.pct(values, 99),
                added_p50_ms=p50 - base,
                load1=os.getloadavg()[0],
            )
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--n", type=int, default=100, help="timed calls per form and round")
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    shapes = [s for s in args.shapes.split(",") if s]
    unknown = set(shapes) - set(SHAPES)
    if unknown:
        parser.error(f"unknown shapes {sorted(unknown)} (choose from {', '.join(SHAPES)})")
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    (ROOT / ".freight").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-b14-", dir=ROOT / ".freight") as tmp:
        for round_ in range(1, args.rounds + 1):
            for shape in shapes if round_ % 2 else shapes[::-1]:
                workdir = Path(tmp) / f"{shape}{round_}"
                workdir.mkdir()
                with serving(shape, workdir) as url:
                    for line in measure(url, shape, args.n, args.warmup, round_):
                        results.setdefault((shape, line["form"]), []).append(line)
    for (shape, form), lines in results.items():
        bench.emit(
            "B14-median",
            shape=shape,
            form=form,
            rounds=len(lines),
            first_chunk_p50_ms=statistics.median(x["first_chunk_p50_ms"] for x in lines),
            first_chunk_p99_ms=statistics.median(x["first_chunk_p99_ms"] for x in lines),
            added_p50_ms=statistics.median(x["added_p50_ms"] for x in lines),
        )


if __name__ == "__main__":
    main()
