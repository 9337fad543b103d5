"""Models for the redrive integration test: each call of a step leaves a file
(``<dir>/<step>.<n>``), so the test counts how often each step ran; ``fixable`` fails
until ``<dir>/fixed`` exists (the model "fixed")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import freight


def _count(input: dict[str, Any]) -> Path:
    calls = Path(input["dir"])
    calls.mkdir(parents=True, exist_ok=True)
    made = len(list(calls.glob(f"{input['step']}.*")))
    (calls / f"{input['step']}.{made + 1}").touch()
    return calls


class Counted(freight.Model):
    """Its input's ``value`` plus one, each call counted."""

    name = "counted"

    def predict(self, input: dict[str, Any]) -> Any:
        _count(input)
        return input["value"] + 1


class Fixable(freight.Model):
    """Twice its input's ``value`` once fixed; until then it fails. Each call counted."""

    name = "fixable"

    def predict(self, input: dict[str, Any]) -> Any:
        if not (_count(input) / "fixed").exists():
            raise RuntimeError("not fixed yet")
        return input["value"] * 2
