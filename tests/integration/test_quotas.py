"""Tenants' quotas: each answers 429 with Retry-After at its bound, names it in its
code, leaves no row behind, and refuses nothing below it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.fixtures.server import Server, wait_until
from tests.integration.helpers import error_code
from tests.integration.test_tenancy import as_key, make_key

QUOTAS = {
    "acme": {"max_queued": 3},
    "*": {"max_queued": 5, "models": {"reverse": {"rate": "2/minute"}}},
    "busy": {"max_in_flight": 1},
}


def _keys(server: Server, *tenants: str) -> dict[str, str]:
    with as_key(server, None) as anonymous:
        admin = make_key(anonymous, "ops", "admin")
    with as_key(server, admin) as ops:
        return {t: make_key(ops, t, "predict", "read", "batch") for t in tenants}


def _refused(response: httpx.Response, code: str) -> None:
    assert response.status_code == 429, response.text
    assert error_code(response) == code
    assert 1 <= int(response.headers["Retry-After"]) <= 60


@pytest.mark.parametrize("shape", ["cluster"], indirect=True)
def test_queued_and_rate_quotas(make_server: Callable[..., Server]) -> None:
    """An API without workers: what is created stays queued."""
    server = make_server(
        models=["Echo", "Reverse"], command="api", FREIGHT_TENANTS=json.dumps(QUOTAS)
    )
    keys = _keys(server, "acme", "beta", "gamma")
    with as_key(server, keys["acme"]) as acme:
        replay, ids = {"Idempotency-Key": "first"}, []
        for n in range(3):  # below the bound: every one accepted
            created = acme.post(
                "/v1/predictions",
                json={"target": "echo", "input": n},
                headers=replay if n == 0 else {},
            )
            assert created.status_code == 202, created.text
            ids.append(created.json()["id"])
        refused = acme.post("/v1/predictions", json={"target": "echo", "input": 3})
        _refused(refused, "quota_max_queued")
        assert refused.json()["error"]["detail"]["limit"] == 3
        # a retry of a create that was made is answered with it, at the bound too
        again = acme.post("/v1/predictions", json={"target": "echo", "input": 0}, headers=replay)
        assert again.is_success and again.json()["id"] == ids[0], again.text
        # nothing of the refused create was kept
        assert len(acme.get("/v1/predictions").json()["data"]) == 3
    with as_key(server, keys["beta"]) as beta:  # "*": 5 waiting, reverse at 2 a minute
        def reverse() -> httpx.Response:
            return beta.post(
                "/v1/models/reverse/predict",
                params={"timeout": 0.01},
                content=b"abc",
                headers={"Content-Type": "application/octet-stream"},
            )

        for _ in range(2):
            created = reverse()
            assert created.status_code == 202, created.text
        _refused(reverse(), "quota_rate")
        for n in range(3):  # the rate binds reverse only
            assert beta.post("/v1/predictions", json={"target": "echo", "input": n}).is_success
        _refused(
            beta.post("/v1/predictions", json={"target": "echo", "input": 9}), "quota_max_queued"
        )
        # a batch job adds work for its target too: refused at the bound, nothing kept
        job = beta.post(
            "/v1/batch-jobs", json={"target": "echo", "input": {"upload": ["r.jsonl"]}}
        )
        _refused(job, "quota_max_queued")
        assert beta.get("/v1/batch-jobs").json()["items"] == []
    with as_key(server, keys["gamma"]) as gamma:  # another tenant: its own bounds
        assert gamma.post("/v1/predictions", json={"target": "echo", "input": 1}).is_success


@pytest.mark.parametrize("shape", ["embedded"], indirect=True)
def test_in_flight_quota_holds_the_rest_queued(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    """Past max_in_flight nothing is refused: the tenant's next prediction stays queued,
    saying ``quota``, while another tenant's runs; it runs once the first ends."""
    server = make_server(models=["Hold", "Echo"], FREIGHT_TENANTS=json.dumps(QUOTAS))
    keys = _keys(server, "busy", "gamma")
    with as_key(server, keys["busy"]) as busy, as_key(server, keys["gamma"]) as gamma:
        held = busy.post(
            "/v1/predictions",
            json={"target": "hold", "input": {"pidfile": str(tmp_path / "pid")}},
        )
        assert held.status_code == 202, held.text
        held_id = held.json()["id"]
        wait_until(
            lambda: busy.get(f"/v1/predictions/{held_id}").json()["status"] == "running", 60
        )
        second = busy.post("/v1/predictions", json={"target": "echo", "input": 1})
        assert second.status_code == 202, second.text
        second_id = second.json()["id"]
        # another tenant is not held back by busy's bound
        other = gamma.post("/v1/predictions", json={"target": "echo", "input": 2})
        other_id = other.json()["id"]
        wait_until(
            lambda: gamma.get(f"/v1/predictions/{other_id}").json()["status"] == "succeeded",
            60,
        )
        view = wait_until(
            lambda: (v := busy.get(f"/v1/predictions/{second_id}").json())["waiting_reason"]
            == "quota"
            and v,
            30,
        )
        assert view["status"] == "queued", view
        assert busy.post(f"/v1/predictions/{held_id}/cancel").status_code == 200
        wait_until(
            lambda: busy.get(f"/v1/predictions/{second_id}").json()["status"] == "succeeded",
            30,
        )
