"""Models of bench/scaling.py (B6, B7): a sleep-type model that scales out, and one
that starts from zero with a known load() time; of bench/scaleout.py: an I/O-bound
model."""

from __future__ import annotations

import os
import time
from typing import Any

import freight

#: how long ``cold``'s load() takes (subtracted from B7's figure: the model's own cost)
COLD_LOAD_MS = float(os.environ.get("BENCH_COLD_LOAD_MS", "200"))
#: ``io``: how long one call waits, how many predictions a call takes, replicas per node
IO_MS = float(os.environ.get("BENCH_IO_MS", "100"))
IO_BATCH = int(os.environ.get("BENCH_IO_BATCH", "8"))
IO_REPLICAS = int(os.environ.get("BENCH_IO_REPLICAS", "1"))


class Elastic(freight.Model):
    """B6: sleeps input["ms"] per prediction; one to four replicas, two predictions
    in flight or queued per replica before another starts."""

    name = "elastic"
    replicas = freight.Replicas(min=1, max=4, target_backlog=2, idle_s=30)

    def predict(self, input: dict[str, Any]) -> dict[str, Any]:
        time.sleep(input.get("ms", 0) / 1000)
        return {"pid": os.getpid()}


class Cold(freight.Model):
    """B7: no replica while idle (back to zero one second after the last request);
    load() sleeps COLD_LOAD_MS, predict answers at once."""

    name = "cold"
    replicas = freight.Replicas(min=0, max=1, target_backlog=1, idle_s=1)

    def load(self) -> None:
        time.sleep(COLD_LOAD_MS / 1000)

    def predict(self, input: dict[str, Any]) -> dict[str, Any]:
        return {"pid": os.getpid()}


class Io(freight.Model):
    """Scale-out: an I/O-bound model (a remote call of IO_MS that uses no CPU here),
    up to IO_BATCH predictions in flight per replica (one call per batch), IO_REPLICAS
    replicas per worker: a worker's ceiling is IO_REPLICAS * IO_BATCH / IO_MS."""

    name = "io"
    batching = freight.Batching(max_size=IO_BATCH, max_wait_ms=0)
    replicas = freight.Replicas(min=IO_REPLICAS, max=IO_REPLICAS)

    def predict_batch(self, inputs: list[Any]) -> list[Any]:
        time.sleep(IO_MS / 1000)
        return [{"ok": True} for _ in inputs]
