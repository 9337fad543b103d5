"""Identity-provider tokens: an OIDC issuer's signed JWTs as an alternative to API keys.

:class:`TokenVerifier` turns a bearer token into a :class:`~freight.access.Principal`:
the signature is checked against the issuer's published keys (its JWKS, found through
``<issuer>/.well-known/openid-configuration`` unless ``oidc_jwks_url`` names it), then
the issuer, the audience, ``exp`` / ``nbf`` / ``iat`` (with ``oidc_leeway_s``), and the
tenant and scope claims.

Every refusal is the same ``401 invalid_credentials``: which check failed is logged at
debug level (never the token) and never told to the caller. An issuer that cannot be
reached refuses too, with a warning at most once a minute naming the URL.

The keys are kept ``_LIFESPAN_S``; a token naming a key id the set lacks (the issuer
rotated its keys) makes the set be fetched again, at most once per
``_REFRESH_COOLDOWN_S``, so made-up key ids cannot drive traffic to the issuer. While
the issuer cannot be reached, the keys last fetched keep verifying for
``_STALE_S`` more.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
from jwt import PyJWK, PyJWKClient

from freight.access import Principal, Scope, valid_tenant
from freight.config import OIDC_ALGORITHMS, Settings
from freight.errors import UnauthorizedError

log = logging.getLogger("freight.identity")

#: how long a fetched key set is used before it is fetched again
_LIFESPAN_S = 300.0
#: unknown key ids fetch the set again at most this often
_REFRESH_COOLDOWN_S = 30.0
#: after a failed fetch, none is tried again for this long (refusals meanwhile are fast)
_RETRY_S = 5.0
#: how long past its lifespan a key set still verifies while the issuer is unreachable
_STALE_S = 3600.0
#: an unreachable issuer is warned about at most this often
_WARN_EVERY_S = 60.0
_HTTP_TIMEOUT_S = 5.0
#: longer bearer tokens are refused unread
_MAX_TOKEN_CHARS = 16 * 1024
_SCOPES = {scope.value: scope for scope in Scope}


class _Refused(Exception):
    """Why a token is refused: logged at debug level, never told to the caller."""


class _Unreachable(Exception):
    """The issuer's discovery document or key set could not be had (and why)."""


@dataclass
class _Keys:
    """The issuer's signing keys by id, and the times of the fetches behind them."""

    by_id: dict[str, PyJWK] = field(default_factory=dict)
    fetched_at: float | None = None  # the last successful fetch
    retry_at: float = float("-inf")  # no fetch before this (one just failed)
    refresh_at: float = float("-inf")  # no fetch for an unknown key id before this


