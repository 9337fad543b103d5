"""Tenants are isolated on every route, generated from the OpenAPI document.

Tenant A owns a prediction and a batch job; then every operation of the document is
called (1) with no key: 401, (2) with a key lacking the route's scope: 403, (3) with
tenant B's key on A's ids: exactly what an unknown id answers, and B's listings hold
none of A's rows. An operation without the bearer requirement must be one of the
public routes named here, so a new route cannot forget authentication.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import WebhookVerificationError

from freight.access import new_key
from tests.fixtures.server import FREIGHT, PROJECT, Server, free_port, wait_until
from tests.integration.helpers import error_code, wait_done
from tests.integration.test_notifications import FAST_DELIVERY, Receiver, receiver
from tests.unit.test_identity import AUDIENCE, Issuer, Signer, _rsa

__all__ = ["receiver"]  # the fixture, used here too

#: operations anyone may call: probes, the document, presigned routes (their signature
#: is the credential) and a callback step's answers (its signed token is)
PUBLIC = {
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/docs"),
    ("get", "/redoc"),
    ("get", "/openapi.json"),
    ("get", "/docs/oauth2-redirect"),
    ("put", "/v1/predictions/{prediction_id}/input"),
    ("put", "/v1/batch-jobs/{job_id}/input/{name}"),
    ("get", "/v1/objects/{key}"),
    ("post", "/v1/callbacks/{token}/success"),
    ("post", "/v1/callbacks/{token}/failure"),
    ("post", "/v1/callbacks/{token}/heartbeat"),
}
#: path parameters that name a tenant's own rows
OWNED = {"prediction_id", "job_id"}
UNKNOWN_ID = "01900000-0000-7000-8000-000000000000"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@contextmanager
def as_key(server: Server, token: str | None) -> Iterator[httpx.Client]:
    headers = bearer(token) if token else {}
    with httpx.Client(base_url=server.url, timeout=30, headers=headers) as client:
        yield client


def make_key(client: httpx.Client, tenant: str, *scopes: str, **extra: Any) -> str:
    response = client.post("/v1/keys", json={"tenant": tenant, "scopes": list(scopes), **extra})
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    assert token.startswith("frk_")
    return token


def operations(server: Server) -> list[tuple[str, str, dict[str, Any]]]:
    document = httpx.get(f"{server.url}/openapi.json").json()
    return [
        (method, path, op)
        for path, item in document["paths"].items()
        for method, op in item.items()
        if method in ("get", "post", "put", "delete", "patch")
    ]


def fill(path: str, ids: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)(?::path)?\}", lambda m: ids.get(m.group(1), "x"), path)


@pytest.fixture
def tenants(make_server: Callable[..., Server]) -> dict[str, Any]:
    """A server with an admin key, tenants A and B, and A's prediction and batch job."""
    server = make_server(models=["Echo", "Reverse"], FREIGHT_MAX_AUTH_FAILURES="1000")
    with as_key(server, None) as anonymous:  # no key yet: the loopback operator
        admin = make_key(anonymous, "ops", "admin")
    with as_key(server, admin) as ops:
        keys = {
            "admin": admin,
            "a": make_key(ops, "tenant-a", "predict", "read", "batch"),
            "b": make_key(ops, "tenant-b", "predict", "read", "batch", "metrics"),
            "b_metrics_only": make_key(ops, "tenant-b", "metrics"),
            "b_read_only": make_key(ops, "tenant-b", "read"),
        }
    with as_key(server, keys["a"]) as a:
        created = a.post("/v1/predictions", json={"target": "echo", "input": {"x": 1}})
        assert created.status_code == 202, created.text
        prediction = wait_done(a, created.json()["id"])
        job = a.post(
            "/v1/batch-jobs",
            json={"target": "echo", "input": {"upload": ["rows.jsonl"]}},
        )
        assert job.status_code == 202, job.text
    ids = {
        "prediction_id": prediction["id"],
        "job_id": job.json()["id"],
        "name": "echo",
        "key_id": "nosuchkey",
        "key": "x",
    }
    return {"server": server, "keys": keys, "ids": ids}


