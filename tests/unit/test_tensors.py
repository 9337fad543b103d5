"""Tensors: the Open Inference Protocol's requests checked without numpy, turned into
arrays and back by the runner's half, and tensor models told by declaration or
annotation."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson
import pytest

import freight
from freight.errors import InvalidRequestError, ModelDefinitionError
from freight.model import InputKind
from freight.tensors import (
    FRAME_TYPE,
    Encoded,
    Tensor,
    check_request,
    decode_request,
    encode_response,
    parse_request,
    split_frame,
)

DECLARED = (Tensor("A", "FP32", [-1, 2]), Tensor("T", "BYTES", [-1]))


def binary_request(**outputs: bool) -> tuple[bytes, int]:
    a = np.arange(4, dtype="<f4").tobytes()
    t = b"".join(struct.pack("<I", len(s)) + s for s in (b"x", b"yz"))
    header = {
        "id": "r1",
        "inputs": [
            {
                "name": "A",
                "datatype": "FP32",
                "shape": [2, 2],
                "parameters": {"binary_data_size": len(a)},
            },
            {
                "name": "T",
                "datatype": "BYTES",
                "shape": [2],
                "parameters": {"binary_data_size": len(t)},
            },
        ],
        "outputs": [{"name": n, "parameters": {"binary_data": b}} for n, b in outputs.items()],
    }
    text = orjson.dumps(header)
    return text + a + t, len(text)


def test_a_binary_request_round_trips_to_arrays_and_an_answer() -> None:
    body, length = binary_request(A=True, T=False)
    request = parse_request(body, length)
    check_request(request, DECLARED, DECLARED)
    arrays, wanted = decode_request(request.frame(), FRAME_TYPE)
    np.testing.assert_array_equal(arrays["A"], np.arange(4, dtype=np.float32).reshape(2, 2))
    assert list(arrays["T"]) == [b"x", b"yz"]
    answer = encode_response({"A": arrays["A"] * 2, "T": arrays["T"]}, DECLARED, wanted, "m")
    assert isinstance(answer, Encoded) and answer.content_type == FRAME_TYPE
    header_length, rest = split_frame(answer.data)
    header = orjson.loads(rest[:header_length])
    assert header["id"] == "r1" and header["model_name"] == "m"
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 16}
    assert header["outputs"][1]["data"] == ["x", "yz"]
    assert np.frombuffer(rest[header_length:], "<f4").tolist() == [0, 2, 4, 6]


def test_json_requests_and_answers() -> None:
    request = {
        "inputs": [
            {"name": "A", "datatype": "FP32", "shape": [1, 2], "data": [[1, 2]]},
            {"name": "T", "datatype": "BYTES", "shape": [1], "data": ["é"]},
        ]
    }
    arrays, wanted = decode_request(request, "application/json")
    assert arrays["A"].dtype == np.float32 and arrays["T"][0] == "é".encode()
    answer = encode_response((arrays["A"], arrays["T"]), DECLARED, wanted, "m")
    assert answer == {
        "model_name": "m",
        "model_version": "1",
        "outputs": [
            {"name": "A", "datatype": "FP32", "shape": [1, 2], "data": [1.0, 2.0]},
            {"name": "T", "datatype": "BYTES", "shape": [1], "data": ["é"]},
        ],
    }
    undeclared = encode_response(np.array([True, False]), (), wanted, "m")
    assert isinstance(undeclared, dict)
    assert undeclared["outputs"] == [
        {"name": "OUTPUT0", "datatype": "BOOL", "shape": [2], "data": [True, False]}
    ]


@pytest.mark.parametrize(
    ("header", "binary", "fault"),
    [
        ({"inputs": []}, b"", "no inputs"),
        (
            {"inputs": [{"name": "A", "datatype": "FP99", "shape": [1], "data": [1]}]},
            b"",
            "unknown datatype",
        ),
        (
            {"inputs": [{"name": "A", "datatype": "FP32", "shape": [3], "data": [1, 2]}]},
            b"",
            "2 elements for shape [3]",
        ),
        (
            {
                "inputs": [
                    {
                        "name": "A",
                        "datatype": "FP32",
                        "shape": [2],
                        "parameters": {"binary_data_size": 8},
                    }
                ]
            },
            b"\0" * 4,
            "does not fit",
        ),
        (
            {
                "inputs": [
                    {
                        "name": "A",
                        "datatype": "FP32",
                        "shape": [2],
                        "parameters": {"binary_data_size": 4},
                    }
                ]
            },
            b"\0" * 4,
            "4 bytes for 2",
        ),
        (
            {"inputs": [{"name": "A", "datatype": "FP32", "shape": [1], "data": [1]}]},
            b"xx",
            "belong to no input",
        ),
        (
            {"inputs": [{"name": "A", "datatype": "FP32", "shape": [-1], "data": []}]},
            b"",
            "sizes >= 0",
        ),
        (
            {
                "inputs": [{"name": "A", "datatype": "FP32", "shape": [1], "data": [1]}],
                "outputs": [{"name": "A", "parameters": {"classification": 2}}],
            },
            b"",
            "classification",
        ),
    ],
)
def test_malformed_requests_are_refused(header: dict[str, Any], binary: bytes, fault: str) -> None:
    text = orjson.dumps(header)
    with pytest.raises(InvalidRequestError) as refused:
        parse_request(
            text + binary, len(text) if binary or "binary_data_size" in str(header) else None
        )
    assert refused.value.code == "invalid_tensor" and fault in refused.value.message


def test_requests_are_checked_against_the_declaration() -> None:
    ok = {"name": "A", "datatype": "FP32", "shape": [3, 2], "data": [0] * 6}
    t = {"name": "T", "datatype": "BYTES", "shape": [1], "data": ["a"]}
    check_request(parse_request(orjson.dumps({"inputs": [ok, t]})), DECLARED, DECLARED)
    for inputs, fault in (
        ([ok], "missing input(s) T"),
        ([ok | {"datatype": "FP64"}, t], "is FP32, not FP64"),
        ([ok | {"shape": [2, 3]}, t], "is not [-1, 2]"),
        ([ok, t, ok | {"name": "B"}], "no input 'B'"),
    ):
        with pytest.raises(InvalidRequestError) as refused:
            check_request(parse_request(orjson.dumps({"inputs": inputs})), DECLARED, DECLARED)
        assert fault in refused.value.message
    asks = parse_request(orjson.dumps({"inputs": [ok, t], "outputs": [{"name": "Z"}]}))
    with pytest.raises(InvalidRequestError, match="no output"):
        check_request(asks, DECLARED, DECLARED)


def test_tensor_models_are_told_by_declaration_or_annotation() -> None:
    class Declared(freight.Model):
        inputs = (Tensor("A", "FP32", [-1]),)

        def predict(self, input: dict[str, Any]) -> Any:
            return input

    class Annotated(freight.Model):
        def predict(self, x: np.ndarray) -> np.ndarray:
            return x

    class Mapping(freight.Model):
        def predict_batch(self, xs: list[dict[str, np.ndarray]]) -> list[Any]:
            return xs

    for model, one in ((Declared, False), (Annotated, True), (Mapping, False)):
        model.validate()
        assert model.input_kind() == InputKind.TENSORS
        assert model.takes_one_array() is one

    class Twice(freight.Model):
        outputs = (Tensor("A", "FP32"), Tensor("A", "INT8"))

        def predict(self, x: np.ndarray) -> np.ndarray:
            return x

    with pytest.raises(ModelDefinitionError, match="same name"):
        Twice.validate()
    with pytest.raises(ModelDefinitionError):
        Tensor("A", "FLOAT", [1])
    with pytest.raises(TypeError, match="shape"):
        encode_response(
            np.zeros((2, 3)),
            (Tensor("A", "FP32", [-1, 2]),),
            decode_request(
                {"inputs": [{"name": "A", "datatype": "FP32", "shape": [1], "data": [1]}]},
                "application/json",
            )[1],
            "m",
        )
