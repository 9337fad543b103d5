"""``echo``: returns each JSON input unchanged.

The smallest possible model, used to measure freight itself: with no model
work at all, its latency and throughput are the platform's overhead (queueing,
batching, IPC, storage). Batches of up to 64 are taken without waiting
(``max_wait_ms=0``): whatever is queued when a replica frees up goes together.
"""

from __future__ import annotations

from typing import Any

import freight


class Echo(freight.Model):
    name = "echo"
    batching = freight.Batching(max_size=64, max_wait_ms=0)
    replicas = freight.Replicas(min=2, max=2)

    def predict_batch(self, inputs: list[Any]) -> list[Any]:
        return list(inputs)
