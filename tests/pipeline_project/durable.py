"""A two-stage pipeline declared in Python, for the crash-and-resume tests.

Each stage appends a line to ``<dir>/<name>.runs`` when it starts, waits for
``<dir>/<name>.open``, then appends to ``<dir>/<name>.done`` and returns its
input plus one: a test reads exactly which stage is running, holds it there
while it kills the server, and counts how many times each one finished.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import freight

STAGE_LIMIT_S = 60.0  # a stage never opened ends by itself: no runner outlives a test


class Stage(freight.Model):
    name = "stage"
    max_attempts = 5

    def predict(self, input: dict[str, Any]) -> Any:
        folder, name = Path(input["dir"]), input["name"]
        with (folder / f"{name}.runs").open("a") as f:
            f.write(f"{os.getpid()}\n")
        deadline = time.monotonic() + STAGE_LIMIT_S
        while not (folder / f"{name}.open").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        with (folder / f"{name}.done").open("a") as f:
            f.write(f"{os.getpid()}\n")
        return input["value"] + 1


def _stage(name: str, value: str) -> freight.Step:
    return freight.Step(model="stage", input={"dir": "$input.dir", "name": name, "value": value})


chain = freight.Pipeline(
    "chain",
    steps={"one": _stage("one", "$input.value"), "two": _stage("two", "$steps.one.output")},
    output="$steps.two.output",
)
