"""freight benchmark B10: notifications under B1's load (workloads in bench/README.md).

    .venv/bin/python bench/notify.py [--rounds 3] [--n 2000]

One embedded server (``freight serve examples/``); per round, B1 (2,000 ``echo``
predictions, freight's AsyncClient, 32 in flight) without webhooks, then B1 with
one webhook per prediction to a receiver on loopback (aiohttp), in a process of its
own (``--receiver process``, the default: a receiver is another service, and on the
bench's event loop its ~0.1 ms per webhook came out of the load generator's GIL) or on
the bench's own loop (``--receiver loop``, as measured before December 2026).
Prints one JSON line per run: B1's throughput, and for the webhook run the
latency from each prediction's ``finished_at`` to its ``prediction.completed``
arriving at the receiver (p50/p99), and how many arrived. Then a summary: the
medians and the throughput ratio with/without webhooks. Bounded: every wait has
a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ["FREIGHT_WEBHOOK_ALLOW_PRIVATE"] = "true"  # the receiver is on loopback

import bench

import freight


class Receiver:
    """Records when each prediction's completed event arrived."""

    def __init__(self) -> None:
        self.arrived: dict[str, tuple[float, float]] = {}  # id -> (received, finished_at)
        self.port = bench.free_port()
        self.all_in = asyncio.Event()
        self.expected = 0

    async def handle(self, request: web.Request) -> web.Response:
        received = time.time()
        body = orjson.loads(await request.read())
        data = body["data"]
        if body["type"] == "prediction.completed" and data.get("finished_at"):
            finished = bench._ts(data["finished_at"])
            self.arrived.setdefault(data["id"], (received, finished))
            if len(self.arrived) >= self.expected:
                self.all_in.set()
        return web.Response(status=204)

    def reset(self, expected: int) -> None:
        self.arrived.clear()
        self.all_in.clear()
        self.expected = expected

    async def wait_all(self, timeout_s: float) -> dict[str, tuple[float, float]]:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.all_in.wait(), timeout_s)
        return dict(self.arrived)

    async def start(self) -> web.AppRunner:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        app.router.add_post("/reset", self._reset)
        app.router.add_get("/arrived", self._arrived)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        return runner

    async def _reset(self, request: web.Request) -> web.Response:
        self.reset(int((await request.json())["expected"]))
        return web.Response(status=204)

    async def _arrived(self, request: web.Request) -> web.Response:
        return web.json_response({"count": len(self.arrived), "arrived": self.arrived})


def _serve_receiver(port: int) -> None:
    """The receiver's own process: serves until killed."""

    async def serve() -> None:
        receiver = Receiver()
        receiver.port = port
        await receiver.start()
        await asyncio.Event().wait()

    asyncio.run(serve())


class ReceiverProcess:
    """The :class:`Receiver` in a process of its own, asked over loopback HTTP."""

    def __init__(self) -> None:
        self.port = bench.free_port()
        self._proc = multiprocessing.get_context("fork").Process(
            target=_serve_receiver, args=(self.port,), daemon=True
        )
        self._proc.start()
        self._expected = 0

    def _get(self) -> dict[str, Any]:
        with httpx.Client(timeout=10) as http:
            got: dict[str, Any] = http.get(f"http://127.0.0.1:{self.port}/arrived").json()
        return got

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                self._get()
                return
            time.sleep(0.05)
        raise SystemExit("the webhook receiver did not start")

    def reset(self, expected: int) -> None:
        self._expected = expected
        httpx.post(f"http://127.0.0.1:{self.port}/reset", json={"expected": expected})

    async def wait_all(self, timeout_s: float) -> dict[str, tuple[float, float]]:
        """Asked every 50 ms (a count), then the arrivals once."""
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(timeout=10) as http:
            url = f"http://127.0.0.1:{self.port}/arrived"
            while time.monotonic() < deadline:
                got = (await http.get(url)).json()
                if got["count"] >= self._expected:
                    break
                await asyncio.sleep(0.05)
            arrived = (await http.get(url)).json()["arrived"]
        return {k: (v[0], v[1]) for k, v in arrived.items()}

    def stop(self) -> None:
        self._proc.kill()
        self._proc.join(10)


async def _hooked_burst(
    url: str, receiver: Receiver | ReceiverProcess, n: int, id0: int
) -> dict[str, Any]:
    hook = f"http://127.0.0.1:{receiver.port}/hook"
    receiver.reset(n)
    async with freight.AsyncClient(url, timeout_s=60) as client:
        t_first = time.time()
        todo = iter(range(n))
        ids: list[str] = []

        async def submitter() -> None:
            for i in todo:
                handle = await client.predict(
                    "echo", {"id": id0 + i, "blob": bench.BLOB}, webhook=hook,
                    webhook_events=["completed"],
                )
                ids.append(handle.id)

        await asyncio.gather(*(submitter() for _ in range(bench.B1_CONCURRENCY)))
        got = await receiver.wait_all(300)
    arrived = [got[i] for i in ids if i in got]
    latency = [(got - finished) * 1000 for got, finished in arrived]
    t_last = max(finished for _, finished in arrived) if arrived else time.time()
    return {
        "n": n,
        "delivered": len(arrived),
        "completed_per_s": n / (t_last - t_first),
        "delivery_p50_ms": bench.pct(latency, 50),
        "delivery_p99_ms": bench.pct(latency, 99),
    }


