"""A batch model for the dynamic-batching tests (tests/integration/test_batching.py).

One class on purpose: every test serving this whole project starts one runner
per model, so this module adds one. Its behaviour per batch follows the inputs:

- ``{"gate": DIR}``: wait until ``DIR/open`` exists, so a test can hold the
  replica busy while it queues a burst behind it (no batching wait: the gated
  prediction runs alone, what queues meanwhile forms the next batch);
- ``{"short": true}`` anywhere in the batch: return one output too few;
- ``{"unjsonable": true}``: that item's output is a set (not JSON-able);
- anything else: ``{"n": input["n"], "batch": len(inputs)}``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import freight

GATE_DEADLINE_S = 120.0


class Batcher(freight.Model):
    """Batches of up to 16, one replica; see the module docstring."""

    name = "batcher"
    batching = freight.Batching(max_size=16, max_wait_ms=0)
    replicas = freight.Replicas(min=1, max=1)

    def predict_batch(self, inputs: list[dict[str, Any]]) -> list[Any]:
        for gate in {Path(i["gate"]) / "open" for i in inputs if i.get("gate")}:
            deadline = time.monotonic() + GATE_DEADLINE_S
            while not gate.exists():
                if time.monotonic() > deadline:
                    raise TimeoutError("the gate was never opened")
                time.sleep(0.01)
        outputs: list[Any] = [
            {1, 2} if i.get("unjsonable") else {"n": i.get("n"), "batch": len(inputs)}
            for i in inputs
        ]
        if any(i.get("short") for i in inputs):
            return outputs[:-1]
        return outputs
