"""B4's three stages (``bench/pipeline.py``): each costs 20 ms, like the peers' W4 stages.

``stage-b`` and ``stage-c`` run in parallel on the pipeline's input, ``stage-d`` on
both of their outputs (``freight.yaml``), so a run's critical path is 40 ms of model
time and everything above it is the platform. One replica each, no batching: the
benchmark's invocations are sequential, and a replica runs one prediction at a time
(the peers hold a lock per worker for the same effect).
"""

from __future__ import annotations

import time
from typing import Any

import freight

STAGE_S = 0.020


class _Stage(freight.Model):
    replicas = freight.Replicas(min=1, max=1)
    batching = freight.Batching(max_size=1, max_wait_ms=0)


class StageB(_Stage):
    name = "stage-b"

    def predict(self, input: dict[str, Any]) -> dict[str, Any]:
        time.sleep(STAGE_S)
        return {"b": input["id"]}


class StageC(_Stage):
    name = "stage-c"

    def predict(self, input: dict[str, Any]) -> dict[str, Any]:
        time.sleep(STAGE_S)
        return {"c": input["id"]}


class StageD(_Stage):
    name = "stage-d"

    def predict(self, input: dict[str, Any]) -> dict[str, Any]:
        time.sleep(STAGE_S)
        return {"d": [input["b"], input["c"]]}
