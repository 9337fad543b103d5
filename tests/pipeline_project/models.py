"""Models for the pipeline integration tests: tiny, pure, importing only freight.

Each is a building block of a pipeline in ``freight.yaml``: arithmetic to check
that outputs flow along the DAG, a model that always fails (for optional and
required failures), and a gate that runs until a file exists, so a test holds a
run in flight without timing guesses.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import freight

GATE_LIMIT_S = 60.0  # a gate never opened ends by itself, so a failed test leaves no runner


class Double(freight.Model):
    """Twice its input, a number."""

    name = "double"

    def predict(self, input: Any) -> Any:
        return input * 2


class Add(freight.Model):
    """The sum of ``input["values"]`` (nulls count as 0)."""

    name = "add"

    def predict(self, input: dict[str, Any]) -> Any:
        return sum(v or 0 for v in input["values"])


class Fail(freight.Model):
    """Always raises, once (no retries)."""

    name = "fail"
    max_attempts = 1

    def predict(self, input: Any) -> Any:
        raise ValueError(f"asked to fail on {input!r}")


class Gate(freight.Model):
    """Returns ``input["value"]`` once the file ``input["open"]`` exists."""

    name = "gate"

    def predict(self, input: dict[str, Any]) -> Any:
        gate = Path(input["open"])
        deadline = time.monotonic() + GATE_LIMIT_S
        while not gate.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        return input.get("value")


class Flaky(freight.Model):
    """Fails its first ``input["fail"]`` calls (counted as files in ``input["dir"]``),
    then returns ``input["value"]``: a transient error that a retry outlasts."""

    name = "flaky"

    def predict(self, input: dict[str, Any]) -> Any:
        calls = Path(input["dir"])
        calls.mkdir(parents=True, exist_ok=True)
        made = len(list(calls.iterdir()))
        (calls / str(made + 1)).touch()
        if made < input["fail"]:
            raise RuntimeError(f"transient failure {made + 1}")
        return input["value"]