class TokenVerifier:
    """Verifies one OIDC issuer's JWTs. Build it with :meth:`from_settings`."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        jwks_url: str = "",
        tenant_claim: str = "tenant",
        scopes_claim: str = "scope",
        algorithms: list[str] | tuple[str, ...] = ("RS256", "ES256"),
        leeway_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        wrong = set(algorithms) - OIDC_ALGORITHMS
        if wrong or not algorithms or not issuer or not audience:
            raise ValueError("an issuer, an audience and public-key algorithms only")
        self.issuer = issuer
        self.audience = audience
        self.tenant_claim = tenant_claim
        self.scopes_claim = scopes_claim
        self.algorithms = frozenset(algorithms)
        self.leeway_s = leeway_s
        self._clock = clock
        self._jwks_url = jwks_url
        self._client: PyJWKClient | None = None
        self._keys = _Keys()
        self._lock = asyncio.Lock()
        self._warned_at = float("-inf")

    @classmethod
    def from_settings(
        cls, settings: Settings, *, clock: Callable[[], float] = time.monotonic
    ) -> TokenVerifier | None:
        """The verifier the settings configure; None when ``oidc_issuer`` is empty."""
        if not settings.oidc_issuer:
            return None
        return cls(
            issuer=settings.oidc_issuer,
            audience=settings.oidc_audience,
            jwks_url=settings.oidc_jwks_url,
            tenant_claim=settings.oidc_tenant_claim,
            scopes_claim=settings.oidc_scopes_claim,
            algorithms=settings.oidc_algorithms,
            leeway_s=settings.oidc_leeway_s,
            clock=clock,
        )

    async def verify(self, token: str) -> Principal:
        """The caller a token names; UnauthorizedError (``invalid_credentials``) for any
        token that is not one of the issuer's, valid now, for this audience."""
        try:
            return await self._verify(token)
        except _Refused as exc:
            log.debug("identity token refused: %s", exc)
        except jwt.PyJWTError as exc:
            log.debug("identity token refused: %s: %s", type(exc).__name__, exc)
        except (ValueError, TypeError, KeyError) as exc:  # input no check foresaw: still 401
            log.debug("identity token refused: %s", type(exc).__name__)
        raise UnauthorizedError("invalid credentials", code="invalid_credentials")

    async def _verify(self, token: str) -> Principal:
        if len(token) > _MAX_TOKEN_CHARS:
            raise _Refused("token too long")
        header = jwt.get_unverified_header(token)
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in self.algorithms:  # "none", HS256, ...
            raise _Refused(f"algorithm {str(alg)[:16]!r} not allowed")
        if not isinstance(kid, str) or not kid:
            raise _Refused("no key id")
        key = await self._key(kid)
        if key.algorithm_name != alg:  # an RSA key never verifies an HMAC, say
            raise _Refused(f"algorithm {alg} is not key {kid[:64]!r}'s")
        claims: dict[str, Any] = jwt.decode(
            token,
            key=key.key,  # its algorithm is checked above, whatever the PyJWT version
            algorithms=[alg],
            audience=self.audience,
            issuer=self.issuer,
            leeway=self.leeway_s,
            options={
                "require": ["exp", "iss", "aud", "sub", self.tenant_claim],
                "enforce_minimum_key_length": True,
            },
        )
        return self._principal(claims)

    def _principal(self, claims: dict[str, Any]) -> Principal:
        tenant, subject = claims[self.tenant_claim], claims["sub"]
        if not isinstance(tenant, str) or not valid_tenant(tenant):
            raise _Refused(f"claim {self.tenant_claim!r} is no tenant name")
        if not isinstance(subject, str) or not subject:
            raise _Refused("claim 'sub' is no string")
        granted = claims.get(self.scopes_claim, [])
        if isinstance(granted, str):
            granted = granted.split()
        if not isinstance(granted, list) or not all(isinstance(n, str) for n in granted):
            raise _Refused(f"claim {self.scopes_claim!r} is neither a string nor a list")
        return Principal(
            tenant=tenant,
            scopes=frozenset(_SCOPES[name] for name in granted if name in _SCOPES),
            targets=None,
            key_id=None,
            subject=f"oidc:{subject}",
        )

    # -- keys ------------------------------------------------------------------------------

    async def _key(self, kid: str) -> PyJWK:
        """The issuer's key ``kid``: from the set in hand while it is fresh, else after
        fetching the set again (one fetch at a time; those waiting use its result)."""
        if (key := self._fresh(kid)) is not None:
            return key
        async with self._lock:
            if (key := self._fresh(kid)) is not None:  # fetched while this waited
                return key
            now, keys = self._clock(), self._keys
            known = keys.by_id.get(kid)
            if now < keys.retry_at:  # a fetch failed a moment ago
                return self._stale(known, now)
            if known is None and keys.fetched_at is not None and self._age(now) < _LIFESPAN_S:
                if now < keys.refresh_at:
                    raise _Refused(f"unknown key id {kid[:64]!r} (set fetched again recently)")
                keys.refresh_at = now + _REFRESH_COOLDOWN_S
            try:
                await self._fetch()
            except _Unreachable as exc:
                keys.retry_at = now + _RETRY_S
                self._warn(str(exc), now)
                return self._stale(known, now)
            found = keys.by_id.get(kid)
            if found is None:
                raise _Refused(f"unknown key id {kid[:64]!r}")
            return found

    def _age(self, now: float) -> float:
        fetched = self._keys.fetched_at
        return float("inf") if fetched is None else now - fetched

    def _fresh(self, kid: str) -> PyJWK | None:
        key = self._keys.by_id.get(kid)
        return key if key is not None and self._age(self._clock()) < _LIFESPAN_S else None

    def _stale(self, key: PyJWK | None, now: float) -> PyJWK:
        """A key of the last set fetched while the issuer cannot be reached."""
        if key is None or self._age(now) >= _LIFESPAN_S + _STALE_S:
            raise _Refused("the issuer's keys cannot be fetched")
        return key

    async def _fetch(self) -> None:
        client = await self._jwks_client()
        try:
            fetched = await asyncio.to_thread(client.get_jwk_set, True)
        except jwt.PyJWTError as exc:  # unreachable, not JSON, no usable key
            raise _Unreachable(f"{client.uri}: {exc}") from exc
        usable = {
            key.key_id: key
            for key in fetched.keys
            if key.key_id
            and key.public_key_use in ("sig", None)
            and key.algorithm_name in self.algorithms
        }
        if not usable:
            raise _Unreachable(f"{client.uri}: no signing key for {sorted(self.algorithms)}")
        self._keys.by_id = usable
        self._keys.fetched_at = self._clock()

    async def _jwks_client(self) -> PyJWKClient:
        if self._client is None:
            url = self._jwks_url or await self._discover()
            try:
                # the set is cached here (_Keys), with this module's clock
                self._client = PyJWKClient(url, cache_jwk_set=False, timeout=_HTTP_TIMEOUT_S)
            except jwt.PyJWTError as exc:  # a jwks_uri that is not http(s)
                raise _Unreachable(f"{url}: {exc}") from exc
        return self._client

    async def _discover(self) -> str:
        """The ``jwks_uri`` of the issuer's OpenID Provider metadata."""
        url = f"{self.issuer.rstrip('/')}/.well-known/openid-configuration"
        try:
            async with httpx.AsyncClient(timeout=_HTTP_TIMEOUT_S) as http:
                response = await http.get(url, headers={"Accept": "application/json"})
                response.raise_for_status()
                metadata = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise _Unreachable(f"{url}: {exc}") from exc
        if not isinstance(metadata, dict) or not isinstance(metadata.get("jwks_uri"), str):
            raise _Unreachable(f"{url}: no jwks_uri")
        if metadata.get("issuer") != self.issuer:  # OpenID Connect Discovery 1.0, 4.3
            raise _Unreachable(f"{url}: names issuer {metadata.get('issuer')!r}")
        return str(metadata["jwks_uri"])

    def _warn(self, reason: str, now: float) -> None:
        if now - self._warned_at >= _WARN_EVERY_S:
            self._warned_at = now
            log.warning("identity provider's keys unavailable, tokens refused: %s", reason)
        else:
            log.debug("identity provider's keys unavailable: %s", reason)


__all__ = ["TokenVerifier"]
