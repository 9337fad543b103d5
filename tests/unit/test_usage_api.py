"""``GET /v1/usage`` over a real store, through the SDK and the CLI.

The route is mounted on an app of its own here (with the error handlers): the
caller is the route's dependency, overridden per test, or the anonymous caller of
a server without keys.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from typer.testing import CliRunner

from freight.access import Principal, Scope
from freight.api import errors as api_errors
from freight.api.routes import usage as usage_route
from freight.cli import _base, app
from freight.client import AsyncClient, Client
from freight.ledger import UsageLine
from freight.store import usage
from freight.store.memory import MemoryStore
from freight.usage import UsageService

H = 1_000 * 3600.0  # 1970-02-11T16:00:00Z
BASE = UsageLine(H, "acme", "m", "model", "succeeded", 2, 1.5, 3.0, 4.0, 0.5, 200, 20)
LINES = [
    BASE,
    dataclasses.replace(BASE, status="failed", count=1, compute_s=0.5, gpu_s=1.0),
    dataclasses.replace(BASE, target="n"),
    dataclasses.replace(BASE, tenant="other"),
    dataclasses.replace(BASE, hour=H + 3600),
]
WINDOW = {"from": str(int(H)), "to": str(int(H + 7200))}


@pytest.fixture
async def api() -> AsyncIterator[FastAPI]:
    store = MemoryStore()
    await store.open()
    await store.execute(lambda: usage.append(LINES))
    application = FastAPI()
    api_errors.install(application)
    application.include_router(usage_route.router)
    application.state.usage = UsageService(store)
    try:
        yield application
    finally:
        await store.close()


def as_(application: FastAPI, who: Principal) -> None:
    application.dependency_overrides[usage_route.viewer] = lambda: who


async def get(application: FastAPI, **params: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.get("/v1/usage", params=params)


def counts(response: httpx.Response, *keys: str) -> dict[tuple[Any, ...], int]:
    assert response.status_code == 200, response.text
    return {tuple(d[k] for k in keys): d["count"] for d in response.json()["data"]}


async def test_the_default_report_is_per_tenant_and_target(api: FastAPI) -> None:
    """A server without keys answers anyone with every tenant's usage, per tenant and
    target, over whole hours; times in and out as ISO 8601."""
    response = await get(api, **WINDOW)
    assert counts(response, "tenant", "target") == {
        ("acme", "m"): 5,
        ("acme", "n"): 2,
        ("other", "m"): 2,
    }
    body = response.json()
    assert (body["from"], body["to"]) == ("1970-02-11T16:00:00+00:00", "1970-02-11T18:00:00+00:00")
    assert body["group_by"] == ["tenant", "target"]
    first = body["data"][0]
    assert first["compute_s"] == 3.5 and first["hour"] is None and first["status"] is None
    iso = await get(api, **{"from": "1970-02-11T16:30:00Z", "to": "1970-02-11T17:00:00"})
    assert counts(iso, "tenant", "target") == {
        ("acme", "m"): 3,
        ("acme", "n"): 2,
        ("other", "m"): 2,
    }


async def test_any_groups_and_none(api: FastAPI) -> None:
    """group_by takes any of the keys (model is the target); empty gives the total."""
    by_hour = await get(api, **WINDOW, group_by="hour, status")
    assert counts(by_hour, "hour", "status") == {
        ("1970-02-11T16:00:00+00:00", "failed"): 1,
        ("1970-02-11T16:00:00+00:00", "succeeded"): 6,
        ("1970-02-11T17:00:00+00:00", "succeeded"): 2,
    }
    assert counts(await get(api, **WINDOW, group_by="model"), "target") == {("m",): 7, ("n",): 2}
    assert counts(await get(api, **WINDOW, group_by=""), "tenant") == {(None,): 9}


async def test_a_caller_sees_its_own_tenant(api: FastAPI) -> None:
    """A key without admin sees its tenant's usage (of its models, if limited); asking
    for another tenant is 403; an admin sees every tenant, or the one it names."""
    reader = Principal(tenant="acme", scopes=frozenset({Scope.READ}))
    as_(api, reader)
    assert counts(await get(api, **WINDOW), "tenant", "target") == {
        ("acme", "m"): 5,
        ("acme", "n"): 2,
    }
    refused = await get(api, **WINDOW, tenant="other")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "missing_scope"
    as_(api, dataclasses.replace(reader, targets=frozenset({"n"})))
    assert counts(await get(api, **WINDOW), "tenant", "target") == {("acme", "n"): 2}
    as_(api, Principal(tenant="ops", scopes=frozenset({Scope.ADMIN})))
    assert counts(await get(api, **WINDOW, tenant="other"), "tenant") == {("other",): 2}
    assert counts(await get(api, **WINDOW, group_by="tenant"), "tenant") == {
        ("acme",): 7,
        ("other",): 2,
    }


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"group_by": "cost"}, 422),
        ({"from": "yesterday"}, 422),
        ({"to": "nan"}, 422),
        ({"from": str(int(H + 7200)), "to": str(int(H))}, 422),
    ],
)
async def test_what_is_refused(api: FastAPI, params: dict[str, str], status: int) -> None:
    """An unknown group, a time that is neither epoch seconds nor ISO 8601, and a window
    that ends before it starts are refused."""
    assert (await get(api, **params)).status_code == status


async def test_the_sdk_reads_the_report(api: FastAPI) -> None:
    """client.usage sends the window and groups and hands back typed lines."""
    transport = httpx.ASGITransport(app=api)
    async with AsyncClient("http://t", transport=transport) as client:
        lines = await client.usage(
            start=datetime.fromtimestamp(H, UTC),
            end=H + 3600,
            group_by=["tenant", "hour"],
            tenant="acme",
        )
    assert [(u.tenant, u.hour, u.count) for u in lines] == [
        ("acme", datetime.fromtimestamp(H, UTC), 5)
    ]
    assert lines[0].compute_s == 3.5 and lines[0].target is None
    with pytest.raises(ValueError, match="sequence"):
        await AsyncClient("http://t", transport=transport).usage(group_by="tenant")


def test_the_cli_prints_a_table_or_csv(monkeypatch: pytest.MonkeyPatch) -> None:
    """freight usage asks for the window and groups given and prints a table with a
    total, or CSV."""
    body = {
        "from": "1970-02-11T16:00:00+00:00",
        "to": "1970-02-11T17:00:00+00:00",
        "group_by": ["tenant", "target"],
        "data": [
            {"tenant": "acme", "target": "m", "count": 5, "compute_s": 3.5, "bytes_in": 500},
            {"tenant": "other", "target": "m", "count": 2, "compute_s": 1.5, "bytes_in": 200},
        ],
    }
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=body)

    def client(url: str | None) -> Client:
        return Client(url or "http://t", transport=httpx.MockTransport(answer))

    monkeypatch.setattr(_base, "client_factory", client)
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()
    result = runner.invoke(app, ["usage", "--from", "2026-01-01", "--group-by", "tenant,model"])
    assert result.exit_code == 0, result.output
    assert dict(seen[0].url.params) == {"from": "2026-01-01", "group_by": "tenant,target"}
    shown = [line.replace("│", " ").split() for line in result.stdout.splitlines()]
    rows = [cells for cells in shown if cells[:1] in (["acme"], ["total"])]
    assert rows[0][:4] == ["acme", "m", "5", "3.500"]
    assert rows[1][:3] == ["total", "7", "5.000"]
    result = runner.invoke(app, ["usage", "--csv", "--group-by", "tenant"])
    assert result.exit_code == 0, result.output
    table = list(csv.reader(io.StringIO(result.stdout)))
    assert table[0][:3] == ["tenant", "count", "compute_s"]
    assert table[1][:3] == ["acme", "5", "3.5"]
    refused = runner.invoke(app, ["usage", "--group-by", "cost"])
    assert refused.exit_code == 2
