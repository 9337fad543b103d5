"""Identity-provider tokens: TokenVerifier against a local OIDC issuer.

The issuer is real HTTP on 127.0.0.1 (an ephemeral port): its discovery document and
its JWKS, whose keys a test swaps (rotation) and whose answers it can break; each
path's requests are counted. Tokens are minted with PyJWT, or forged by hand where
PyJWT refuses to (``alg: none``, HS256 keyed with the public key). The verifier's
clock (key-set lifespan, refresh cooldown, warning rate) is a fake one; only
``exp``/``nbf`` use the real time, hours away from now.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from pydantic import ValidationError

from freight.access import Principal, Scope
from freight.config import Settings, load_settings
from freight.errors import ConfigError, UnauthorizedError
from freight.identity import (
    _LIFESPAN_S,
    _REFRESH_COOLDOWN_S,
    _RETRY_S,
    _STALE_S,
    _WARN_EVERY_S,
    TokenVerifier,
)

AUDIENCE = "freight-api"
DISCOVERY = "/.well-known/openid-configuration"
JWKS = "/keys"
HOUR = 3600


# -- keys and tokens ------------------------------------------------------------------------


@dataclass(frozen=True)
class Signer:
    kid: str
    alg: str
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

    def jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            data = RSAAlgorithm.to_jwk(public, as_dict=True)
        else:
            data = ECAlgorithm.to_jwk(public, as_dict=True)
        return {**data, "kid": self.kid, "alg": self.alg, "use": "sig"}

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rsa_key() -> Signer:
    return Signer("rsa-1", "RS256", _rsa())


@pytest.fixture(scope="module")
def ec_key() -> Signer:
    return Signer("ec-1", "ES256", ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture(scope="module")
def impostor(rsa_key: Signer) -> Signer:
    """Another RSA key claiming rsa_key's kid."""
    return Signer(rsa_key.kid, "RS256", _rsa())


@pytest.fixture(scope="module")
def rotated() -> Signer:
    return Signer("rsa-2", "RS256", _rsa())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    """A compact JWT of this header and these claims, with this signature."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{_b64(signature)}"


def forge_hs256(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


# -- the issuer -----------------------------------------------------------------------------


class Issuer:
    """A local OIDC issuer: discovery and JWKS on 127.0.0.1, an ephemeral port."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.broken: dict[str, int] = {}  # path -> the status it answers instead
        self.metadata_issuer: str | None = None  # None: its own URL
        self.hits: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.jwks_url = self.url + JWKS
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body = issuer.answer(self.path)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def answer(self, path: str) -> tuple[int, Any]:
        with self._lock:
            self.hits[path] += 1
            if path in self.broken:
                return self.broken[path], {"error": "broken"}
            if path == DISCOVERY:
                issuer = self.url if self.metadata_issuer is None else self.metadata_issuer
                return 200, {"issuer": issuer, "jwks_uri": self.jwks_url}
            if path == JWKS:
                return 200, {"keys": list(self.keys)}
            return 404, {"error": "not found"}

    def reset(self) -> None:
        with self._lock:
            self.keys, self.broken, self.metadata_issuer = [], {}, None
            self.hits.clear()

    def publish(self, *signers: Signer) -> None:
        with self._lock:
            self.keys = [signer.jwk() for signer in signers]

    def claims(self, **changes: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.url,
            "aud": AUDIENCE,
            "sub": "user-42",
            "tenant": "acme",
            "scope": "predict read",
            "iat": now,
            "exp": now + HOUR,
        }
        claims.update(changes)
        return {name: value for name, value in claims.items() if value is not None}

    def token(self, signer: Signer, **changes: Any) -> str:
        return jwt.encode(
            self.claims(**changes),
            signer.private,
            algorithm=signer.alg,
            headers={"kid": signer.kid},
        )

    def start(self) -> Issuer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="module")
