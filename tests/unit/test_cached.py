"""cached.Reads: one read per key and period, however many ask at once."""

from __future__ import annotations

import asyncio

import pytest

from freight.cached import Reads


async def test_concurrent_callers_share_one_read_and_a_new_period_reads_again() -> None:
    reads: Reads[int] = Reads(ttl_s=3600)
    calls = [0]
    gate = asyncio.Event()

    async def read() -> int:
        calls[0] += 1
        await gate.wait()  # every caller arrives while the first read is in flight
        return calls[0]

    waiting = [asyncio.create_task(reads.get("k", read)) for _ in range(50)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*waiting) == [1] * 50
    assert calls == [1]
    assert await reads.get("other", read) == 2  # another key: its own read
    expired: Reads[int] = Reads(ttl_s=0.0)
    assert [await expired.get("k", read) for _ in range(2)] == [3, 4]  # no period: each reads


async def test_a_read_that_raised_is_read_again() -> None:
    reads: Reads[str] = Reads(ttl_s=3600)
    answers = iter([RuntimeError("down"), "up"])

    async def read() -> str:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    with pytest.raises(RuntimeError):
        await reads.get("k", read)
    assert await reads.get("k", read) == "up"
