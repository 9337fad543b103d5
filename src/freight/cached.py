"""Reads reused for a while, each made once however many callers ask at the same time.

A burst of requests that all find an entry expired shares one query: read alone by
each, a cached value costs a herd of identical queries, one per request in flight
(the roster's waiting reasons made 253 in one burst of 500 creates).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")

#: entries kept before the cache starts over (keys are targets and priorities: few)
MAX_ENTRIES = 1024


class Reads(Generic[T]):
    """``await reads.get(key, read)``: ``read()``'s value for ``key``, read again once
    ``ttl_s`` has passed, and by one caller only; a read that raised is not kept."""

    def __init__(self, ttl_s: float) -> None:
        self._ttl_s = ttl_s
        self._entries: dict[Hashable, tuple[float, asyncio.Future[T]]] = {}

    async def get(self, key: Hashable, read: Callable[[], Awaitable[T]]) -> T:
        now = time.monotonic()
        entry = self._entries.get(key)
        if entry is None or now - entry[0] >= self._ttl_s:
            if len(self._entries) > MAX_ENTRIES:
                self._entries.clear()
            entry = (now, asyncio.ensure_future(read()))
            self._entries[key] = entry
        try:
            return await asyncio.shield(entry[1])
        except Exception:
            if self._entries.get(key) is entry:  # the next caller reads again
                del self._entries[key]
            raise
