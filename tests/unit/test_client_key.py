"""The SDK's key goes to the server's origin only, never to a presigned URL elsewhere."""

from __future__ import annotations

import httpx
import pytest

from freight.client import Client
from freight.client._protocol import key_headers, same_origin

BASE = "http://127.0.0.1:8000"


@pytest.mark.parametrize(
    ("url", "sent"),
    [
        ("/v1/predictions", True),
        ("http://127.0.0.1:8000/v1/objects/x?sig=1", True),
        ("http://127.0.0.1:9000/bucket/key?X-Amz-Signature=1", False),
        ("https://127.0.0.1:8000/v1/predictions", False),
        ("http://localhost:8000/v1/predictions", False),
        ("http://s3.amazonaws.com/bucket/key", False),
    ],
)
def test_the_key_goes_to_the_server_only(url: str, sent: bool) -> None:
    assert same_origin(url, BASE) is sent
    assert bool(key_headers("frk_k", url, BASE)) is sent
    assert key_headers(None, url, BASE) == {}


def test_client_sends_the_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"data": []})

    monkeypatch.setenv("FREIGHT_API_KEY", "frk_from_env")
    with Client(BASE, transport=httpx.MockTransport(answer)) as client:
        client.models()
    assert seen[0].headers["Authorization"] == "Bearer frk_from_env"
    assert "frk_from_env" not in repr(client.__dict__)
