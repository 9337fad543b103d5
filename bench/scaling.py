"""freight benchmarks B6 (burst elasticity) and B7 (scale from zero) (bench/README.md).

    .venv/bin/python bench/scaling.py [--only B6,B7,B7-sklearn] [--rate 6] [--phase-s 20]
        [--rounds 5]

Serves ``bench/scaling_project/`` (embedded shape: SQLite + local directory, state
under ``.freight/``) on a free port.

- **B6**: the ``elastic`` model (sleeps ``--ms`` per prediction; ``Replicas(min=1,
  max=4, target_backlog=2)``) gets real-time requests at a steady ``--rate`` per
  second for ``--phase-s`` seconds, then at three times that rate for as long.
  Arrivals are open-loop (on a fixed schedule, not after the previous answer).
  Per phase: p50/p99 latency, requests dropped (not answered 200 within
  ``REQUEST_TIMEOUT_S``), and the replicas seen (``GET /v1/models/elastic``).
- **B7**: the ``cold`` model (``min=0``, back to zero 1 s after its last request,
  ``load()`` sleeps ``COLD_LOAD_MS``) at zero replicas gets one prediction; the
  figure is create -> finished (the server's stamps) minus the load() duration the
  runner reported: what scaling from zero costs beyond the model's own load.
  Also split: *spawn* (spawn -> ready minus load(): the runner process starting)
  and *rest* (wake-up, claim, run, completion). Target <= 300 ms.
- **B7-sklearn**: B7 for ``cold-sklearn`` (``scaling_project/sk.py``: its module imports
  scikit-learn, load() fits a small classifier), on one server per runner start
  (``FREIGHT_RUNNER_START=exec``, then ``fork``): a first round (a fork's includes
  starting the template), then ``--rounds`` more; their medians and the ratio
  exec / fork. Target: fork >= 5x faster.

Prints one JSON line per phase / round, then a summary line per workload.
Bounded: every wait has a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench

ROOT = bench.ROOT
PROJECT = ROOT / "bench" / "scaling_project"
REQUEST_TIMEOUT_S = 30.0
COLD_LOAD_MS = 200.0
ZERO_DEADLINE_S = 30.0
B7_TARGET_MS = 300.0
B7_SKLEARN_TARGET_RATIO = 5.0
#: the models of B6/B7's server (sk.py is B7-sklearn's: its server serves it alone)
SCALING_MODELS = '["models:Elastic", "models:Cold"]'
SKLEARN_MODELS = '["sk:ColdSklearn"]'


class Server:
    """``freight serve bench/scaling_project`` in its own session (like bench.ServerProcess)."""

    def __init__(self, state: Path, **extra_env: str) -> None:
        self.port = bench.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = state / "server.log"
        env = {
            **os.environ,
            "FREIGHT_STATE_DIR": str(state),
            "FREIGHT_LOG_LEVEL": "info",  # the scale decisions are logged at INFO
            "BENCH_COLD_LOAD_MS": str(COLD_LOAD_MS),
            "FREIGHT_MODELS": SCALING_MODELS,
            **extra_env,
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "freight.cli", "serve", str(PROJECT), "--port", str(self.port)],
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


# -- B6 -------------------------------------------------------------------------------


async def _one(client: httpx.AsyncClient, ms: float) -> float | None:
    """One real-time prediction: seconds, or None when it was not answered 200."""
    t0 = time.perf_counter()
    try:
        response = await client.post(
            "/v1/models/elastic/predict",
            json={"ms": ms},
            params={"timeout": REQUEST_TIMEOUT_S},
        )
    except httpx.HTTPError:
        return None
    return time.perf_counter() - t0 if response.status_code == 200 else None


async def _watch(client: httpx.AsyncClient, seen: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            body = (await client.get("/v1/models/elastic")).json()
            seen.append(int(body["replicas"]["total"]))
        except (httpx.HTTPError, KeyError, ValueError):
            pass
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.25)


async def _phase(
    client: httpx.AsyncClient, rate: float, duration_s: float, ms: float
) -> dict[str, Any]:
    seen: list[int] = []
    stop = asyncio.Event()
    watcher = asyncio.create_task(_watch(client, seen, stop))
    start = time.perf_counter()
    n = int(rate * duration_s)
    tasks = []
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_one(client, ms)))
    results = await asyncio.gather(*tasks)
    stop.set()
    await watcher
    latencies = [r * 1000 for r in results if r is not None]
    return {
        "requests": n,
        "dropped": sum(1 for r in results if r is None),
        "p50_ms": bench.pct(latencies, 50),
        "p99_ms": bench.pct(latencies, 99),
        "replicas_max": max(seen, default=0),
        "replicas_last": seen[-1] if seen else 0,
        "s": time.perf_counter() - start,
    }


async def b6(url: str, rate: float, phase_s: float, ms: float) -> list[dict[str, Any]]:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=256)
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_S + 5, limits=limits) as c:
        for _ in range(5):  # warm the connection pool and the replica
            await _one(c, ms)
        steady = await _phase(c, rate, phase_s, ms)
        bench.emit("B6-steady", rate=rate, ms=ms, **steady)
        burst = await _phase(c, 3 * rate, phase_s, ms)
        bench.emit("B6-burst", rate=3 * rate, ms=ms, **burst)
    return [steady, burst]


# -- B7 -------------------------------------------------------------------------------


def _cold(client: httpx.Client, model: str = "cold") -> dict[str, Any]:
    body: dict[str, Any] = client.get(f"/v1/models/{model}").json()
    return body


def _at_zero(client: httpx.Client, model: str) -> None:
    deadline = time.monotonic() + ZERO_DEADLINE_S
    while time.monotonic() < deadline:
        if _cold(client, model)["replicas"]["total"] == 0:
            return
        time.sleep(0.1)
    raise SystemExit(f"{model} did not scale to zero within {ZERO_DEADLINE_S} s")


def b7_round(
    client: httpx.Client, round_: int, model: str = "cold", workload: str = "B7"
) -> dict[str, Any]:
    _at_zero(client, model)
    starts_before = len(_cold(client, model)["scaling"]["cold_starts"])
    t0 = time.perf_counter()
    response = client.post(
        "/v1/predictions", json={"target": model, "input": {}}, headers={"Prefer": "wait=30"}
    )
    client_s = time.perf_counter() - t0
    row = response.json()
    if response.status_code not in (200, 201, 202) or row.get("status") != "succeeded":
        raise SystemExit(
            f"{workload}: the prediction did not succeed: {response.status_code} {row}"
        )
    starts = _cold(client, model)["scaling"]["cold_starts"]
    if len(starts) <= starts_before and len(starts) < 5:
        raise SystemExit(f"{workload}: no cold start was recorded for the prediction")
    cold = starts[-1]
    load_ms = (cold["load_s"] or 0.0) * 1000
    total_ms = (bench._ts(row["finished_at"]) - bench._ts(row["created_at"])) * 1000
    spawn_ms = cold["seconds"] * 1000 - load_ms
    return bench.emit(
        workload,
        round=round_,
        create_to_finished_ms=total_ms,
        load_ms=load_ms,
        overhead_ms=total_ms - load_ms,
        spawn_ms=spawn_ms,
        rest_ms=total_ms - cold["seconds"] * 1000,
        client_ms=client_s * 1000,
    )


def b7_sklearn(rounds: int) -> None:
    """B7 of ``cold-sklearn``, on a server per runner start: exec, then fork."""
    medians: dict[str, float] = {}
    for start in ("exec", "fork"):
        with tempfile.TemporaryDirectory(prefix="bench-scaling-", dir=ROOT / ".freight") as tmp:
            server = Server(Path(tmp), FREIGHT_MODELS=SKLEARN_MODELS, FREIGHT_RUNNER_START=start)
            try:
                with httpx.Client(base_url=server.url, timeout=60) as client:
                    name = f"B7-sklearn-{start}"
                    first = b7_round(client, 0, "cold-sklearn", f"{name}-first")
                    later = [
                        b7_round(client, r, "cold-sklearn", name) for r in range(1, rounds + 1)
                    ]
            finally:
                server.stop()
        medians[start] = statistics.median(r["overhead_ms"] for r in later)
        bench.emit(
            f"B7-sklearn-{start}-summary",
            rounds=len(later),
            first_overhead_ms=first["overhead_ms"],
            overhead_p50_ms=medians[start],
            overhead_max_ms=max(r["overhead_ms"] for r in later),
            spawn_p50_ms=statistics.median(r["spawn_ms"] for r in later),
            load_p50_ms=statistics.median(r["load_ms"] for r in later),
        )
    ratio = medians["exec"] / medians["fork"]
    bench.emit(
        "B7-sklearn-summary",
        exec_p50_ms=medians["exec"],
        fork_p50_ms=medians["fork"],
        ratio=ratio,
        target_ratio=B7_SKLEARN_TARGET_RATIO,
        met=ratio >= B7_SKLEARN_TARGET_RATIO,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="B6,B7,B7-sklearn")
    parser.add_argument("--rate", type=float, default=6.0, help="B6 steady requests per second")
    parser.add_argument("--phase-s", type=float, default=20.0)
    parser.add_argument("--ms", type=float, default=100.0, help="B6 model time per request")
    parser.add_argument("--rounds", type=int, default=5, help="B7 rounds")
    args = parser.parse_args()
    only = {w.strip().upper() for w in args.only.split(",")}
    (ROOT / ".freight").mkdir(exist_ok=True)
    if "B7-SKLEARN" in only:
        b7_sklearn(args.rounds)
    if not only & {"B6", "B7"}:
        return
    with tempfile.TemporaryDirectory(prefix="bench-scaling-", dir=ROOT / ".freight") as tmp:
        server = Server(Path(tmp))
        try:
            if "B7" in only:
                with httpx.Client(base_url=server.url, timeout=60) as client:
                    rounds = [b7_round(client, r) for r in range(args.rounds)]
                overhead = statistics.median(r["overhead_ms"] for r in rounds)
                bench.emit(
                    "B7-summary",
                    rounds=len(rounds),
                    overhead_p50_ms=overhead,
                    overhead_max_ms=max(r["overhead_ms"] for r in rounds),
                    spawn_p50_ms=statistics.median(r["spawn_ms"] for r in rounds),
                    rest_p50_ms=statistics.median(r["rest_ms"] for r in rounds),
                    load_ms=COLD_LOAD_MS,
                    target_ms=B7_TARGET_MS,
                    met=overhead <= B7_TARGET_MS,
                )
            if "B6" in only:
                steady, burst = asyncio.run(b6(server.url, args.rate, args.phase_s, args.ms))
                bench.emit(
                    "B6-summary",
                    steady_p50_ms=steady["p50_ms"],
                    burst_p50_ms=burst["p50_ms"],
                    dropped=steady["dropped"] + burst["dropped"],
                    replicas_steady=steady["replicas_max"],
                    replicas_burst=burst["replicas_max"],
                )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
