"""Small helpers shared by the integration tests (HTTP against a real server)."""

from __future__ import annotations

from typing import Any

import httpx

TERMINAL = {"succeeded", "failed", "canceled", "expired"}


def create(client: httpx.Client, target: str, input: Any = None, **body: Any) -> dict[str, Any]:
    payload = {"target": target, **body}
    if input is not None:
        payload["input"] = input
    response = client.post("/v1/predictions", json=payload)
    assert response.status_code == 202, response.text
    result: dict[str, Any] = response.json()
    return result


def wait_done(client: httpx.Client, prediction_id: str, timeout_s: float = 60) -> dict[str, Any]:
    """Long-poll until the prediction is terminal (server-side waits, no client sleeps)."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = client.get(f"/v1/predictions/{prediction_id}", params={"wait": 5})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["status"] in TERMINAL:
            return body
    raise AssertionError(f"prediction {prediction_id} not terminal within {timeout_s}s")


def status_of(client: httpx.Client, prediction_id: str) -> str:
    status: str = client.get(f"/v1/predictions/{prediction_id}").json()["status"]
    return status


def error_code(response: httpx.Response) -> str:
    code: str = response.json()["error"]["code"]
    return code
