"""freight benchmarks B1 (async throughput), B2 (a burst into a batched model) and B3
(real-time) (workloads in bench/README.md).

    .venv/bin/python bench/bench.py [--rounds 3] [--only B1,B1-bulk,B2,B2-flood,B3]
        [--tracing off|on|both] [--project DIR]
        [--n 2000] [--duration 10]   # B1's predictions (B1-bulk: twice), B3's seconds

Starts ``freight serve examples/`` (embedded shape: SQLite + local directory) on
a free port in a temporary state directory, runs each workload ``--rounds``
times, prints one JSON line per workload and round, then one summary line per
workload with the medians. Bounded: every wait has a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

import freight

ROOT = Path(__file__).resolve().parent.parent
BLOB = "a" * 1000
B1_N, B1_WARMUP, B1_CONCURRENCY = 2000, 50, 32
B2_N, B2_MS = 500, 20
B3_CONNECTIONS, B3_DURATION_S, B3_WARMUP_S = 32, 10, 3


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (the peers' definition)."""
    s = sorted(values)
    return s[max(1, math.ceil(q / 100 * len(s))) - 1] if s else float("nan")


def medians(rows: list[dict[str, Any]], *skip: str) -> dict[str, float]:
    """The median of each numeric field of ``rows`` (one per round), ``round`` and
    ``skip`` left out: a workload's summary line."""
    left_out = {"round", *skip}
    return {
        k: statistics.median(r[k] for r in rows)
        for k in rows[0]
        if isinstance(rows[0][k], int | float) and k not in left_out
    }


