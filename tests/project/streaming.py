"""Generator models, for the streaming tests (tests/integration/test_streaming.py) and the
time-to-first-chunk bench (bench/streaming.py).

``Teller`` yields the Fibonacci numbers, one word per chunk (``"0 "``, ``"1 "``, ``"1 "``,
``"2 "``…): its output is their concatenation, a text a test computes on its own.
Input ``{"n": N}`` (how many words), optionally ``"gate": DIR`` (after ``hold`` chunks,
default 2, it waits until ``DIR/open`` exists: a test connects, reconnects, or cancels
meanwhile) and ``"fail_at": K`` (it raises before its K-th chunk).

``Counter`` is an async generator yielding JSON chunks ``{"i": i, "square": i*i}``; its
output is their list. ``Sleeper`` is ``Teller`` under another name, one no other test
wakes: its first request waits for a replica to load. ``Spiller`` yields the bytes of
its input back in pieces. All start at zero replicas (``idle_s=60`` keeps one up for a
test's length): every server of the test project serves them, and a runner each would
slow every server's start.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import freight

GATE_DEADLINE_S = 120.0


def fibonacci(n: int) -> list[int]:
    """The first ``n`` Fibonacci numbers."""
    found, a, b = [], 0, 1
    for _ in range(n):
        found.append(a)
        a, b = b, a + b
    return found


def told(n: int) -> str:
    """What ``Teller`` answers for ``{"n": n}``."""
    return "".join(f"{x} " for x in fibonacci(n))


def _wait_for(gate: Path) -> None:
    deadline = time.monotonic() + GATE_DEADLINE_S
    while not gate.exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the gate was never opened")
        time.sleep(0.01)


class Teller(freight.Model):
    name = "teller"
    replicas = freight.Replicas(min=0, max=1, idle_s=60)

    def predict(self, input: dict[str, Any]) -> Iterator[str]:
        gate = Path(input["gate"]) / "open" if input.get("gate") else None
        hold = int(input.get("hold", 2))
        for k, x in enumerate(fibonacci(int(input.get("n", 10)))):
            if k == input.get("fail_at"):
                raise ValueError(f"told {k} words, and no more")
            if gate is not None and k == hold:
                _wait_for(gate)
            yield f"{x} "


class Counter(freight.Model):
    name = "counter"
    replicas = freight.Replicas(min=0, max=1, idle_s=60)
    stream_output = "list"

    async def predict(self, input: dict[str, Any]) -> AsyncIterator[dict[str, int]]:
        for i in range(int(input.get("n", 3))):
            await asyncio.sleep(0)
            yield {"i": i, "square": i * i}


class Sleeper(Teller):
    name = "sleeper"
    replicas = freight.Replicas(min=0, max=1, idle_s=60)


class Spiller(freight.Model):
    name = "spiller"
    replicas = freight.Replicas(min=0, max=1, idle_s=60)

    def predict(self, input: bytes) -> Iterator[bytes]:
        for start in range(0, len(input), 4):
            yield input[start : start + 4]
