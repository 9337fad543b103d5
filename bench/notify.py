"""freight benchmark B10: notifications under B1's load (workloads in bench/README.md).

    .venv/bin/python bench/notify.py [--rounds 3] [--n 2000]

One embedded server (``freight serve examples/``); per round, B1 (2,000 ``echo``
predictions, freight's AsyncClient, 32 in flight) without webhooks, then B1 with
one webhook per prediction to a receiver on loopback in this process (aiohttp).
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
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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

    async def start(self) -> web.AppRunner:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        return runner


async def _hooked_burst(url: str, receiver: Receiver, n: int, id0: int) -> dict[str, Any]:
    hook = f"http://127.0.0.1:{receiver.port}/hook"
    receiver.arrived.clear()
    receiver.all_in.clear()
    receiver.expected = n
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
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(receiver.all_in.wait(), 300)
    arrived = [receiver.arrived[i] for i in ids if i in receiver.arrived]
    latency = [(got - finished) * 1000 for got, finished in arrived]
    t_last = max(finished for _, finished in arrived) if arrived else time.time()
    return {
        "n": n,
        "delivered": len(arrived),
        "completed_per_s": n / (t_last - t_first),
        "delivery_p50_ms": bench.pct(latency, 50),
        "delivery_p99_ms": bench.pct(latency, 99),
    }


async def _unloaded(url: str, receiver: Receiver, n: int = 100) -> dict[str, Any]:
    """The same webhook, one prediction at a time: delivery latency without load."""
    hook = f"http://127.0.0.1:{receiver.port}/hook"
    receiver.arrived.clear()
    receiver.all_in.clear()
    receiver.expected = n
    async with freight.AsyncClient(url, timeout_s=60) as client:
        for i in range(n):
            handle = await client.predict(
                "echo", {"id": 10**9 + i}, webhook=hook, webhook_events=["completed"]
            )
            await handle.wait(timeout=60)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(receiver.all_in.wait(), 60)
    latency = [(got - finished) * 1000 for got, finished in receiver.arrived.values()]
    return {
        "n": n,
        "delivered": len(latency),
        "delivery_p50_ms": bench.pct(latency, 50),
        "delivery_p99_ms": bench.pct(latency, 99),
    }


async def _round(url: str, receiver: Receiver, round_: int, n: int) -> tuple[float, float, float]:
    await bench._b1_burst(url, bench.B1_WARMUP, 10**6)
    plain = await bench._b1_burst(url, n, round_ * 10**5)
    bench.emit("B1", round=round_, webhooks=False, **plain)
    await _hooked_burst(url, receiver, bench.B1_WARMUP, 10**7)
    hooked = await _hooked_burst(url, receiver, n, 10**8 + round_ * 10**5)
    bench.emit("B10", round=round_, webhooks=True, **hooked)
    return plain["completed_per_s"], hooked["completed_per_s"], hooked["delivery_p50_ms"]


async def _main(rounds: int, n: int) -> None:
    receiver = Receiver()
    runner = await receiver.start()
    with tempfile.TemporaryDirectory(dir=bench.ROOT / ".freight") as state:
        server = bench.ServerProcess(Path(state))
        try:
            results = [await _round(server.url, receiver, r, n) for r in range(rounds)]
            bench.emit("B10-unloaded", **await _unloaded(server.url, receiver))
        finally:
            server.stop()
    await runner.cleanup()
    plain = statistics.median(r[0] for r in results)
    hooked = statistics.median(r[1] for r in results)
    bench.emit(
        "B10-summary",
        rounds=rounds,
        b1_completed_per_s=plain,
        b1_with_webhooks_completed_per_s=hooked,
        ratio=hooked / plain,
        delivery_p50_ms=statistics.median(r[2] for r in results),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, default=bench.B1_N, help="predictions per B1 run")
    args = parser.parse_args()
    (bench.ROOT / ".freight").mkdir(exist_ok=True)
    asyncio.run(_main(args.rounds, args.n))


if __name__ == "__main__":
    main()
