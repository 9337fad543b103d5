"""GPU assignment: which devices a node has, and which replica holds which.

Pure: the caller runs ``nvidia-smi`` (or not) and passes its output and the
environment in, so detection and assignment are tested with fake device lists.
Each replica of a model with ``Resources(gpus=n)`` holds ``n`` devices of its
own, and its runner process sees only those through ``CUDA_VISIBLE_DEVICES``; a
model with ``gpus=0`` gets an empty ``CUDA_VISIBLE_DEVICES`` so it cannot grab a
GPU that a replica of another model was given.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from freight.errors import ConfigError
from freight.model import Replicas, Resources

#: the environment variable that overrides detection: "0,1,2" or "none"
GPUS_ENV = "FREIGHT_GPUS"
#: how ``nvidia-smi`` is asked for the device list whose output :func:`detect_devices` reads
NVIDIA_SMI_QUERY = ("nvidia-smi", "--query-gpu=index", "--format=csv,noheader")


def visible_devices_env(devices: Sequence[str]) -> dict[str, str]:
    """The environment that confines a runner to ``devices`` (none: an empty value).

    An empty ``CUDA_VISIBLE_DEVICES`` hides every GPU, which is what a model with
    ``gpus=0`` must get; leaving the variable unset would show it all of them.
    """
    return {"CUDA_VISIBLE_DEVICES": ",".join(devices)}


class GpuPool:
    """The node's devices, each held by at most one replica at a time."""

    visible_devices_env = staticmethod(visible_devices_env)

    def __init__(self, devices: Sequence[str]) -> None:
        if len(set(devices)) != len(devices):
            raise ValueError(f"duplicate GPU devices in {list(devices)}")
        self._devices = tuple(devices)
        self._order = {device: i for i, device in enumerate(self._devices)}
        self._free = set(self._devices)

    @property
    def devices(self) -> tuple[str, ...]:
        return self._devices

    @property
    def free(self) -> tuple[str, ...]:
        """Free devices in the node's order (lowest first: assignment is predictable)."""
        return tuple(sorted(self._free, key=self._order.__getitem__))

    def acquire(self, n: int) -> tuple[str, ...] | None:
        """``n`` distinct free devices, now held; ``None`` (and nothing held) if fewer are free.

        All or nothing: a replica with half its GPUs cannot run, and holding half
        would starve another replica that could.
        """
        if n < 0:
            raise ValueError(f"cannot acquire {n} GPUs")
        free = self.free
        if n > len(free):
            return None
        taken = free[:n]
        self._free.difference_update(taken)
        return taken

    def release(self, devices: Iterable[str]) -> None:
        """Give devices back. Releasing one that is not held is a bug and raises:
        ignoring it could hand one device to two replicas."""
        devices = tuple(devices)
        for device in devices:
            if device not in self._order:
                raise ValueError(f"GPU {device!r} is not one of this node's {self._devices}")
            if device in self._free or devices.count(device) > 1:
                raise ValueError(f"GPU {device!r} is not held")
        self._free.update(devices)


def detect_devices(env: Mapping[str, str], nvidia_smi_output: str | None) -> list[str]:
    """The node's GPUs: ``FREIGHT_GPUS`` when set, else what ``nvidia-smi`` listed.

    ``nvidia_smi_output`` is the output of :data:`NVIDIA_SMI_QUERY`, or ``None``
    when it is not installed or failed: no GPU. Lines that are not an index (such
    as "No devices were found") are not devices. An empty ``FREIGHT_GPUS`` counts
    as unset; ``none`` says the node has no GPU even when nvidia-smi sees some.
    """
    override = env.get(GPUS_ENV, "").strip()
    if override:
        return _parse_override(override)
    if nvidia_smi_output is None:
        return []
    found: list[str] = []
    for line in nvidia_smi_output.splitlines():
        index = line.strip()
        if index.isdigit() and index not in found:
            found.append(index)
    return found


def _parse_override(value: str) -> list[str]:
    if value.lower() == "none":
        return []
    devices = [item.strip() for item in value.split(",")]
    if any(not device for device in devices):
        raise ConfigError(f"{GPUS_ENV}={value!r} has an empty entry", setting=GPUS_ENV)
    if len(set(devices)) != len(devices):
        raise ConfigError(f"{GPUS_ENV}={value!r} lists a device twice", setting=GPUS_ENV)
    return devices


class SpecLike(Protocol):
    """What :func:`check_deployable` reads of a model (``freight.registry.ModelSpec``)."""

    @property
    def name(self) -> str: ...
    @property
    def replicas(self) -> Replicas: ...
    @property
    def resources(self) -> Resources: ...


@dataclass(frozen=True, slots=True)
class DeployProblem:
    """A model this node cannot serve as declared.

    ``fatal``: the deployment is wrong (refuse to start). Not fatal: the node has
    no GPU at all, so the model is simply not served here and the agent serves
    the models that need none (another node may serve it). ``model`` is ``None``
    for a problem of the models together.
    """

    model: str | None
    message: str
    fatal: bool


def _gpus(n: int) -> str:
    return f"{n} GPU" if n == 1 else f"{n} GPUs"


def check_deployable(specs: Iterable[SpecLike], devices: Sequence[str]) -> list[DeployProblem]:
    """What stops these models from running on a node with ``devices``, by model name."""
    have = len(devices)
    problems: list[DeployProblem] = []
    floor = 0  # GPUs the servable models' minimum replicas hold together
    holders: list[str] = []
    for spec in sorted(specs, key=lambda s: s.name):
        problem = _check_one(spec, have)
        if problem is not None:
            problems.append(problem)
        elif spec.resources.gpus and spec.replicas.min:
            floor += spec.resources.gpus * spec.replicas.min
            holders.append(spec.name)
    if have and floor > have and len(holders) > 1:
        problems.append(
            DeployProblem(
                None,
                f"the minimum replicas of {', '.join(holders)} need {_gpus(floor)} "
                f"together; this node has {have}",
                fatal=True,
            )
        )
    return problems


def _check_one(spec: SpecLike, have: int) -> DeployProblem | None:
    asks = spec.resources.gpus
    if not asks:
        return None
    if not have:
        message = f"model {spec.name} asks for {_gpus(asks)}; this node has none: not served here"
        return DeployProblem(spec.name, message, fatal=False)
    if asks > have:
        message = f"model {spec.name} asks for {_gpus(asks)}; this node has {have}"
        return DeployProblem(spec.name, message, fatal=True)
    floor = asks * spec.replicas.min
    if floor > have:
        message = (
            f"model {spec.name} keeps {spec.replicas.min} replicas of {_gpus(asks)} each "
            f"({_gpus(floor)}); this node has {have}"
        )
        return DeployProblem(spec.name, message, fatal=True)
    return None
