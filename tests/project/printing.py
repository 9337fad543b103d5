"""A batch model that prints, for the per-prediction log tests (tests/integration/test_logs.py).

It prints in ``load`` (stdout and a ``logging`` record), and in ``predict_batch`` one
stdout line, one stderr line and one logging record per input, each naming the
input's ``tag`` and the batch's tags, so a test can tell which batch a line came
from. ``{"gate": DIR}`` prints first, then waits until ``DIR/open`` exists (a test
follows the log meanwhile); ``{"spam": N}`` prints N lines of 100 bytes.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import freight

GATE_DEADLINE_S = 120.0
log = logging.getLogger("printing")


class Printer(freight.Model):
    """Batches of up to 16, one replica."""

    name = "printer"
    batching = freight.Batching(max_size=16, max_wait_ms=0)
    replicas = freight.Replicas(min=1, max=1)

    def load(self) -> None:
        logging.basicConfig(level=logging.INFO)
        print("loading the printer")
        log.info("printer loaded")

    def predict_batch(self, inputs: list[dict[str, Any]]) -> list[Any]:
        tags = ",".join(str(i.get("tag")) for i in inputs)
        print(f"batch of [{tags}]", flush=True)
        for i in inputs:
            print(f"out {i.get('tag')}", flush=True)
            print(f"err {i.get('tag')}", file=sys.stderr, flush=True)
            log.warning("log %s", i.get("tag"))
            for n in range(int(i.get("spam", 0))):
                print(f"{n:06d}" + "s" * 93)
        for gate in {Path(i["gate"]) / "open" for i in inputs if i.get("gate")}:
            deadline = time.monotonic() + GATE_DEADLINE_S
            while not gate.exists():
                if time.monotonic() > deadline:
                    raise TimeoutError("the gate was never opened")
                time.sleep(0.01)
        return [{"tag": i.get("tag")} for i in inputs]
