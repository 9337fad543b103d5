"""Models of the console's browser tests (tests/integration/test_console.py)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import freight


class Echo(freight.Model):
    """Returns its JSON input; prints a line to its log first."""

    name = "echo"

    def predict(self, input: Any) -> Any:
        print(f"echoing {input!r}")
        return input


class Boom(freight.Model):
    """Always raises: a failed prediction with the model's traceback."""

    name = "boom"
    max_attempts = 1

    def predict(self, input: Any) -> Any:
        raise ValueError(f"boom: {input!r}")


class Gate(freight.Model):
    """Returns ``input["value"]`` once the file ``input["open"]`` exists."""

    name = "gate"

    def predict(self, input: dict[str, Any]) -> Any:
        gate = Path(input["open"])
        while not gate.exists():
            time.sleep(0.02)
        return input.get("value", 1)


class Big(freight.Model):
    """Needs a GPU, which no test node has: what it is given stays queued."""

    name = "big"
    resources = freight.Resources(gpus=1)

    def predict(self, input: Any) -> Any:  # pragma: no cover - never runs
        return input
