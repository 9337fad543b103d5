"""Models for the SageMaker and Open Inference Protocol tests (tests/integration/
test_sagemaker.py, test_inference_protocol.py) and bench/interop.py."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

import freight


class Echo(freight.Model):
    """Returns its JSON input unchanged."""

    name = "echo"
    batching = freight.Batching(max_size=16, max_wait_ms=0)

    def predict_batch(self, inputs: list[Any]) -> list[Any]:
        return inputs


class Shout(freight.Model):
    """Bytes in, the same bytes upper-cased out."""

    name = "shout"

    def predict(self, data: bytes) -> bytes:
        return data.upper()


class Fail(freight.Model):
    """Always raises, naming its input."""

    name = "fail"

    def predict(self, input: dict[str, Any]) -> dict[str, Any]:
        raise ValueError(f"cannot score {input.get('x')!r}")


class Sleepy(freight.Model):
    """Sleeps input["s"] seconds (default long): past any short InvocationTimeoutSeconds."""

    name = "sleepy"

    def predict(self, input: dict[str, Any]) -> dict[str, Any]:
        time.sleep(float(input.get("s", 60)))
        return input


class AddSub(freight.Model):
    """Triton's ``simple`` example: two INT32 [-1, 16] inputs, their sum and difference."""

    name = "add-sub"
    inputs = (
        freight.Tensor("INPUT0", "INT32", [-1, 16]),
        freight.Tensor("INPUT1", "INT32", [-1, 16]),
    )
    outputs = (
        freight.Tensor("OUTPUT0", "INT32", [-1, 16]),
        freight.Tensor("OUTPUT1", "INT32", [-1, 16]),
    )

    def predict(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        a, b = inputs["INPUT0"], inputs["INPUT1"]
        return a + b, a - b


class Words(freight.Model):
    """BYTES in: each string upper-cased, and its length."""

    name = "words"
    inputs = (freight.Tensor("TEXT", "BYTES", [-1]),)
    outputs = (freight.Tensor("UPPER", "BYTES", [-1]), freight.Tensor("LENGTH", "INT64", [-1]))

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        text = inputs["TEXT"]
        upper = np.array([t.upper() for t in text], dtype=object)
        return {"UPPER": upper, "LENGTH": np.array([len(t) for t in text], dtype=np.int64)}


class Double(freight.Model):
    """No declaration: takes one array by annotation, returns it doubled."""

    name = "double"

    def predict(self, x: np.ndarray) -> np.ndarray:
        return x * 2
