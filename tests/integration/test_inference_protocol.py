"""The Open Inference Protocol (REST) with ``tritonclient.http.InferenceServerClient``,
unchanged, on both shapes: health, metadata, readiness, inference with JSON and binary
tensors (numbers and BYTES, declared tensors and a numpy annotation), and errors
(tritonclient's InferenceServerException with the server's message and status)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from freight.access import new_key
from tests.fixtures.server import Server

PROJECT = Path(__file__).resolve().parents[1] / "interop_project"
MODELS = ["AddSub", "Words", "Double", "Echo"]


@pytest.fixture
def keyed(make_server: Callable[..., Server]) -> tuple[Server, dict[str, str]]:
    """A server whose callers need a key, and the headers of a key of tenant acme (pass
    a copy per call: tritonclient adds Inference-Header-Content-Length to the dict)."""
    admin = new_key().token
    server = make_server(
        project=PROJECT,
        models=MODELS,
        FREIGHT_ADMIN_KEY=admin,
        FREIGHT_TEST_SNS_URL="http://127.0.0.1:9/unused",  # the project's sink: not read here
        FREIGHT_WEBHOOK_ALLOW_PRIVATE="true",
    )
    with server.client() as client:
        made = client.post(
            "/v1/keys", json={"tenant": "acme"}, headers={"authorization": f"Bearer {admin}"}
        )
    return server, {"Authorization": f"Bearer {made.json()['token']}"}


def _client(server: Server) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(server.url.removeprefix("http://"))


def _add_sub_inputs(binary: bool) -> tuple[list[triton.InferInput], np.ndarray, np.ndarray]:
    a = np.arange(32, dtype=np.int32).reshape(2, 16)
    b = np.full((2, 16), 3, dtype=np.int32)
    inputs = [
        triton.InferInput("INPUT0", [2, 16], "INT32"),
        triton.InferInput("INPUT1", [2, 16], "INT32"),
    ]
    inputs[0].set_data_from_numpy(a, binary_data=binary)
    inputs[1].set_data_from_numpy(b, binary_data=binary)
    return inputs, a, b


def test_tritonclient_infers_unchanged(keyed: tuple[Server, dict[str, str]]) -> None:
    """Health, server and model metadata, readiness; add-sub with JSON and with binary
    tensors both ways (and mixed), one output asked for; BYTES tensors; a model that only
    annotates numpy arrays; a version path."""
    server, headers = keyed
    client = _client(server)
    assert client.is_server_live() and client.is_server_ready()
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    meta = client.get_model_metadata("add-sub", headers=dict(headers))
    assert meta["versions"] == ["1"]
    assert meta["inputs"] == [
        {"name": "INPUT0", "datatype": "INT32", "shape": [-1, 16]},
        {"name": "INPUT1", "datatype": "INT32", "shape": [-1, 16]},
    ]
    assert [o["name"] for o in meta["outputs"]] == ["OUTPUT0", "OUTPUT1"]
    assert client.get_model_metadata("add-sub", "1", headers=dict(headers))["name"] == "add-sub"
    assert client.is_model_ready("add-sub", headers=dict(headers))
    assert client.is_model_ready("add-sub", "1", headers=dict(headers))

    for binary_in in (False, True):
        for binary_out in (False, True):
            inputs, a, b = _add_sub_inputs(binary_in)
            outputs = [
                triton.InferRequestedOutput("OUTPUT0", binary_data=binary_out),
                triton.InferRequestedOutput("OUTPUT1", binary_data=not binary_out),
            ]
            result = client.infer(
                "add-sub", inputs, outputs=outputs, request_id="r-7", headers=dict(headers)
            )
            assert result.get_response()["id"] == "r-7"
            np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
            np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
            assert result.as_numpy("OUTPUT0").dtype == np.int32

    inputs, a, b = _add_sub_inputs(True)
    only = client.infer(
        "add-sub",
        inputs,
        model_version="1",
        outputs=[triton.InferRequestedOutput("OUTPUT1")],
        headers=dict(headers),
    )
    assert [o["name"] for o in only.get_response()["outputs"]] == ["OUTPUT1"]
    np.testing.assert_array_equal(only.as_numpy("OUTPUT1"), a - b)

    for binary in (False, True):
        text = triton.InferInput("TEXT", [3], "BYTES")
        text.set_data_from_numpy(np.array([b"ab", b"", "d\u00e9f".encode()], dtype=object), binary)
        words = client.infer("words", [text], headers=dict(headers))
        assert list(words.as_numpy("UPPER")) == [b"AB", b"", "d\u00e9f".encode().upper()]
        np.testing.assert_array_equal(words.as_numpy("LENGTH"), [2, 0, 4])

    x = triton.InferInput("x", [2, 3], "FP32")
    x.set_data_from_numpy(np.linspace(0, 1, 6, dtype=np.float32).reshape(2, 3))
    doubled = client.infer("double", [x], headers=dict(headers))
    np.testing.assert_allclose(doubled.as_numpy("OUTPUT0"), np.linspace(0, 2, 6).reshape(2, 3))


def test_errors_are_the_protocols(keyed: tuple[Server, dict[str, str]]) -> None:
    """Each refusal raises tritonclient's InferenceServerException with the server's
    status and message: no key, an unknown model or version, a model that takes no
    tensors, an input of the wrong datatype or shape, a missing input, binary data that
    does not fit; nothing is run for any of them."""
    server, headers = keyed
    client = _client(server)

    def refused(call: Callable[[], object]) -> InferenceServerException:
        with pytest.raises(InferenceServerException) as caught:
            call()
        return caught.value

    assert refused(lambda: client.get_model_metadata("add-sub")).status() == "401"
    unknown = refused(lambda: client.get_model_metadata("nope", headers=dict(headers)))
    assert unknown.status() == "404" and "nope" in unknown.message()
    assert (
        refused(lambda: client.get_model_metadata("add-sub", "2", headers=dict(headers))).status()
        == "404"
    )
    assert not client.is_model_ready("nope", headers=dict(headers))

    inputs, _, _ = _add_sub_inputs(True)
    assert refused(lambda: client.infer("add-sub", inputs)).status() == "401"
    plain = refused(lambda: client.infer("echo", inputs, headers=dict(headers)))
    assert plain.status() == "400" and "tensors" in plain.message()

    wrong_type = triton.InferInput("INPUT0", [2, 16], "FP32")
    wrong_type.set_data_from_numpy(np.zeros((2, 16), np.float32))
    bad = refused(lambda: client.infer("add-sub", [wrong_type, inputs[1]], headers=dict(headers)))
    assert bad.status() == "400" and "INT32" in bad.message()

    wrong_shape = triton.InferInput("INPUT0", [2, 8], "INT32")
    wrong_shape.set_data_from_numpy(np.zeros((2, 8), np.int32))
    shaped = refused(
        lambda: client.infer("add-sub", [wrong_shape, inputs[1]], headers=dict(headers))
    )
    assert shaped.status() == "400" and "[-1, 16]" in shaped.message()

    missing = refused(lambda: client.infer("add-sub", [inputs[0]], headers=dict(headers)))
    assert missing.status() == "400" and "INPUT1" in missing.message()

    unknown_out = refused(
        lambda: client.infer(
            "add-sub",
            inputs,
            outputs=[triton.InferRequestedOutput("OUTPUT9")],
            headers=dict(headers),
        )
    )
    assert unknown_out.status() == "400" and "OUTPUT9" in unknown_out.message()

    with server.client() as raw:  # binary data shorter than its declared size
        header = (
            b'{"inputs":[{"name":"x","datatype":"FP32","shape":[4],'
            b'"parameters":{"binary_data_size":16}}]}'
        )
        cut = raw.post(
            "/v2/models/double/infer",
            content=header + b"\x00" * 8,
            headers={**headers, "Inference-Header-Content-Length": str(len(header))},
        )
    assert cut.status_code == 400
    assert cut.json()["code"] == "invalid_tensor" and "binary_data_size" in cut.json()["error"]
