"""GPU assignment on fake device lists: detection, exclusive hand-out, deployability."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

import freight
from freight.errors import ConfigError
from freight.registry import ModelSpec
from freight.scaling.gpus import (
    DeployProblem,
    GpuPool,
    check_deployable,
    detect_devices,
    visible_devices_env,
)


@dataclass(frozen=True)
class Spec:
    name: str
    replicas: freight.Replicas = field(default_factory=freight.Replicas)
    resources: freight.Resources = field(default_factory=freight.Resources)


def gpu_model(name: str, gpus: int, min_replicas: int = 1) -> Spec:
    return Spec(
        name,
        freight.Replicas(min=min_replicas, max=max(1, min_replicas)),
        freight.Resources(gpus=gpus),
    )


# -- detection --------------------------------------------------------------------


def test_detect_from_nvidia_smi() -> None:
    assert detect_devices({}, "0\n1\n") == ["0", "1"]
    assert detect_devices({}, " 0 \r\n\n 3\n") == ["0", "3"]


def test_detect_without_gpus() -> None:
    """No nvidia-smi, or one that found nothing: no GPU."""
    assert detect_devices({}, None) == []
    assert detect_devices({}, "") == []
    assert detect_devices({}, "No devices were found\n") == []


def test_freight_gpus_overrides_detection() -> None:
    assert detect_devices({"FREIGHT_GPUS": "0,2"}, "0\n1\n2\n3\n") == ["0", "2"]
    assert detect_devices({"FREIGHT_GPUS": " 1 , 0 "}, None) == ["1", "0"]
    assert detect_devices({"FREIGHT_GPUS": "none"}, "0\n1\n") == []
    assert detect_devices({"FREIGHT_GPUS": "None"}, "0\n") == []
    assert detect_devices({"FREIGHT_GPUS": ""}, "0\n") == ["0"]  # empty: unset
    assert detect_devices({"FREIGHT_GPUS": "GPU-3f2a"}, None) == ["GPU-3f2a"]


@pytest.mark.parametrize("value", ["0,,1", "0,", "0,0"])
def test_bad_freight_gpus_is_a_config_error(value: str) -> None:
    with pytest.raises(ConfigError, match="FREIGHT_GPUS"):
        detect_devices({"FREIGHT_GPUS": value}, None)


# -- the pool -----------------------------------------------------------------------


def test_acquire_gives_distinct_devices_lowest_first() -> None:
    pool = GpuPool(["0", "1", "2"])
    assert pool.acquire(2) == ("0", "1")
    assert pool.acquire(1) == ("2",)
    assert pool.free == ()


def test_acquire_is_all_or_nothing() -> None:
    """Too few free: None, and nothing is held (no replica holds half its GPUs)."""
    pool = GpuPool(["0", "1"])
    assert pool.acquire(1) == ("0",)
    assert pool.acquire(2) is None
    assert pool.free == ("1",)


def test_zero_gpus_is_an_empty_grant() -> None:
    pool = GpuPool([])
    assert pool.acquire(0) == ()
    assert pool.acquire(1) is None


def test_release_returns_devices_for_reuse() -> None:
    pool = GpuPool(["0", "1", "2"])
    first = pool.acquire(2)
    second = pool.acquire(1)
    assert first is not None and second is not None
    pool.release(first)
    assert pool.free == ("0", "1")
    assert pool.acquire(2) == ("0", "1")
    assert second == ("2",)


def test_devices_are_never_shared() -> None:
    """Over a churn of acquires and releases, no device is held twice at once."""
    pool = GpuPool([str(i) for i in range(4)])
    held: list[tuple[str, ...]] = []
    for step in range(200):
        grant = pool.acquire(1 + step % 3)
        if grant is not None:
            held.append(grant)
        if step % 4 == 3 and held:
            pool.release(held.pop(0))
        in_use = [d for g in held for d in g]
        assert len(in_use) == len(set(in_use))
        assert set(in_use).isdisjoint(pool.free)


def test_release_of_what_is_not_held_raises() -> None:
    pool = GpuPool(["0", "1"])
    with pytest.raises(ValueError, match="not held"):
        pool.release(["0"])
    pool.acquire(2)
    with pytest.raises(ValueError, match="not one of"):
        pool.release(["7"])
    with pytest.raises(ValueError, match="not held"):
        pool.release(["0", "0"])
    assert pool.free == ()  # a refused release changes nothing


def test_duplicate_devices_are_refused() -> None:
    with pytest.raises(ValueError):
        GpuPool(["0", "0"])


def test_visible_devices_env() -> None:
    assert visible_devices_env(("0", "1")) == {"CUDA_VISIBLE_DEVICES": "0,1"}
    assert visible_devices_env(()) == {"CUDA_VISIBLE_DEVICES": ""}  # sees no GPU
    assert GpuPool.visible_devices_env(["3"]) == {"CUDA_VISIBLE_DEVICES": "3"}


# -- deployability ------------------------------------------------------------------


def test_models_that_fit_have_no_problem() -> None:
    specs = [Spec("cpu"), gpu_model("one", 1), gpu_model("two", 2)]
    assert check_deployable(specs, ["0", "1", "2"]) == []
    assert check_deployable([Spec("cpu")], []) == []


def test_more_gpus_than_the_node_has_is_fatal() -> None:
    assert check_deployable([gpu_model("x", 2)], ["0"]) == [
        DeployProblem("x", "model x asks for 2 GPUs; this node has 1", fatal=True)
    ]


def test_no_gpu_node_skips_gpu_models() -> None:
    """On a node without GPUs, GPU models are not served here; the others are."""
    problems = check_deployable([Spec("cpu"), gpu_model("llm", 1)], [])
    assert problems == [
        DeployProblem(
            "llm", "model llm asks for 1 GPU; this node has none: not served here", fatal=False
        )
    ]


def test_minimum_replicas_must_fit() -> None:
    problems = check_deployable([gpu_model("x", 1, min_replicas=3)], ["0", "1"])
    assert [p.fatal for p in problems] == [True]
    assert problems[0].message == (
        "model x keeps 3 replicas of 1 GPU each (3 GPUs); this node has 2"
    )


def test_minimums_of_several_models_must_fit_together() -> None:
    specs = [gpu_model("a", 1), gpu_model("b", 1), gpu_model("c", 1, min_replicas=0)]
    assert check_deployable(specs, ["0", "1"]) == []
    problems = check_deployable([*specs, gpu_model("d", 1)], ["0", "1"])
    assert problems == [
        DeployProblem(
            None,
            "the minimum replicas of a, b, d need 3 GPUs together; this node has 2",
            fatal=True,
        )
    ]


def test_spec_carries_resources_from_the_class() -> None:
    """ModelSpec records the class's resources, and satisfies check_deployable."""

    class Big(freight.Model):
        resources = freight.Resources(gpus=2)

        def predict(self, input: dict[str, int]) -> dict[str, int]:
            return input

    spec = ModelSpec.of(Big, "big:Big")
    assert spec.resources == freight.Resources(gpus=2)
    assert (
        check_deployable([spec], ["0"])[0].message == "model big asks for 2 GPUs; this node has 1"
    )
