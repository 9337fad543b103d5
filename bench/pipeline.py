"""freight benchmark B4: a pipeline of three 20 ms models (workload in bench/README.md).

    .venv/bin/python bench/pipeline.py [--rounds 3] [--n 200] [--routes realtime,async]
    .venv/bin/python bench/pipeline.py --for-each 100,1000,10000   # see bench/for_each.py

Serves ``bench/pipeline_project/`` (embedded shape: SQLite + local directory, state
under ``.freight/`` like ``make run``) on a free port: ``stage-b`` and ``stage-c``
(20 ms each) in parallel on the input, ``stage-d`` (20 ms) on both outputs, so the
critical path is 40 ms. Each round starts a fresh server and makes ``--n``
sequential invocations (after 10 discarded warm-up ones) of each route:

- ``realtime``: ``POST /v1/pipelines/b4/predict``, the output inline;
- ``async``: ``POST /v1/predictions`` with ``"target": "b4"``, then
  ``GET /v1/predictions/{id}?wait=10`` until the run has finished.

The client is one keep-alive ``httpx.Client`` in this process; the input is the
peers' ~1 KB JSON ``{"id": i, "blob": "a" * 1000}``. One JSON line per route and
round: client-observed p50/p99/max and their overhead over the 40 ms critical
path, the server's own view of the same runs (``server_*``: the run row's
``total_ms``, created to finished, fetched after the timed loop so it costs the
loop nothing) and the CPU per invocation of the server (with its runners; the
runners' share alone) and of the client. Then one median line per route.
Bounded: every request and every round has a deadline.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from bench import BLOB, emit, free_port, pct, self_cpu_s, tree_cpu_s

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ROOT / "bench" / "pipeline_project"
PIPELINE = "b4"
CRITICAL_PATH_MS = 40.0
WARMUP = 10
REQUEST_TIMEOUT_S = 10.0
ROUND_DEADLINE_S = 180.0
ROUTES = ("realtime", "async")
TERMINAL = {"succeeded", "failed", "canceled", "expired"}


class Server:
    """``freight serve bench/pipeline_project`` in its own session, stopped by PID."""

    def __init__(self, state: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = state / "server.log"
        env = {
            **os.environ,
            "FREIGHT_STATE_DIR": str(state),
            "FREIGHT_LOG_LEVEL": "warning",
        }
        command = [sys.executable, "-m", "freight.cli", "serve", str(PROJECT)]
        self.proc = subprocess.Popen(
            [*command, "--port", str(self.port)],
            env=env,
            cwd=state,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("wb"),
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise SystemExit("server not ready within 120 s")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def payload(i: int) -> dict[str, Any]:
    """The peers' input: ~1 KB of JSON."""
    return {"id": i, "blob": BLOB}


def _check(output: Any, i: int) -> None:
    if output != {"d": [{"b": i}, {"c": i}]}:
        raise SystemExit(f"B4 run {i} gave {output!r}")


def realtime(client: httpx.Client, i: int) -> tuple[float, str]:
    """One real-time run: seconds, and the run's id (from its response header)."""
    t0 = time.perf_counter()
    response = client.post(f"/v1/pipelines/{PIPELINE}/predict", json=payload(i))
    elapsed = time.perf_counter() - t0
    response.raise_for_status()
    if response.status_code != 200:
        raise SystemExit(f"B4 real-time run {i} not done in time: {response.text[:300]}")
    _check(response.json(), i)
    return elapsed, response.headers["X-Freight-Prediction-Id"]


def queued(client: httpx.Client, i: int) -> tuple[float, str]:
    """One queued run, followed with ``?wait=``: seconds, and the run's id."""
    t0 = time.perf_counter()
    created = client.post("/v1/predictions", json={"target": PIPELINE, "input": payload(i)})
    created.raise_for_status()
    run = created.json()
    deadline = t0 + REQUEST_TIMEOUT_S
    while run["status"] not in TERMINAL:
        if time.perf_counter() > deadline:
            raise SystemExit(f"B4 queued run {i} not done in {REQUEST_TIMEOUT_S} s")
        response = client.get(f"/v1/predictions/{run['id']}", params={"wait": REQUEST_TIMEOUT_S})
        response.raise_for_status()
        run = response.json()
    elapsed = time.perf_counter() - t0
    if run["status"] != "succeeded":
        raise SystemExit(f"B4 queued run {i} {run['status']}: {run.get('error')}")
    _check(run["output"], i)
    return elapsed, str(run["id"])


CALLS = {"realtime": realtime, "async": queued}