def running_issuer() -> Iterator[Issuer]:
    started = Issuer().start()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def issuer(running_issuer: Issuer, rsa_key: Signer, ec_key: Signer) -> Issuer:
    """The module's issuer, as new: the RSA and EC keys published, nothing counted."""
    running_issuer.reset()
    running_issuer.publish(rsa_key, ec_key)
    return running_issuer


@pytest.fixture
def clock() -> Clock:
    return Clock()


def settings_for(issuer: Issuer, **changes: Any) -> Settings:
    values: dict[str, Any] = {
        "oidc_issuer": issuer.url,
        "oidc_audience": AUDIENCE,
        "oidc_jwks_url": issuer.jwks_url,
    }
    values.update(changes)
    return Settings(**values)


def verifier_for(issuer: Issuer, clock: Clock, **changes: Any) -> TokenVerifier:
    verifier = TokenVerifier.from_settings(settings_for(issuer, **changes), clock=clock)
    assert verifier is not None
    return verifier


@pytest.fixture
def verifier(issuer: Issuer, clock: Clock) -> TokenVerifier:
    return verifier_for(issuer, clock)


async def refused(verifier: TokenVerifier, token: str) -> UnauthorizedError:
    """The refusal of ``token``: always the same, and never naming the token or why."""
    with pytest.raises(UnauthorizedError) as caught:
        await verifier.verify(token)
    error = caught.value
    assert (error.code, error.message, error.detail) == (
        "invalid_credentials",
        "invalid credentials",
        {},
    )
    return error


@pytest.fixture(autouse=True)
def _debug_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="freight.identity")


# -- valid tokens ---------------------------------------------------------------------------


async def test_a_valid_token_is_its_tenants_principal(
    issuer: Issuer, verifier: TokenVerifier, rsa_key: Signer
) -> None:
    principal = await verifier.verify(issuer.token(rsa_key, scope="predict read unknown"))
    assert principal == Principal(
        tenant="acme", scopes=frozenset({Scope.PREDICT, Scope.READ}), targets=None, key_id=None
    )
    assert principal.subject == "oidc:user-42"
    assert principal.actor == "oidc:user-42"


async def test_an_es256_token_verifies(
    issuer: Issuer, verifier: TokenVerifier, ec_key: Signer
) -> None:
    principal = await verifier.verify(issuer.token(ec_key, scope="batch"))
    assert (principal.tenant, principal.scopes) == ("acme", frozenset({Scope.BATCH}))


async def test_scopes_and_tenant_from_the_configured_claims(
    issuer: Issuer, clock: Clock, rsa_key: Signer
) -> None:
    verifier = verifier_for(
        issuer, clock, oidc_tenant_claim="https://freight.example/tenant", oidc_scopes_claim="scp"
    )
    token = issuer.token(
        rsa_key,
        tenant=None,
        scope=None,
        scp=["admin", "no-such-scope", "read"],
        **{"https://freight.example/tenant": "team-7"},
    )
    principal = await verifier.verify(token)
    assert principal.tenant == "team-7"
    assert principal.scopes == frozenset({Scope.ADMIN, Scope.READ})


async def test_an_audience_list_naming_freight_verifies(
    issuer: Issuer, verifier: TokenVerifier, rsa_key: Signer
) -> None:
    principal = await verifier.verify(issuer.token(rsa_key, aud=["other-app", AUDIENCE]))
    assert principal.tenant == "acme"


async def test_no_scope_claim_is_no_scope(
    issuer: Issuer, verifier: TokenVerifier, rsa_key: Signer
) -> None:
    principal = await verifier.verify(issuer.token(rsa_key, scope=None))
    assert principal.scopes == frozenset()


async def test_the_leeway_admits_a_token_just_expired(
    issuer: Issuer, clock: Clock, rsa_key: Signer
) -> None:
    token = issuer.token(rsa_key, exp=int(time.time()) - 60)
    await refused(verifier_for(issuer, clock, oidc_leeway_s=0), token)
    lenient = verifier_for(issuer, clock, oidc_leeway_s=HOUR)
    assert (await lenient.verify(token)).tenant == "acme"


