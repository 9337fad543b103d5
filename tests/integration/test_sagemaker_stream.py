"""SageMaker's ``invoke_endpoint_with_response_stream`` with boto3's own
``sagemaker-runtime`` client, on both shapes: a streaming model's chunks come as
``PayloadPart`` events, in order, each as the model yields it (a model at zero replicas
is waited for); a model that raises after its first chunks ends the stream with
``ModelStreamError`` (botocore's ``EventStreamError``), one that raises before any is
``ModelError``; an endpoint that does not stream answers its whole output as parts.
Requests are signed with a SigV4 pair of the server (an operator key makes every call
authenticate)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, EventStreamError

from freight.access import new_key
from tests.fixtures.server import Server
from tests.project.streaming import fibonacci, told

MODELS = json.dumps(["streaming:Teller", "streaming:Counter", "streaming:Sleeper", "models:Echo"])


def start(make_server: Callable[..., Server], shape: dict[str, str], admin: str) -> Server:
    """The API of the shape: ``serve`` embedded; ``api`` beside a ``worker`` in a cluster."""
    if shape["FREIGHT_SHAPE"] == "cluster":
        make_server(command="worker", FREIGHT_MODELS=MODELS, FREIGHT_ADMIN_KEY=admin)
        return make_server(command="api", FREIGHT_MODELS=MODELS, FREIGHT_ADMIN_KEY=admin)
    return make_server(FREIGHT_MODELS=MODELS, FREIGHT_ADMIN_KEY=admin)


def runtime(server: Server, admin: str) -> Any:
    """boto3's client with a SigV4 pair the operator made for tenant ``acme``."""
    with httpx.Client(base_url=server.url, timeout=30) as ops:
        made = ops.post(
            "/v1/keys",
            json={"tenant": "acme", "sigv4": True},
            headers={"Authorization": f"Bearer {admin}"},
        )
    assert made.status_code == 201, made.text
    pair = made.json()
    return boto3.client(
        "sagemaker-runtime",
        endpoint_url=server.url,
        region_name="eu-west-1",
        aws_access_key_id=pair["access_key_id"],
        aws_secret_access_key=pair["secret_access_key"],
        config=Config(retries={"max_attempts": 1}, read_timeout=120),
    )


def invoke(client: Any, endpoint: str, body: Any) -> dict[str, Any]:
    answer: dict[str, Any] = client.invoke_endpoint_with_response_stream(
        EndpointName=endpoint, Body=json.dumps(body), ContentType="application/json"
    )
    return answer


def parts(answer: dict[str, Any], into: list[bytes] | None = None) -> list[bytes]:
    """The payload of each event, as botocore parses it (kept in ``into`` as it comes)."""
    got = [] if into is None else into
    for event in answer["Body"]:
        got.append(event["PayloadPart"]["Bytes"])
    return got


def test_invoke_endpoint_with_response_stream(
    make_server: Callable[..., Server], shape: dict[str, str]
) -> None:
    """Each chunk one PayloadPart, in order (text, a cold model's, JSON lines); an
    endpoint that does not stream answers its output as parts; a raise after three
    chunks: those three, then botocore's EventStreamError ModelStreamError; a raise
    before any: botocore's ModelError."""
    admin = new_key().token
    server = start(make_server, shape, admin)
    client = runtime(server, admin)

    words = invoke(client, "teller", {"n": 9})
    assert parts(words) == [f"{x} ".encode() for x in fibonacci(9)]
    assert words["ContentType"] == "text/plain"
    assert words["InvokedProductionVariant"] == "AllTraffic"
    assert b"".join(parts(invoke(client, "sleeper", {"n": 6}))) == told(6).encode()
    squares = invoke(client, "counter", {"n": 3})
    assert [json.loads(p) for p in parts(squares)] == [{"i": i, "square": i * i} for i in range(3)]
    assert squares["ContentType"] == "application/jsonlines"
    echoed = invoke(client, "echo", {"x": 1})  # no generator: its output as parts
    assert json.loads(b"".join(parts(echoed))) == {"x": 1}

    seen: list[bytes] = []
    with pytest.raises(EventStreamError) as broken:
        parts(invoke(client, "teller", {"n": 9, "fail_at": 3}), seen)
    assert seen == [f"{x} ".encode() for x in fibonacci(3)]
    assert broken.value.response["Error"]["Code"] == "ModelStreamError"
    assert "told 3 words" in broken.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as refused:
        invoke(client, "teller", {"n": 9, "fail_at": 0})
    assert refused.value.response["Error"]["Code"] == "ModelError"
    assert type(refused.value).__name__ == "ModelError"