def server_view(client: httpx.Client, ids: list[str]) -> dict[str, float]:
    """The runs as the server timed them (created to finished), and the part of it
    spent outside the three stages' run time on the critical path."""
    totals, stage_gaps = [], []
    for run_id in ids:
        run = client.get(f"/v1/predictions/{run_id}").raise_for_status().json()
        total = run["metrics"]["total_ms"]
        steps = run.get("steps") or {}
        run_ms = {name: (s.get("metrics") or {}).get("run_ms") or 0.0 for name, s in steps.items()}
        critical = max(run_ms.get("b", 0.0), run_ms.get("c", 0.0)) + run_ms.get("d", 0.0)
        totals.append(total)
        stage_gaps.append(total - critical)
    return {
        "server_p50_ms": pct(totals, 50),
        "server_p99_ms": pct(totals, 99),
        "server_overhead_p50_ms": pct(totals, 50) - CRITICAL_PATH_MS,
        "outside_stage_runs_p50_ms": pct(stage_gaps, 50),
    }


def measure(server: Server, route: str, n: int, round_: int) -> dict[str, Any]:
    call = CALLS[route]
    with httpx.Client(base_url=server.url, timeout=REQUEST_TIMEOUT_S + 5) as client:
        for i in range(WARMUP):
            call(client, 10**6 + i)
        deadline = time.monotonic() + ROUND_DEADLINE_S
        server0, client0 = tree_cpu_s(server.proc.pid), self_cpu_s()
        runners0 = tree_cpu_s(server.proc.pid, children_only=True)
        latencies, ids = [], []
        for i in range(n):
            if time.monotonic() > deadline:
                raise SystemExit(f"B4 {route}: {i} of {n} runs in {ROUND_DEADLINE_S} s")
            elapsed, run_id = call(client, i)
            latencies.append(elapsed * 1000)
            ids.append(run_id)
        server_cpu = tree_cpu_s(server.proc.pid) - server0
        runners_cpu = tree_cpu_s(server.proc.pid, children_only=True) - runners0
        client_cpu = self_cpu_s() - client0
        view = server_view(client, ids)
    p50, p99 = pct(latencies, 50), pct(latencies, 99)
    return emit(
        "B4",
        route=route,
        round=round_,
        n=n,
        p50_ms=p50,
        p99_ms=p99,
        max_ms=max(latencies),
        overhead_p50_ms=p50 - CRITICAL_PATH_MS,
        overhead_p99_ms=p99 - CRITICAL_PATH_MS,
        **view,
        server_cpu_ms_per_run=server_cpu * 1000 / n,
        runners_cpu_ms_per_run=runners_cpu * 1000 / n,
        client_cpu_ms_per_run=client_cpu * 1000 / n,
        load1=os.getloadavg()[0],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, default=200, help="timed invocations per route")
    parser.add_argument("--routes", default=",".join(ROUTES))
    parser.add_argument("--for-each", help="element counts: the advancement cost instead")
    parser.add_argument("--database-url", help="for --for-each: this database, not SQLite")
    parser.add_argument("--deadline-s", type=float, default=120.0, help="per --for-each size")
    args = parser.parse_args()
    if args.for_each:
        from for_each import for_each

        sizes = [int(n) for n in args.for_each.split(",")]
        for_each(sizes, args.database_url, args.deadline_s)
        return
    routes = [r for r in args.routes.split(",") if r]
    unknown = set(routes) - set(ROUTES)
    if unknown:
        parser.error(f"unknown routes {sorted(unknown)} (choose from {', '.join(ROUTES)})")
    results: dict[str, list[dict[str, Any]]] = {route: [] for route in routes}
    # state under the repo, like `make run`: on this machine /tmp creates files ~10x slower
    (ROOT / ".freight").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-b4-", dir=ROOT / ".freight") as tmp:
        for round_ in range(1, args.rounds + 1):
            state = Path(tmp) / f"round{round_}"
            state.mkdir()
            server = Server(state)
            try:
                # alternate the order, so neither route always runs on a fresher server
                ordered = routes if round_ % 2 else routes[::-1]
                for route in ordered:
                    results[route].append(measure(server, route, args.n, round_))
            finally:
                server.stop()
    for route, rows in results.items():
        if rows:
            emit(
                "B4-median",
                route=route,
                rounds=len(rows),
                **{
                    key: statistics.median(row[key] for row in rows)
                    for key in rows[0]
                    if isinstance(rows[0][key], int | float) and key not in ("round", "n")
                },
            )


if __name__ == "__main__":
    main()