# -- refused tokens -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"aud": "another-app"}, id="wrong-audience"),
        pytest.param({"aud": None}, id="no-audience"),
        pytest.param({"iss": "https://elsewhere.example"}, id="wrong-issuer"),
        pytest.param({"exp": int(time.time()) - HOUR}, id="expired"),
        pytest.param({"exp": None}, id="no-expiry"),
        pytest.param({"nbf": int(time.time()) + HOUR}, id="not-yet-valid"),
        pytest.param({"iat": int(time.time()) + HOUR}, id="issued-in-the-future"),
        pytest.param({"tenant": None}, id="no-tenant"),
        pytest.param({"tenant": "Not A Tenant!"}, id="invalid-tenant"),
        pytest.param({"tenant": 7}, id="tenant-not-a-string"),
        pytest.param({"sub": None}, id="no-subject"),
        pytest.param({"scope": {"predict": True}}, id="scope-neither-string-nor-list"),
        pytest.param({"scope": ["read", 1]}, id="scope-list-not-of-strings"),
    ],
)
async def test_a_token_failing_a_check_is_refused(
    issuer: Issuer,
    verifier: TokenVerifier,
    rsa_key: Signer,
    changes: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = issuer.token(rsa_key, **changes)
    error = await refused(verifier, token)
    assert token not in str(error)
    assert token not in caplog.text
    assert "refused" in caplog.text  # why, at debug level


async def test_a_token_signed_by_another_key_with_the_same_kid_is_refused(
    issuer: Issuer, verifier: TokenVerifier, impostor: Signer, caplog: pytest.LogCaptureFixture
) -> None:
    token = issuer.token(impostor)
    await refused(verifier, token)
    assert "InvalidSignatureError" in caplog.text
    assert token not in caplog.text


async def test_an_unsigned_token_is_refused(
    issuer: Issuer, verifier: TokenVerifier, rsa_key: Signer
) -> None:
    for alg in ("none", "None", "NONE"):
        await refused(verifier, forge({"alg": alg, "kid": rsa_key.kid}, issuer.claims()))
    assert issuer.hits[JWKS] == 0  # refused before any key is fetched


async def test_hs256_keyed_with_the_public_key_is_refused(
    issuer: Issuer, verifier: TokenVerifier, rsa_key: Signer
) -> None:
    """Algorithm confusion: the RSA public key (public: it is in the JWKS) as an HMAC
    secret, in its PEM and in its JWKS forms."""
    header = {"alg": "HS256", "typ": "JWT", "kid": rsa_key.kid}
    for secret in (rsa_key.public_pem(), json.dumps(rsa_key.jwk()).encode()):
        await refused(verifier, forge_hs256(header, issuer.claims(), secret))


async def test_an_algorithm_not_the_keys_is_refused(
    issuer: Issuer, verifier: TokenVerifier, rsa_key: Signer, ec_key: Signer
) -> None:
    """An ES256 token naming the RSA key's kid: allowed algorithm, wrong key."""
    token = jwt.encode(issuer.claims(), ec_key.private, algorithm="ES256", headers={"kid": "rsa-1"})
    await refused(verifier, token)
    assert rsa_key.kid == "rsa-1"


async def test_an_algorithm_outside_the_settings_is_refused(
    issuer: Issuer, clock: Clock, ec_key: Signer
) -> None:
    verifier = verifier_for(issuer, clock, oidc_algorithms=["RS256"])
    await refused(verifier, issuer.token(ec_key))


@pytest.mark.parametrize(
    "token", ["", "not-a-jwt", "a.b.c", "e30.e30.", "x" * 20_000], ids=lambda t: t[:12] or "empty"
)
async def test_garbage_is_refused(verifier: TokenVerifier, token: str) -> None:
    await refused(verifier, token)


async def test_a_token_without_kid_is_refused(
    issuer: Issuer, verifier: TokenVerifier, rsa_key: Signer
) -> None:
    await refused(verifier, jwt.encode(issuer.claims(), rsa_key.private, algorithm="RS256"))


# -- keys: discovery, caching, rotation, outages --------------------------------------------


async def test_the_keys_are_discovered_from_the_issuer_metadata(
    issuer: Issuer, clock: Clock, rsa_key: Signer
) -> None:
    verifier = verifier_for(issuer, clock, oidc_jwks_url="")
    for _ in range(3):
        assert (await verifier.verify(issuer.token(rsa_key))).tenant == "acme"
    assert (issuer.hits[DISCOVERY], issuer.hits[JWKS]) == (1, 1)


async def test_metadata_naming_another_issuer_is_refused(
    issuer: Issuer, clock: Clock, rsa_key: Signer, caplog: pytest.LogCaptureFixture
) -> None:
    issuer.metadata_issuer = "https://impostor.example"
    verifier = verifier_for(issuer, clock, oidc_jwks_url="")
    await refused(verifier, issuer.token(rsa_key))
    assert issuer.hits[JWKS] == 0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and DISCOVERY in warnings[0].getMessage()


async def test_the_key_set_is_cached_for_its_lifespan(
    issuer: Issuer, verifier: TokenVerifier, clock: Clock, rsa_key: Signer, ec_key: Signer
) -> None:
    await verifier.verify(issuer.token(rsa_key))
    await verifier.verify(issuer.token(ec_key))
    clock.advance(_LIFESPAN_S - 1)
    await verifier.verify(issuer.token(rsa_key))
    assert issuer.hits[JWKS] == 1
    clock.advance(1)
    await verifier.verify(issuer.token(rsa_key))
    assert issuer.hits[JWKS] == 2


async def test_a_key_added_after_the_set_was_cached_verifies(
    issuer: Issuer,
    verifier: TokenVerifier,
    clock: Clock,
    rsa_key: Signer,
    rotated: Signer,
) -> None:
    """Rotation: the issuer publishes a new key and signs with it; the cached set lacks
    its kid, so the set is fetched again at once."""
    await verifier.verify(issuer.token(rsa_key))
    issuer.publish(rsa_key, rotated)
    principal = await verifier.verify(issuer.token(rotated, sub="after-rotation"))
    assert principal.subject == "oidc:after-rotation"
    assert issuer.hits[JWKS] == 2
    issuer.publish(rotated)  # the old key retired: gone at the next lifespan's fetch
    clock.advance(_LIFESPAN_S)
    await refused(verifier, issuer.token(rsa_key))
    assert (await verifier.verify(issuer.token(rotated))).tenant == "acme"


async def test_unknown_kids_fetch_the_set_at_most_once_per_cooldown(
    issuer: Issuer, verifier: TokenVerifier, clock: Clock, rsa_key: Signer, rotated: Signer
) -> None:
    await verifier.verify(issuer.token(rsa_key))
    for _ in range(5):
        await refused(verifier, issuer.token(rotated))  # published nowhere
    assert issuer.hits[JWKS] == 2
    issuer.publish(rsa_key, rotated)
    await refused(verifier, issuer.token(rotated))  # still cooling down
    assert issuer.hits[JWKS] == 2
    clock.advance(_REFRESH_COOLDOWN_S)
    assert (await verifier.verify(issuer.token(rotated))).tenant == "acme"
    assert issuer.hits[JWKS] == 3


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port bound but not listening: a connection to it is refused, and no other
    process can take it meanwhile."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


async def test_an_unreachable_jwks_refuses_and_warns_once_a_minute(
    issuer: Issuer,
    clock: Clock,
    rsa_key: Signer,
    closed_port: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"http://127.0.0.1:{closed_port}/keys"
    verifier = verifier_for(issuer, clock, oidc_jwks_url=url)
    token = issuer.token(rsa_key)

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    await refused(verifier, token)
    await refused(verifier, token)  # within the retry pause: not even tried
    assert len(warnings()) == 1 and url in warnings()[0]
    clock.advance(_RETRY_S)
    await refused(verifier, token)  # tried again, not warned again
    assert len(warnings()) == 1
    clock.advance(_WARN_EVERY_S)
    await refused(verifier, token)
    assert len(warnings()) == 2 and url in warnings()[1]
    assert token not in caplog.text


async def test_an_unreachable_discovery_refuses(
    issuer: Issuer, clock: Clock, rsa_key: Signer, closed_port: int
) -> None:
    settings = Settings(
        oidc_issuer=f"http://127.0.0.1:{closed_port}", oidc_audience=AUDIENCE, oidc_jwks_url=""
    )
    verifier = TokenVerifier.from_settings(settings, clock=clock)
    assert verifier is not None
    await refused(verifier, issuer.token(rsa_key, iss=settings.oidc_issuer))


async def test_a_failing_jwks_keeps_the_last_keys_for_a_while(
    issuer: Issuer, verifier: TokenVerifier, clock: Clock, rsa_key: Signer
) -> None:
    await verifier.verify(issuer.token(rsa_key))
    issuer.broken[JWKS] = 503
    clock.advance(_LIFESPAN_S)
    assert (await verifier.verify(issuer.token(rsa_key))).tenant == "acme"  # stale, tried
    assert issuer.hits[JWKS] == 2
    clock.advance(_STALE_S)
    await refused(verifier, issuer.token(rsa_key))
    del issuer.broken[JWKS]
    clock.advance(_RETRY_S)
    assert (await verifier.verify(issuer.token(rsa_key))).tenant == "acme"


async def test_a_jwks_without_a_usable_key_refuses(
    issuer: Issuer, verifier: TokenVerifier, rsa_key: Signer
) -> None:
    issuer.keys = [{"kty": "oct", "kid": rsa_key.kid, "k": _b64(b"secret" * 8)}]
    await refused(verifier, forge_hs256({"alg": "HS256", "kid": rsa_key.kid}, {}, b"secret" * 8))
    await refused(verifier, issuer.token(rsa_key))


# -- settings -------------------------------------------------------------------------------


def test_no_issuer_no_verifier() -> None:
    assert TokenVerifier.from_settings(Settings()) is None


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        pytest.param({"oidc_audience": ""}, "oidc_audience", id="issuer-without-audience"),
        pytest.param({"oidc_algorithms": ["RS256", "HS256"]}, "oidc_algorithms", id="hs256"),
        pytest.param({"oidc_algorithms": ["none"]}, "oidc_algorithms", id="none"),
        pytest.param({"oidc_algorithms": []}, "oidc_algorithms", id="no-algorithm"),
        pytest.param({"oidc_issuer": "ftp://idp.example"}, "oidc_issuer", id="issuer-not-http"),
        pytest.param({"oidc_jwks_url": "file:///etc/keys"}, "oidc_jwks_url", id="jwks-file"),
        pytest.param({"oidc_leeway_s": -1}, "oidc_leeway_s", id="negative-leeway"),
    ],
)
def test_wrong_oidc_settings_fail_at_start_up(
    tmp_path: Path, changes: dict[str, Any], field: str
) -> None:
    values: dict[str, Any] = {
        "oidc_issuer": "https://idp.example",
        "oidc_audience": AUDIENCE,
        **changes,
    }
    with pytest.raises(ConfigError, match=field):
        load_settings(tmp_path, **values)
    with pytest.raises(ValidationError):
        Settings(**values)


def test_oidc_settings_from_freight_yaml(tmp_path: Path) -> None:
    (tmp_path / "freight.yaml").write_text(
        "oidc_issuer: https://idp.example/realms/x\n"
        "oidc_audience: freight\n"
        "oidc_scopes_claim: scp\n"
        "oidc_algorithms: [ES256]\n"
    )
    settings = load_settings(tmp_path)
    assert settings.oidc_algorithms == ["ES256"]
    assert settings.oidc_jwks_url == "" and settings.oidc_leeway_s == 30
    verifier = TokenVerifier.from_settings(settings)
    assert verifier is not None
    assert (verifier.issuer, verifier.audience, verifier.scopes_claim) == (
        "https://idp.example/realms/x",
        "freight",
        "scp",
    )