async def _unloaded(
    url: str, receiver: Receiver | ReceiverProcess, n: int = 100
) -> dict[str, Any]:
    """The same webhook, one prediction at a time: delivery latency without load."""
    hook = f"http://127.0.0.1:{receiver.port}/hook"
    receiver.reset(n)
    async with freight.AsyncClient(url, timeout_s=60) as client:
        for i in range(n):
            handle = await client.predict(
                "echo", {"id": 10**9 + i}, webhook=hook, webhook_events=["completed"]
            )
            await handle.wait(timeout=60)
        arrived = await receiver.wait_all(60)
    latency = [(got - finished) * 1000 for got, finished in arrived.values()]
    return {
        "n": n,
        "delivered": len(latency),
        "delivery_p50_ms": bench.pct(latency, 50),
        "delivery_p99_ms": bench.pct(latency, 99),
    }


async def _round(
    server: bench.ServerProcess, receiver: Receiver | ReceiverProcess, round_: int, n: int
) -> tuple[float, float, float]:
    """B1 then B10, each with the server's CPU per prediction (its deliverer and
    runners included) and the bench process's (the client; the receiver too with
    ``--receiver loop``)."""
    url, pid = server.url, server.proc.pid
    await bench._b1_burst(url, bench.B1_WARMUP, 10**6)
    cpu0, mine0 = bench.tree_cpu_s(pid), bench.self_cpu_s()
    api0, wall0 = cpu0 - bench.tree_cpu_s(pid, children_only=True), time.monotonic()
    plain = await bench._b1_burst(url, n, round_ * 10**5)
    api = bench.tree_cpu_s(pid) - bench.tree_cpu_s(pid, children_only=True) - api0
    plain["api_process_cores_busy"] = api / (time.monotonic() - wall0)
    plain["server_cpu_ms_per_prediction"] = (bench.tree_cpu_s(pid) - cpu0) * 1000 / n
    plain["bench_cpu_ms_per_prediction"] = (bench.self_cpu_s() - mine0) * 1000 / n
    bench.emit("B1", round=round_, webhooks=False, **plain)
    await _hooked_burst(url, receiver, bench.B1_WARMUP, 10**7)
    cpu0, mine0 = bench.tree_cpu_s(pid), bench.self_cpu_s()
    api0 = cpu0 - bench.tree_cpu_s(pid, children_only=True)
    wall0 = time.monotonic()
    hooked = await _hooked_burst(url, receiver, n, 10**8 + round_ * 10**5)
    hooked["server_cpu_ms_per_prediction"] = (bench.tree_cpu_s(pid) - cpu0) * 1000 / n
    hooked["bench_cpu_ms_per_prediction"] = (bench.self_cpu_s() - mine0) * 1000 / n
    wall = time.monotonic() - wall0
    api = bench.tree_cpu_s(pid) - bench.tree_cpu_s(pid, children_only=True) - api0
    hooked["api_process_cores_busy"] = api / wall
    bench.emit("B10", round=round_, webhooks=True, **hooked)
    return plain["completed_per_s"], hooked["completed_per_s"], hooked["delivery_p50_ms"]


async def _main(rounds: int, n: int, where: str) -> None:
    receiver: Receiver | ReceiverProcess
    if where == "loop":
        receiver = Receiver()
        runner: web.AppRunner | None = await receiver.start()
    else:
        receiver, runner = ReceiverProcess(), None
        receiver.wait_ready()
    with tempfile.TemporaryDirectory(dir=bench.ROOT / ".freight") as state:
        server = bench.ServerProcess(Path(state))
        try:
            results = [await _round(server, receiver, r, n) for r in range(rounds)]
            bench.emit("B10-unloaded", **await _unloaded(server.url, receiver))
        finally:
            server.stop()
            if isinstance(receiver, ReceiverProcess):
                receiver.stop()
    if runner is not None:
        await runner.cleanup()
    plain = statistics.median(r[0] for r in results)
    hooked = statistics.median(r[1] for r in results)
    bench.emit(
        "B10-summary",
        rounds=rounds,
        receiver=where,
        b1_completed_per_s=plain,
        b1_with_webhooks_completed_per_s=hooked,
        ratio=hooked / plain,
        delivery_p50_ms=statistics.median(r[2] for r in results),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, default=bench.B1_N, help="predictions per B1 run")
    parser.add_argument(
        "--receiver",
        choices=("process", "loop"),
        default="process",
        help="the webhook receiver in a process of its own, or on the bench's event loop",
    )
    args = parser.parse_args()
    (bench.ROOT / ".freight").mkdir(exist_ok=True)
    asyncio.run(_main(args.rounds, args.n, args.receiver))


if __name__ == "__main__":
    main()