@pytest.mark.parametrize("shape", ["embedded", "cluster"], indirect=True)
def test_every_route_isolates_tenants(tenants: dict[str, Any]) -> None:
    server, keys, ids = tenants["server"], tenants["keys"], tenants["ids"]
    ops = operations(server)
    unprotected = {
        (m, p) for m, p, op in ops if not op.get("security") and (m, p) not in PUBLIC
    }
    assert unprotected == set(), f"routes without authentication: {sorted(unprotected)}"
    secured = [(m, p, op) for m, p, op in ops if op.get("security")]
    assert len(secured) >= 15, [p for _, p, _ in secured]
    unknown = {name: UNKNOWN_ID for name in OWNED}

    with (
        as_key(server, None) as nobody,
        as_key(server, keys["b"]) as b,
        as_key(server, keys["b_metrics_only"]) as scopeless,
        as_key(server, keys["b_read_only"]) as reader,
    ):
        for method, path, _ in secured:
            url = fill(path, ids)
            answer = nobody.request(method, url)
            assert answer.status_code == 401, (method, path, answer.text)
            assert error_code(answer) == "missing_credentials"
            assert answer.headers["WWW-Authenticate"].startswith("Bearer")

            # the metrics-only key lacks every other scope; the read key lacks `metrics`
            lacking = reader if path == "/metrics" else scopeless
            answer = lacking.request(method, url)
            assert answer.status_code == 403, (method, path, answer.text)
            assert error_code(answer) == "missing_scope", (method, path)

            names = set(re.findall(r"\{(\w+)", path))
            if not names & OWNED:
                continue
            theirs = b.request(method, url)
            none = b.request(method, fill(path, unknown | ids | unknown))
            assert theirs.status_code == none.status_code == 404, (method, path, theirs.text)
            assert error_code(theirs) == error_code(none), (method, path)
            assert theirs.json()["error"]["message"].replace(
                ids["prediction_id"], "?"
            ).replace(ids["job_id"], "?") == none.json()["error"]["message"].replace(
                UNKNOWN_ID, "?"
            ), (method, path)

        # B's listings hold none of A's rows; A's hold them
        for listing in ("/v1/predictions", "/v1/batch-jobs"):
            seen = b.get(listing).json()
            rows = seen.get("data", seen.get("items"))
            assert ids["prediction_id"] not in str(rows) and ids["job_id"] not in str(rows)
        with as_key(server, keys["a"]) as a:
            assert ids["prediction_id"] in str(a.get("/v1/predictions").json()["data"])
            assert ids["job_id"] in str(a.get("/v1/batch-jobs").json()["items"])
    for token in keys.values():  # a key never reaches the logs
        assert token not in server.logs()


@pytest.mark.parametrize("shape", ["embedded"], indirect=True)
def test_objects_idempotency_and_limited_keys_stay_within_the_tenant(
    tenants: dict[str, Any],
) -> None:
    server, keys, ids = tenants["server"], tenants["keys"], tenants["ids"]
    theirs = f"freight://outputs/{ids['prediction_id']}"
    with as_key(server, keys["b"]) as b, as_key(server, keys["a"]) as a:
        # another tenant's output, freight's own spaces, the store's root: refused
        for uri in (theirs, f"freight://inputs/{ids['prediction_id']}", "freight://x.json"):
            refused = b.post("/v1/predictions", json={"target": "echo", "input_uri": uri})
            assert refused.status_code == 403, refused.text
            assert error_code(refused) == "uri_not_allowed"
        job = b.post(
            "/v1/batch-jobs",
            json={"target": "echo", "input": f"freight://batch/{ids['job_id']}/input/"},
        )
        assert job.status_code == 403 and error_code(job) == "uri_not_allowed", job.text
        job = b.post(
            "/v1/batch-jobs",
            json={
                "target": "echo",
                "input": {"upload": ["r.jsonl"]},
                "output": "freight://tenants/tenant-a/out/",
            },
        )
        assert job.status_code == 403 and error_code(job) == "uri_not_allowed", job.text
        # a tenant chains its own output into a new prediction
        chained = a.post("/v1/predictions", json={"target": "echo", "input_uri": theirs})
        assert chained.status_code == 202, chained.text
        # the same idempotency key in two tenants: two predictions, no conflict
        body = {"target": "echo", "input": {"n": 1}}
        first = a.post("/v1/predictions", json=body, headers={"Idempotency-Key": "k1"})
        other = b.post(
            "/v1/predictions", json={**body, "input": {"n": 2}}, headers={"Idempotency-Key": "k1"}
        )
        assert first.status_code == other.status_code == 202, other.text
        assert first.json()["id"] != other.json()["id"]
    with as_key(server, keys["admin"]) as ops:
        limited = make_key(ops, "tenant-a", "predict", "read", models=["reverse"])
    with as_key(server, limited) as narrow:
        refused = narrow.post("/v1/predictions", json={"target": "echo", "input": 1})
        assert refused.status_code == 403 and error_code(refused) == "target_not_allowed"
        # tenant A's echo prediction is not this key's to see
        assert narrow.get(f"/v1/predictions/{ids['prediction_id']}").status_code == 404
        assert [m["name"] for m in narrow.get("/v1/models").json()["data"]] == ["reverse"]


