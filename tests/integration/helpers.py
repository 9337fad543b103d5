"""Small helpers shared by the integration tests (HTTP against a real server)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from freight.prediction import Prediction
from freight.store import open_store

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


def stored(env: Mapping[str, str], ids: list[str]) -> dict[str, Prediction]:
    """The rows of ``ids`` read straight from the server's database (it may be down)."""
    url = env.get("FREIGHT_DATABASE_URL") or (
        f"sqlite:///{(Path(env['FREIGHT_STATE_DIR']) / 'freight.db').resolve()}"
    )

    async def read() -> dict[str, Prediction]:
        store = open_store(url)
        await store.open()
        try:
            rows = {i: await store.get(i) for i in ids}
        finally:
            await store.close()
        missing = [i for i, row in rows.items() if row is None]
        assert not missing, f"not in the store: {missing}"
        return {i: row for i, row in rows.items() if row is not None}

    return asyncio.run(read())


def gate_input(directory: Path, tag: int | str) -> dict[str, Any]:
    """The input of the ``gate`` model: it runs until ``directory/open`` exists."""
    return {"dir": str(directory), "tag": str(tag)}


def gate_runs(directory: Path, tag: int | str) -> list[tuple[int, int]]:
    """The ``(runner pid, agent pid)`` of every run of the gate prediction ``tag``."""
    path = directory / f"{tag}.runs"
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [(int(a), int(b)) for a, b in (line.split() for line in lines)]
