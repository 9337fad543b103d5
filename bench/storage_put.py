"""Small-put rate of LocalStorage (the ~1 KB JSON written per prediction).

Compares the shipped path (synchronous write ≤ 64 KiB) with the alternatives it
was chosen over: the same write in ``asyncio.to_thread`` and obstore's
``LocalStore.put_async``. Run: ``python bench/storage_put.py [n] [size_bytes]``.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

import obstore
from obstore.store import LocalStore

from freight.storage.local import LocalStorage


async def rate(label: str, n: int, put: object) -> None:
    async def run() -> float:
        start = time.perf_counter()
        for i in range(n):
            await put(f"predictions/{i:07d}/output")  # type: ignore[operator]
        return time.perf_counter() - start

    elapsed = await run()
    print(f"{label:<42} {n / elapsed:>10,.0f} puts/s  ({elapsed / n * 1e6:.1f} µs/put)")


async def main(n: int, size: int) -> None:
    data = b"x" * size
    with tempfile.TemporaryDirectory() as tmp:
        storage = LocalStorage(Path(tmp) / "a")
        await rate("LocalStorage.put (sync ≤ 64 KiB)", n, lambda k: storage.put(k, data))
        threaded = LocalStorage(Path(tmp) / "b")
        await rate(
            "same write via asyncio.to_thread",
            n,
            lambda k: asyncio.to_thread(threaded._write_whole, threaded._path(k), data),
        )
        store = LocalStore(str(Path(tmp) / "c"), mkdir=True)
        await rate("obstore LocalStore.put_async", n, lambda k: obstore.put_async(store, k, data))
        concurrent = LocalStorage(Path(tmp) / "d")
        start = time.perf_counter()
        await asyncio.gather(*(concurrent.put(f"p/{i:07d}/o", data) for i in range(n)))
        elapsed = time.perf_counter() - start
        print(f"{'LocalStorage.put, all concurrent (gather)':<42} {n / elapsed:>10,.0f} puts/s")


if __name__ == "__main__":
    asyncio.run(
        main(
            int(sys.argv[1]) if len(sys.argv) > 1 else 5000,
            int(sys.argv[2]) if len(sys.argv) > 2 else 1024,
        )
    )