@pytest.mark.parametrize("shape", ["embedded"], indirect=True)
def test_revoked_expired_and_guessed_keys_are_refused(
    make_server: Callable[..., Server],
) -> None:
    server = make_server(models=["Echo"], FREIGHT_MAX_AUTH_FAILURES="3")
    with as_key(server, None) as anonymous:
        admin = make_key(anonymous, "ops", "admin")
        # from now on a key is needed
        assert anonymous.get("/v1/predictions").status_code == 401
    with as_key(server, admin) as ops:
        user = make_key(ops, "acme", "read")
        key_id = user.split("_")[1]
        with as_key(server, user) as client:
            assert client.get("/v1/predictions").status_code == 200
        revoked = ops.post(f"/v1/keys/{key_id}/revoke")
        assert revoked.status_code == 200 and revoked.json()["revoked_at"], revoked.text
        assert "token" not in revoked.json()
        listed = ops.get("/v1/keys").json()["data"]
        assert {k["id"] for k in listed} >= {key_id} and all("token" not in k for k in listed)
        audit = ops.get("/v1/audit").json()["data"]
        assert [e["action"] for e in audit][:2] == ["key.revoke", "key.create"]
        assert audit[0]["subject"] == key_id and user not in str(audit)
    with as_key(server, user) as client:
        answer = client.get("/v1/predictions")
        assert answer.status_code == 401 and error_code(answer) == "invalid_credentials"
    # a guessed key (well formed, unknown) and garbage: 401 alike, then 429 per address
    guessed = "frk_aaaaaaaaaaaa_" + "A" * 43
    with as_key(server, guessed) as client:
        answer = client.get("/v1/predictions")
        assert answer.status_code == 401 and error_code(answer) == "invalid_credentials"
        assert guessed not in answer.text
    with as_key(server, "garbage") as client:
        assert client.get("/v1/predictions").status_code == 401
        limited = client.get("/v1/predictions")
        assert limited.status_code == 429, limited.text
        assert error_code(limited) == "too_many_auth_failures"
        assert int(limited.headers["Retry-After"]) >= 1
    for token in (admin, user, guessed):
        assert token not in server.logs()


@pytest.mark.parametrize("shape", ["cluster"], indirect=True)
def test_a_revoked_key_is_refused_by_every_api_process(
    make_server: Callable[..., Server],
) -> None:
    """Two API processes on one database: a key revoked through one stops working on
    the other within key_cache_s."""
    first = make_server(models=["Echo"], command="api", FREIGHT_KEY_CACHE_S="1")
    second = make_server(models=["Echo"], command="api", FREIGHT_KEY_CACHE_S="1")
    with as_key(first, None) as anonymous:
        admin = make_key(anonymous, "ops", "admin")
    with as_key(first, admin) as ops:
        user = make_key(ops, "acme", "read")
    with as_key(second, user) as other:
        wait_until(lambda: other.get("/v1/predictions").status_code == 200, 10)
        with as_key(first, admin) as ops:
            assert ops.post(f"/v1/keys/{user.split('_')[1]}/revoke").status_code == 200
        wait_until(lambda: other.get("/v1/predictions").status_code == 401, 10)


