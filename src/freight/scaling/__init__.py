"""Autoscaling and GPU assignment as pure functions (no I/O, no clock, no asyncio).

The agent observes each model once per tick, asks :func:`~freight.scaling.policy.decide`
for the replica count, shares the node with :func:`~freight.scaling.policy.allocate`
and hands GPUs out with :class:`~freight.scaling.gpus.GpuPool`. Keeping the rules
here means they are tested on traces, without processes, and the applier stays a
thin loop that only starts and stops replicas.
"""

from __future__ import annotations

from freight.scaling.gpus import (
    DeployProblem,
    GpuPool,
    check_deployable,
    detect_devices,
    visible_devices_env,
)
from freight.scaling.policy import (
    Decision,
    ModelScaleState,
    Observation,
    Want,
    allocate,
    capped,
    decide,
)

__all__ = [
    "Decision",
    "DeployProblem",
    "GpuPool",
    "ModelScaleState",
    "Observation",
    "Want",
    "allocate",
    "capped",
    "check_deployable",
    "decide",
    "detect_devices",
    "visible_devices_env",
]
