"""B11: fairness between tenants, straight on the store (the claim, nothing else).

    .venv/bin/python bench/fairness.py [--rounds 3] [--database-url URL]

One model, one simulated worker (``--batch`` rows per claim, a batch costs
``--batch-ms`` + ``--item-ms`` per row of sleep, then its completion), woken at
once by each submission like the agent's in-process signal. Tenant B submits
``--n`` predictions at random intervals (exponential, mean ``--every-ms``, fixed
seed), twice:

- ``alone``: B on an idle store;
- ``backlog``: tenant A has ``--backlog`` predictions queued first, then B submits
  the same way while the worker drains A's backlog.

B's queue wait is each row's ``started_at - queued_at`` (stamped by the store).
Reported per phase and round: p50/p95/max of B's waits; ``claims_passed``, how many
claims were made while a row of B was queued without taking it (0: the first claim
after its arrival took it; an order, not a time, so the machine's load does not move
it); then ``B11`` with the ratio of the p95 waits (target: backlog at most 2x alone).
With a backlog the worker is always busy, so a row of B waits at least for the batch
in progress (up to ``--batch-ms`` + ``--item-ms`` x ``--batch``): the floor of any
claim order without preemption. A claim that is not fair leaves B behind A's whole
backlog (~backlog / batch claims).
Bounded: each phase stops when B's rows are all claimed, or at ``--deadline-s``
(then ``claimed_b`` < n, and the figures are lower bounds).

With ``--claim-cost N``, each round first times the claim alone (``B11-claim``):
claims of ``--batch`` through N queued rows of one tenant, then of four, in this
process (wall and CPU per claim; on SQLite the whole transaction runs in it).

SQLite gets a fresh file per round; a ``--database-url`` (PostgreSQL) is migrated
and used as it is, each phase on a model name of its own: use a scratch database
(the rows are left there).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench import emit, pct

from freight.ids import new_id
from freight.prediction import Completion, Prediction, Status
from freight.store import Store, migrate, open_store

A, B = "tenant-a", "tenant-b"


def _row(target: str, tenant: str) -> Prediction:
    now = time.time()
    row = Prediction(id=new_id(), target=target, status=Status.QUEUED, created_at=now)
    row.queued_at, row.max_attempts, row.timeout_s = now, 1, 600.0
    row.tenant = tenant  # the API takes no tenant of its own yet: set on the row
    return row


async def _queue_backlog(store: Store, target: str, n: int) -> float:
    started = time.perf_counter()
    for i in range(0, n, 200):
        await asyncio.gather(*(store.create(_row(target, A)) for _ in range(min(200, n - i))))
    return time.perf_counter() - started


class Phase:
    """One worker draining ``target`` while B submits; what it saw."""

    def __init__(self, store: Store, target: str, args: argparse.Namespace) -> None:
        self.store, self.target, self.args = store, target, args
        self.wake = asyncio.Event()
        self.b_ids: list[str] = []
        self.claimed = {A: 0, B: 0}
        self.claims = 0
        self.b_claims = 0  # claims that took any of B's rows
        self.b_rows_in_those = 0
        self.claimed_at: list[float] = []  # each claim's ``now``: its rows' started_at

    async def submit(self) -> None:
        rng = random.Random(11)
        for _ in range(self.args.n):
            await asyncio.sleep(rng.expovariate(1000 / self.args.every_ms))
            row, _ = await self.store.create(_row(self.target, B))
            self.b_ids.append(row.id)
            self.wake.set()

    async def work(self, deadline: float) -> None:
        worker = f"bench-{uuid.uuid4().hex[:6]}"
        while self.claimed[B] < self.args.n and time.monotonic() < deadline:
            self.wake.clear()
            now = time.time()
            rows = await self.store.claim(
                self.target, self.args.batch, worker_id=worker, lease_s=600, now=now
            )
            if not rows:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), 0.05)
                continue
            self.claims += 1
            self.claimed_at.append(now)
            for row in rows:
                self.claimed[row.tenant] += 1
            of_b = sum(row.tenant == B for row in rows)
            if of_b:
                self.b_claims += 1
                self.b_rows_in_those += of_b
            await asyncio.sleep((self.args.batch_ms + self.args.item_ms * len(rows)) / 1000)
            finished = time.time()
            await self.store.complete(
                [
                    Completion(
                        id=row.id,
                        attempt=row.attempts,
                        worker_id=worker,
                        status=Status.SUCCEEDED,
                        finished_at=finished,
                        output_json="null",
                        batch_size=len(rows),
                    )
                    for row in rows
                ]
            )

    async def run(self) -> dict[str, Any]:
        deadline = time.monotonic() + self.args.deadline_s
        started = time.perf_counter()
        submitter = asyncio.create_task(self.submit())
        await self.work(deadline)
        elapsed = time.perf_counter() - started
        submitter.cancel()
        waits, passed = [], []
        for prediction_id in self.b_ids:
            row = await self.store.get(prediction_id)
            if row is not None and row.started_at is not None and row.queued_at is not None:
                waits.append((row.started_at - row.queued_at) * 1000)
                # claims made while it was queued that did not take it (0: the first did)
                first = bisect.bisect_right(self.claimed_at, row.queued_at)
                # (a claim stamps the ``now`` it was called with: a row created while it
                # ran may be taken by it, started before it was queued)
                passed.append(max(0, bisect.bisect_left(self.claimed_at, row.started_at) - first))
        return {
            "claimed_b": len(waits),
            "claimed_a": self.claimed[A],
            "claims": self.claims,
            "b_rows_per_claim_with_b": self.b_rows_in_those / max(self.b_claims, 1),
            "elapsed_s": elapsed,
            "wait_p50_ms": pct(waits, 50),
            "wait_p95_ms": pct(waits, 95),
            "wait_max_ms": max(waits, default=float("nan")),
            "claims_passed_p95": pct(passed, 95),
            "claims_passed_max": max(passed, default=0),
        }


async def claim_cost(url: str, args: argparse.Namespace, round_: int, tenants: int) -> None:
    """The claim's own cost: claims of ``--batch`` through ``--claim-cost`` queued rows
    of ``tenants`` tenants, nothing else running (wall and this process's CPU)."""
    store = open_store(url)
    await store.open()
    try:
        target = f"fair-cost-{uuid.uuid4().hex[:8]}"
        rows = [_row(target, f"tenant-{i % tenants}") for i in range(args.claim_cost)]
        for i in range(0, len(rows), 200):
            await asyncio.gather(*(store.create(row) for row in rows[i : i + 200]))
        claims, wall, cpu = 0, time.perf_counter(), time.process_time()
        while await store.claim(target, args.batch, worker_id="cost", lease_s=600, now=time.time()):
            claims += 1
        emit(
            "B11-claim",
            round=round_,
            tenants=tenants,
            backlog=args.claim_cost,
            claims=claims,
            wall_us_per_claim=(time.perf_counter() - wall) / max(claims, 1) * 1e6,
            cpu_us_per_claim=(time.process_time() - cpu) / max(claims, 1) * 1e6,
        )
    finally:
        await store.close()


async def measure(url: str, args: argparse.Namespace, round_: int) -> tuple[float, float, int]:
    store = open_store(url)
    await store.open()
    try:
        alone = await Phase(store, f"fair-alone-{uuid.uuid4().hex[:8]}", args).run()
        emit("B11-alone", round=round_, **alone)
        target = f"fair-backlog-{uuid.uuid4().hex[:8]}"
        backlog_s = await _queue_backlog(store, target, args.backlog)
        loaded = await Phase(store, target, args).run()
        emit(
            "B11-backlog", round=round_, backlog=args.backlog, backlog_create_s=backlog_s, **loaded
        )
        return alone["wait_p95_ms"], loaded["wait_p95_ms"], loaded["claims_passed_max"]
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--backlog", type=int, default=10_000, help="tenant A's queued rows")
    parser.add_argument("--n", type=int, default=100, help="tenant B's predictions")
    parser.add_argument("--every-ms", type=float, default=20.0, help="B's mean interval")
    parser.add_argument("--batch", type=int, default=8, help="rows per claim")
    parser.add_argument("--batch-ms", type=float, default=5.0, help="a batch's fixed cost")
    parser.add_argument("--item-ms", type=float, default=0.5, help="a batch's cost per row")
    parser.add_argument("--deadline-s", type=float, default=60.0, help="per phase")
    parser.add_argument(
        "--claim-cost", type=int, default=0, help="also time claims through this many rows"
    )
    args = parser.parse_args()
    results = []
    for round_ in range(1, args.rounds + 1):
        with tempfile.TemporaryDirectory(prefix="bench-fair-") as tmp:
            url = args.database_url or f"sqlite:///{Path(tmp) / 'freight.db'}"
            migrate(url)
            if args.claim_cost:
                for tenants in (1, 4):
                    asyncio.run(claim_cost(url, args, round_, tenants))
            results.append(asyncio.run(measure(url, args, round_)))
    alone = statistics.median(r[0] for r in results)
    loaded = statistics.median(r[1] for r in results)
    ratio = loaded / alone if alone > 0 else float("inf")
    emit(
        "B11",
        rounds=len(results),
        database="postgresql" if args.database_url else "sqlite",
        alone_p95_ms=alone,
        backlog_p95_ms=loaded,
        ratio=ratio,
        target_met=ratio <= 2.0,
        backlog_claims_passed_max=max(r[2] for r in results),
    )


if __name__ == "__main__":
    sys.exit(main())
