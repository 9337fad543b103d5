"""``sleep``: sleeps like a model whose cost is a fixed part plus a per-item part.

Input ``{"ms": N}``. A batch sleeps the largest ``N`` in it plus 1 ms per item
— the shape of real batched inference (one forward pass, slightly longer for
bigger batches) — and answers ``{"slept_ms": total}`` for every item. Tests
and benchmarks use it to make batching, queueing and timeouts observable
with a known, controllable run time.
"""

from __future__ import annotations

import time
from typing import Any

import freight


def _ms(item: Any) -> float:
    ms = item.get("ms", 0) if isinstance(item, dict) else None
    if isinstance(ms, bool) or not isinstance(ms, int | float) or ms < 0:
        raise ValueError(f'sleep expects {{"ms": <non-negative number>}}, got {item!r}')
    return float(ms)


class Sleep(freight.Model):
    name = "sleep"
    batching = freight.Batching(max_size=32, max_wait_ms=10)
    replicas = freight.Replicas(min=2, max=2)

    def predict_batch(self, inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        longest = max((_ms(item) for item in inputs), default=0.0)
        total = longest + len(inputs)
        time.sleep(total / 1000)
        slept = int(total) if total.is_integer() else total
        return [{"slept_ms": slept} for _ in inputs]