@pytest.mark.parametrize("shape", ["embedded"], indirect=True)
def test_a_server_on_a_public_address_needs_keys_or_an_explicit_opt_out(
    make_server: Callable[..., Server], shape: dict[str, str]
) -> None:
    env = {**shape, "FREIGHT_MODELS": '["models:Echo"]', "FREIGHT_HOST": "0.0.0.0"}
    refused = subprocess.run(
        [*FREIGHT, "serve", str(PROJECT), "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "refusing to serve 0.0.0.0 without API keys" in refused.stderr
    opted = make_server(
        models=["Echo"], FREIGHT_HOST="0.0.0.0", FREIGHT_ALLOW_UNAUTHENTICATED="1"
    )
    assert "no API key configured" in opted.logs()
    with as_key(opted, None) as client:
        assert client.get("/v1/predictions").status_code == 200
    # the operator's admin key from the environment: registered at start
    token = new_key().token
    keyed = make_server(models=["Echo"], FREIGHT_HOST="0.0.0.0", FREIGHT_ADMIN_KEY=token)
    with as_key(keyed, None) as nobody:
        assert nobody.get("/v1/predictions").status_code == 401
    with as_key(keyed, token) as ops:
        assert ops.get("/v1/keys").json()["data"][0]["name"] == "admin_key"
    assert token not in keyed.logs()


@pytest.mark.parametrize("shape", ["embedded"], indirect=True)
def test_each_tenant_signs_its_webhooks_with_its_own_secret(
    make_server: Callable[..., Server], receiver: Receiver
) -> None:
    """A's receiver verifies A's events with A's secret; B's secret verifies none of
    them (and so cannot forge them); a rotation is audited."""
    server = make_server(models=["Echo"], **FAST_DELIVERY)
    with as_key(server, None) as anonymous:
        admin = make_key(anonymous, "ops", "admin")
    with as_key(server, admin) as ops:
        a_key = make_key(ops, "tenant-a", "predict", "read")
        b_key = make_key(ops, "tenant-b", "read")
    secrets = {}
    for name, token in (("a", a_key), ("b", b_key)):
        with as_key(server, token) as client:
            answer = client.get("/v1/webhooks/secret")
            assert answer.status_code == 200, answer.text
            secrets[name] = answer.json()["secret"]
            assert client.get("/v1/webhooks/secret", params={"tenant": "ops"}).status_code == 403
    assert secrets["a"] != secrets["b"]
    with as_key(server, a_key) as a:
        created = a.post(
            "/v1/predictions",
            json={"target": "echo", "input": 1, "webhook": {"url": receiver.url}},
        )
        assert created.status_code == 202, created.text
    got = wait_until(lambda: receiver.accepted(secrets["a"]), 60)
    assert got[0]["data"]["id"] == created.json()["id"]
    with pytest.raises(WebhookVerificationError):
        receiver.accepted(secrets["b"])
    with as_key(server, admin) as ops:
        rotated = ops.post("/v1/webhooks/secret/rotate", params={"tenant": "tenant-a"})
        assert rotated.status_code == 200 and rotated.json()["secret"] != secrets["a"]
        audit = ops.get("/v1/audit", params={"tenant": "tenant-a"}).json()["data"]
        assert audit[0]["action"] == "webhook_secret.rotate"
        assert secrets["a"] not in str(audit) and rotated.json()["secret"] not in str(audit)
    assert secrets["a"] not in server.logs()


@pytest.mark.parametrize("shape", ["embedded"], indirect=True)
def test_identity_provider_tokens_authenticate_as_their_tenant(
    make_server: Callable[..., Server],
) -> None:
    """A JWT of the configured issuer acts as the tenant and scopes its claims name;
    any other token is refused; with an issuer configured, no call goes unauthenticated."""
    signer = Signer("k1", "RS256", _rsa())
    issuer = Issuer().start()
    try:
        issuer.publish(signer)
        server = make_server(
            models=["Echo"],
            FREIGHT_OIDC_ISSUER=issuer.url,
            FREIGHT_OIDC_AUDIENCE=AUDIENCE,
        )
        with as_key(server, None) as nobody:
            assert nobody.get("/v1/predictions").status_code == 401
        token = issuer.token(signer, tenant="acme", scope="predict read")
        with as_key(server, token) as acme:
            created = acme.post("/v1/predictions", json={"target": "echo", "input": 1})
            assert created.status_code == 202, created.text
            assert wait_done(acme, created.json()["id"])["status"] == "succeeded"
            assert acme.post("/v1/batch-jobs", json={}).status_code == 403  # no batch scope
        other = issuer.token(signer, tenant="globex", scope="read")
        with as_key(server, other) as globex:
            assert globex.get(f"/v1/predictions/{created.json()['id']}").status_code == 404
        stranger = Signer("k1", "RS256", _rsa())  # same kid, another key
        with as_key(server, issuer.token(stranger)) as forged:
            assert forged.get("/v1/predictions").status_code == 401
        assert token not in server.logs()
    finally:
        issuer.stop()


@pytest.mark.parametrize("shape", ["embedded", "cluster"], indirect=True)
def test_the_sdk_sends_its_key_to_the_server_only(
    make_server: Callable[..., Server], tmp_path: Any
) -> None:
    """Client(api_key=...) (or $FREIGHT_API_KEY) authenticates every call, uploads to
    the presigned URL and downloads the output (S3's own presigned URLs in the cluster
    shape: a bearer header there would be refused)."""
    from freight.client import Client

    server = make_server(models=["Reverse"])
    with as_key(server, None) as anonymous:
        admin = make_key(anonymous, "ops", "admin")
    with as_key(server, admin) as ops:
        token = make_key(ops, "acme", "predict", "read")
    source = tmp_path / "in.bin"
    source.write_bytes(b"x" * 300_000 + b"tail")  # over the inline limit: stored objects
    with Client(server.url, api_key=token) as client:
        prediction = client.predict("reverse", file=source)
        out = prediction.download(tmp_path / "out.bin", timeout=60)
    assert out.read_bytes() == (b"x" * 300_000 + b"tail")[::-1]
    with Client(server.url) as keyless, pytest.raises(Exception) as raised:
        keyless.get(prediction.id)
    assert "missing_credentials" in str(raised.value)