def emit(workload: str, **fields: Any) -> dict[str, Any]:
    record = {
        "system": "freight",
        "workload": workload,
        **{k: round(v, 2) if isinstance(v, float) else v for k, v in fields.items()},
    }
    print(json.dumps(record), flush=True)
    return record


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Discard:
    """An OTLP/HTTP receiver on loopback that reads each export and throws it away
    (``--tracing``: the server's exporter has somewhere to send to)."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", "0")))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def env(self) -> dict[str, str]:
        return {"OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint, "OTEL_SERVICE_NAME": "bench"}


class ServerProcess:
    def __init__(
        self, state: Path, extra_env: dict[str, str] | None = None, project: Path | None = None
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "FREIGHT_STATE_DIR": str(state),
            "FREIGHT_LOG_LEVEL": "warning",
            "FREIGHT_CACHE_DIR": str(ROOT / ".freight" / "cache"),
            **(extra_env or {}),
        }
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "freight.cli",
                "serve",
                str(project or ROOT / "examples"),
                "--port",
                str(self.port),
            ],
            env=env,
            cwd=state,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=(state / "server.log").open("wb"),
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited: {(state / 'server.log').read_text()[-2000:]}")
            time.sleep(0.2)
        raise SystemExit("server not ready within 120 s")

    def make_key(self) -> str:
        """A key with every scope (from then on the server requires one)."""
        made = httpx.post(
            f"{self.url}/v1/keys",
            json={"tenant": "bench", "scopes": ["predict", "read", "admin"]},
            timeout=30,
        )
        made.raise_for_status()
        token: str = made.json()["token"]
        return token

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)


_TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu_s(root: int, *, children_only: bool = False) -> float:
    """CPU seconds of ``root`` and its live descendants (the server and its runners)."""
    stats: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                raw = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = raw[raw.rindex(")") + 2 :].split()
            stats[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK)
    total = 0.0
    for pid, (_ppid, cpu) in stats.items():
        p, hops = pid, 0
        while p != root and p in stats and hops < 32:
            p, hops = stats[p][0], hops + 1
        if p == root and not (children_only and pid == root):
            total += cpu
    return total


def self_cpu_s() -> float:
    usage = os.times()
    return usage.user + usage.system


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


async def _b1_burst(
    url: str, n: int, id0: int, target: str = "echo", bulk: int = 0, in_flight: int = 0
) -> dict[str, Any]:
    """Submit ``n`` predictions with freight's AsyncClient, ``B1_CONCURRENCY`` in flight:
    B1's ``echo`` with ~1 KB, or B2's ``sleep`` costing 20 ms + 1 ms per batch item.
    With ``bulk``: ``bulk`` predictions per request (``create_many``), 4 in flight."""
    async with freight.AsyncClient(url, timeout_s=60) as client:
        submitted: dict[str, float] = {}
        todo = iter(range(n))

        def value(i: int) -> Any:
            return {"id": id0 + i, "blob": BLOB} if target == "echo" else {"ms": B2_MS}

        async def submitter() -> None:
            for i in todo:
                t = time.time()
                handle = await client.predict(target, value(i))
                submitted[handle.id] = t

        async def bulk_submitter() -> None:
            while page := [i for _, i in zip(range(bulk), todo, strict=False)]:
                t = time.time()
                items = [{"target": target, "input": value(i)} for i in page]
                for created in await client.create_many(items):
                    assert created.id is not None, created.error
                    submitted[created.id] = t

        t_first = time.time()
        if bulk:
            await asyncio.gather(*(bulk_submitter() for _ in range(4)))
        else:
            await asyncio.gather(*(submitter() for _ in range(in_flight or B1_CONCURRENCY)))
        t_submitted = time.time()
        done: dict[str, Any] = {}
        gate = asyncio.Semaphore(B1_CONCURRENCY)

        async def collect(prediction_id: str) -> None:
            async with gate:
                done[prediction_id] = await client.wait(prediction_id, timeout=120)

        # completion times are the server's finished_at stamps: collecting them after
        # the burst does not change the figures
        await asyncio.wait_for(asyncio.gather(*(collect(i) for i in submitted)), 300)
        finished = {i: p.finished_at.timestamp() for i, p in done.items() if p.finished_at}
        lat = [finished[i] - submitted[i] for i in done]
        queue_ms = [p.metrics.queue_ms for p in done.values() if p.metrics.queue_ms is not None]
        t_last = max(finished.values())
        ok = sum(1 for p in done.values() if p.status == "succeeded")
        return {
            "n": n,
            "succeeded": ok,
            "wall_s": t_last - t_first,
            "completed_per_s": ok / (t_last - t_first),
            "submit_s": t_submitted - t_first,
            "submitted_per_s": n / (t_submitted - t_first),
            "p50_ms": pct(lat, 50) * 1000,
            "p99_ms": pct(lat, 99) * 1000,
            "queue_p50_ms": pct(queue_ms, 50),
        }


def b1(url: str, round_: int, server_pid: int, n: int = B1_N) -> dict[str, Any]:
    asyncio.run(_b1_burst(url, B1_WARMUP, 10**6))
    server0, client0, wall0 = tree_cpu_s(server_pid), self_cpu_s(), time.monotonic()
    runners0 = tree_cpu_s(server_pid, children_only=True)
    result = asyncio.run(_b1_burst(url, n, 0))
    wall = time.monotonic() - wall0
    server_cpu, client_cpu = tree_cpu_s(server_pid) - server0, self_cpu_s() - client0
    runners_cpu = tree_cpu_s(server_pid, children_only=True) - runners0
    result.update(
        server_cpu_ms_per_prediction=server_cpu * 1000 / n,
        runners_cpu_ms_per_prediction=runners_cpu * 1000 / n,
        client_cpu_ms_per_prediction=client_cpu * 1000 / n,
        server_cores_busy=server_cpu / wall,
        client_cores_busy=client_cpu / wall,
    )
    return emit(
        "B1", round=round_, client=f"freight.AsyncClient, {B1_CONCURRENCY} in flight", **result
    )


def b1_bulk(url: str, round_: int, server_pid: int, n: int = B1_N) -> dict[str, Any]:
    """B1 submitted in bulk (twice B1's ``n``): 250 predictions per request, 4 requests
    in flight."""
    asyncio.run(_b1_burst(url, B1_WARMUP, 10**6, bulk=50))
    server0, wall0 = tree_cpu_s(server_pid), time.monotonic()
    result = asyncio.run(_b1_burst(url, n * 2, 0, bulk=250))
    server_cpu = tree_cpu_s(server_pid) - server0
    result.update(
        server_cpu_ms_per_prediction=server_cpu * 1000 / (n * 2),
        server_cores_busy=server_cpu / (time.monotonic() - wall0),
    )
    client = "freight.AsyncClient.create_many, 250 per request, 4 in flight"
    return emit("B1-bulk", round=round_, client=client, **result)


def b2(url: str, round_: int, server_pid: int, in_flight: int = B1_CONCURRENCY) -> dict[str, Any]:
    """B2: a burst of 500 into the batched ``sleep`` model (max_size 32, max_wait 10 ms):
    the burst's completion time, first submit to last finished_at, and the server's CPU
    per prediction (its runners apart). ``in_flight``: 32 as B1, or 500 for B2-flood (the
    whole burst at once, as 500 independent callers would send it)."""
    asyncio.run(_b1_burst(url, 64, 10**6, target="sleep", in_flight=in_flight))
    server0, runners0 = tree_cpu_s(server_pid), tree_cpu_s(server_pid, children_only=True)
    result = asyncio.run(_b1_burst(url, B2_N, 0, target="sleep", in_flight=in_flight))
    runners_cpu = tree_cpu_s(server_pid, children_only=True) - runners0
    server_cpu = tree_cpu_s(server_pid) - server0 - runners_cpu
    result.update(
        burst_s=result["wall_s"],
        server_cpu_ms_per_prediction=server_cpu * 1000 / B2_N,
        runners_cpu_ms_per_prediction=runners_cpu * 1000 / B2_N,
    )
    name = "B2" if in_flight == B1_CONCURRENCY else "B2-flood"
    return emit(name, round=round_, client=f"freight.AsyncClient, {in_flight} in flight", **result)


def _wrk(url: str, lua: Path, duration_s: int) -> dict[str, Any]:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{B3_CONNECTIONS}",
            f"-d{duration_s}s",
            "--latency",
            "--timeout",
            "5s",
            "-s",
            str(lua),
            url,
        ],
        capture_output=True,
        text=True,
        timeout=duration_s + 30,
    ).stdout
    unit = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    res: dict[str, Any] = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res["rps"] = float(m.group(1)) if m else None
    for q in ("50", "99"):
        m = re.search(rf"^\s+{q}%\s+([\d.]+)(us|ms|s)", out, re.M)
        res[f"p{q}_ms"] = float(m.group(1)) * unit[m.group(2)] if m else None
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    res["non2xx"] = int(m.group(1)) if m else 0
    return res


def b3(
    url: str, round_: int, workdir: Path, duration_s: int = B3_DURATION_S
) -> dict[str, Any] | None:
    if shutil.which("wrk") is None:
        print("wrk not installed (apt-get install wrk): skipping B3", file=sys.stderr)
        return None
    lua = workdir / "b3.lua"
    body = json.dumps({"id": 1, "blob": BLOB}).replace('"', '\\"')
    key = os.environ.get("FREIGHT_API_KEY")
    auth = f'wrk.headers["Authorization"] = "Bearer {key}"\n' if key else ""
    lua.write_text(
        f'wrk.method = "POST"\nwrk.body = "{body}"\n'
        'wrk.headers["Content-Type"] = "application/json"\n' + auth
    )
    target = f"{url}/v1/models/echo/predict"
    _wrk(target, lua, B3_WARMUP_S)
    return emit(
        "B3",
        round=round_,
        tool=f"wrk -t1 -c{B3_CONNECTIONS} -d{duration_s}s",
        **_wrk(target, lua, duration_s),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="B1,B2,B3")
    parser.add_argument("--n", type=int, default=B1_N, help="B1's predictions (B1-bulk: 2n)")
    parser.add_argument("--duration", type=int, default=B3_DURATION_S, help="B3's seconds")
    parser.add_argument(
        "--project", type=Path, default=None, help="serve this project, not examples/"
    )
    parser.add_argument(
        "--with-key",
        action="store_true",
        help="make an API key first and send it on every request (the cost of auth)",
    )
    parser.add_argument(
        "--tracing",
        choices=["off", "on", "both"],
        default="off",
        help="OpenTelemetry traces exported to a discarding OTLP receiver; both: each "
        "round runs tracing off, then on (one sitting)",
    )
    args = parser.parse_args()
    only = set(args.only.split(","))
    modes = ["off", "on"] if args.tracing == "both" else [args.tracing]
    results: dict[str, list[dict[str, Any]]] = {}
    discard = Discard() if "on" in modes else None
    # state under the repo, like `make run`: on this machine /tmp creates files ~10x slower
    (ROOT / ".freight").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-", dir=ROOT / ".freight") as tmp:
        for round_ in range(1, args.rounds + 1):
            for mode in modes:
                state = Path(tmp) / f"round{round_}-{mode}"
                state.mkdir()
                extra = discard.env() if mode == "on" and discard else {}
                tag = "" if args.tracing == "off" else f"-tracing-{mode}"
                server = ServerProcess(state, extra, args.project)
                if tag:  # the lines that follow are of this mode
                    emit("tracing", round=round_, mode=mode)
                if args.with_key:  # every request of the clients below carries it
                    os.environ["FREIGHT_API_KEY"] = server.make_key()
                try:
                    found = {
                        "B1": b1(server.url, round_, server.proc.pid, args.n)
                        if "B1" in only
                        else None,
                        "B1-bulk": b1_bulk(server.url, round_, server.proc.pid, args.n)
                        if "B1-bulk" in only
                        else None,
                        "B2": b2(server.url, round_, server.proc.pid) if "B2" in only else None,
                        "B2-flood": b2(server.url, round_, server.proc.pid, B2_N)
                        if "B2-flood" in only
                        else None,
                        "B3": b3(server.url, round_, state, args.duration)
                        if "B3" in only
                        else None,
                    }
                    for workload, r in found.items():
                        if r:
                            results.setdefault(workload + tag, []).append(r)
                finally:
                    server.stop()
    for workload, rows in results.items():
        key = {"B1": "completed_per_s", "B2": "burst_s", "B3": "rps"}[workload[:2]]
        if rows:
            emit(
                f"{workload}-median",
                rounds=len(rows),
                **medians(rows),
                headline=key,
            )


if __name__ == "__main__":
    main()
