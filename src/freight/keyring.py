"""Who is calling, and what keys exist: authentication, keys, the audit log.

:class:`Keyring` turns a bearer credential into a :class:`~freight.access.Principal`:
an API key (``frk_…``: looked up by its public id, compared by hash) or, when an
identity provider is configured, a JWT (:mod:`freight.identity`). What it reads is
cached for ``cache_s`` (2 s by default) per process: a revoked key stops working
within that time on every API process, and a request costs no query while its
key is cached.

Keys are created, listed and revoked here, each change with its audit line in the
same transaction. Failed authentications are counted per source address: past
``max_failures`` within a minute the address gets ``429 too_many_auth_failures``.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from freight.access import (
    ALL_SCOPES,
    KEY_PREFIX,
    MAX_KEY_LIFETIME_S,
    ApiKey,
    AuditEntry,
    Principal,
    Scope,
    hash_key,
    key_id_of,
    matches,
    new_key,
    valid_tenant,
)
from freight.errors import (
    ConfigError,
    ForbiddenError,
    InvalidRequestError,
    NotFoundError,
    QuotaExceededError,
    UnauthorizedError,
)
from freight.notify.signing import WebhookSecrets
from freight.sigv4 import Sealer, SignedRequest
from freight.store import tenancy

if TYPE_CHECKING:
    from freight.identity import TokenVerifier
    from freight.store.base import Store

log = logging.getLogger("freight.keyring")

FAILURE_WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class _Cached:
    key: ApiKey | None
    at: float


class Keyring:
    def __init__(
        self,
        store: Store,
        *,
        verifier: TokenVerifier | None = None,
        cache_s: float = 2.0,
        max_failures: int = 20,
        clock: Callable[[], float] = time.time,
        sealer: Sealer | None = None,
    ) -> None:
        """``sealer``: seals and opens SigV4 secrets (without one, no SigV4 pair can be
        made, and a signed request is refused as unknown)."""
        self._store = store
        self._sealer = sealer
        self._verifier = verifier
        self._cache_s = cache_s
        self._max_failures = max_failures
        self._clock = clock
        self._keys: dict[str, _Cached] = {}
        self._secrets: dict[str, tuple[str, str]] = {}  # a pair's id: (sealed, opened)
        self._required: tuple[bool, float] | None = None
        self._failures: dict[str, deque[float]] = {}

    # -- authentication ----------------------------------------------------------------
    async def required(self) -> bool:
        """Whether callers must authenticate: an identity provider is configured, or a
        key was ever made, revoked and expired ones included (cached ``cache_s``)."""
        if self._verifier is not None:
            return True
        now = time.monotonic()
        if self._required is None or now - self._required[1] >= self._cache_s:
            made = await self._store.execute(tenancy.any_key, write=False)
            self._required = (made, now)
        return self._required[0]

    async def authenticate(self, token: str, source: str = "") -> Principal:
        """The caller a bearer credential names; 401 ``invalid_credentials`` when it is
        not valid (never saying why), 429 once ``source`` failed too often."""
        self._check_failures(source)
        try:
            return await self._principal(token)
        except UnauthorizedError:
            self._failed(source)
            raise

    async def _principal(self, token: str) -> Principal:
        if not token.startswith(KEY_PREFIX) and self._verifier is not None:
            verified: Principal = await self._verifier.verify(token)
            return verified
        key_id = key_id_of(token)
        key = await self._cached(key_id) if key_id is not None else None
        if key is None or not matches(token, key.hash) or not key.active(self._clock()):
            raise UnauthorizedError("invalid credentials", code="invalid_credentials")
        return key.principal()

    async def authenticate_sigv4(
        self,
        header: str,
        amz_date: str | None,
        request: Callable[[], Awaitable[SignedRequest]],
        source: str = "",
    ) -> Principal:
        """The caller whose SigV4 pair signed the request (``header``: its Authorization,
        ``amz_date``: its X-Amz-Date; ``request``: what the signature covers, its body
        read only once the header, the time and the key are good). 401
        ``unknown_access_key`` for an id that names no active pair, ``invalid_signature``
        for a signature its secret does not give, ``signature_expired`` past the clock
        skew AWS allows; counted as failures like a bearer key's."""
        from freight import sigv4

        self._check_failures(source)
        try:
            auth = sigv4.parse(header)
            signed_at = sigv4.check_time(amz_date, auth, self._clock())
            key = await self._cached(auth.access_key_id) if sigv4.is_access_key_id(
                auth.access_key_id
            ) else None
            secret = self._opened(key) if key is not None else None
            if key is None or secret is None or not key.active(self._clock()):
                raise UnauthorizedError(
                    "The security token included in the request is invalid.",
                    code="unknown_access_key",
                )
            sigv4.verify(await request(), auth, signed_at, secret)
        except UnauthorizedError:
            self._failed(source)
            raise
        return key.principal()

    def _opened(self, key: ApiKey) -> str | None:
        """A pair's secret, opened (kept in memory beside its sealed form, so a pair's
        every request does not open it again; None: no pair, or it does not open)."""
        if key.secret is None or self._sealer is None:
            return None
        kept = self._secrets.get(key.key_id)
        if kept is not None and kept[0] == key.secret:
            return kept[1]
        secret = self._sealer.open(key.key_id, key.secret)
        if secret is not None:
            if len(self._secrets) > 10_000:
                self._secrets.clear()
            self._secrets[key.key_id] = (key.secret, secret)
        return secret

    async def holder(self, key_id: str) -> Principal:
        """The caller an active key names, by its public id alone (a console session
        keeps the id, never the key): 401 ``invalid_credentials`` once the key is
        revoked or expired, seen within ``cache_s`` like any authentication."""
        key = await self._cached(key_id)
        if key is None or not key.active(self._clock()):
            raise UnauthorizedError("invalid credentials", code="invalid_credentials")
        return key.principal()

    async def _cached(self, key_id: str) -> ApiKey | None:
        now = time.monotonic()
        cached = self._keys.get(key_id)
        if cached is None or now - cached.at >= self._cache_s:
            found = await self._store.execute(lambda: tenancy.key(key_id), write=False)
            if len(self._keys) > 10_000:  # keys guessed at random must not grow it forever
                self._keys.clear()
            cached = self._keys[key_id] = _Cached(found, now)
        return cached.key

    def _check_failures(self, source: str) -> None:
        failures = self._failures.get(source)
        if not failures:
            return
        now = time.monotonic()
        while failures and now - failures[0] > FAILURE_WINDOW_S:
            failures.popleft()
        if len(failures) >= self._max_failures:
            retry = max(1, int(FAILURE_WINDOW_S - (now - failures[0])) + 1)
            raise QuotaExceededError(
                "too many failed authentications from this address",
                code="too_many_auth_failures",
                retry_after_s=retry,
            )

    def _failed(self, source: str) -> None:
        if len(self._failures) > 10_000:
            self._failures.clear()
        self._failures.setdefault(source, deque(maxlen=self._max_failures)).append(
            time.monotonic()
        )

    def forget(self) -> None:
        """Drop what is cached (after this process changed keys)."""
        self._keys.clear()
        self._required = None

    # -- keys ----------------------------------------------------------------------------
    async def create(
        self,
        who: Principal,
        *,
        tenant: str,
        name: str = "",
        scopes: Iterable[Scope] = (Scope.PREDICT, Scope.READ),
        targets: Iterable[str] | None = None,
        expires_in_s: float | None = None,
        sigv4: bool = False,
    ) -> tuple[ApiKey, str]:
        """A new key and its token (shown once: only its hash is kept). ``sigv4``: an
        access-key pair for AWS clients instead; the key's id is its access key id and
        the token its secret access key (kept sealed: a signature check needs it)."""
        _require_admin(who)
        if not valid_tenant(tenant):
            raise InvalidRequestError(
                f"tenant {tenant!r} is not a valid name (lower-case letters, digits, "
                "'-' and '_', at most 63)",
                code="invalid_tenant",
            )
        granted = frozenset(Scope(s) for s in scopes) or frozenset({Scope.READ})
        if expires_in_s is not None and not 0 < expires_in_s <= MAX_KEY_LIFETIME_S:
            raise InvalidRequestError(
                "a key expires in the future, 10 years from now at most", code="invalid_expiry"
            )
        now = self._clock()
        key_id, token, hash_, sealed = self._new_secret(sigv4)
        key = ApiKey(
            key_id=key_id,
            tenant=tenant,
            name=name,
            scopes=granted,
            targets=None if targets is None else frozenset(targets),
            hash=hash_,
            created_at=now,
            created_by=who.actor,
            expires_at=None if expires_in_s is None else now + expires_in_s,
            secret=sealed,
        )
        detail: dict[str, object] = {"scopes": sorted(granted), "name": name}
        if sigv4:
            detail["sigv4"] = True
        if key.targets is not None:
            detail["models"] = sorted(key.targets)
        entry = AuditEntry(now, who.actor, tenant, "key.create", key_id, detail)
        await self._store.execute(lambda: tenancy.create_key(key, entry))
        self.forget()
        return key, token

    def _new_secret(self, sigv4: bool) -> tuple[str, str, str, str | None]:
        """A new key's id, token (shown once), hash and sealed secret (SigV4 only)."""
        if not sigv4:
            made = new_key()
            return made.key_id, made.token, made.hash, None
        from freight.sigv4 import new_pair, secret_hash

        if self._sealer is None:
            raise ConfigError("SigV4 keys need the server's secret_key to seal them")
        pair = new_pair()
        sealed = self._sealer.seal(pair.access_key_id, pair.secret)
        return pair.access_key_id, pair.secret, secret_hash(pair.secret), sealed

    async def adopt(self, token: str, *, tenant: str = "ops") -> ApiKey:
        """Register the operator's admin key (``admin_key``: from a secret) unless it is
        registered already; a revoked one stays revoked. ConfigError for a token that is
        not a freight key, or whose id another key holds."""
        key_id = key_id_of(token)
        if key_id is None:
            raise ConfigError(
                "admin_key is not a freight key: make one with `freight keys generate`"
            )
        now = self._clock()
        key = ApiKey(
            key_id=key_id,
            tenant=tenant,
            name="admin_key",
            scopes=frozenset({Scope.ADMIN, Scope.METRICS}),
            targets=None,
            hash=hash_key(token),
            created_at=now,
            created_by="config:admin_key",
        )
        detail: dict[str, object] = {"scopes": ["admin", "metrics"]}
        entry = AuditEntry(now, key.created_by, tenant, "key.create", key_id, detail)
        held = await self._store.execute(lambda: tenancy.adopt_key(key, entry))
        if held.hash != key.hash:
            raise ConfigError(f"admin_key: another key already has the id {key_id}")
        if held.revoked_at is not None:
            log.warning("admin_key %s was revoked: it stays revoked", key_id)
        self.forget()
        return held

    async def keys(self, who: Principal, tenant: str | None = None) -> list[ApiKey]:
        _require_admin(who)
        return await self._store.execute(lambda: tenancy.keys(tenant), write=False)

    async def revoke(self, who: Principal, key_id: str) -> ApiKey:
        _require_admin(who)
        now = self._clock()
        current = await self._store.execute(lambda: tenancy.key(key_id), write=False)
        if current is None:
            raise NotFoundError(f"no key {key_id}", code="key_not_found")
        if current.revoked_at is not None:
            return current
        entry = AuditEntry(now, who.actor, current.tenant, "key.revoke", key_id)
        revoked = await self._store.execute(lambda: tenancy.revoke_key(key_id, now, entry))
        self.forget()
        return revoked or current

    # -- webhook signing secrets ---------------------------------------------------------
    async def webhook_secret(
        self, who: Principal, *, tenant: str | None = None, rotate: bool = False
    ) -> str:
        """A tenant's current webhook signing secret (made on first use). Its own for
        any caller; another tenant's, and a rotation, for ``admin`` (audited): the
        previous secret keeps signing for the overlap, so receivers can switch."""
        tenant = tenant or who.tenant
        if tenant != who.tenant or rotate:
            _require_admin(who)
        now = self._clock()
        current = await self._store.webhook_secrets(now=now, overlap_s=0, tenant=tenant)
        if current and not rotate:
            if tenant != who.tenant:
                await self.record(who, "webhook_secret.read", tenant=tenant)
            return current[0]
        secret = WebhookSecrets.generate().current
        await self._store.rotate_webhook_secret(secret, now=now, tenant=tenant)
        if rotate:
            await self.record(who, "webhook_secret.rotate", tenant=tenant)
        return secret

    # -- the audit log -------------------------------------------------------------------
    async def record(
        self,
        who: Principal,
        action: str,
        *,
        tenant: str,
        subject: str | None = None,
        detail: dict[str, object] | None = None,
    ) -> None:
        entry = AuditEntry(self._clock(), who.actor, tenant, action, subject, detail)
        await self._store.execute(lambda: tenancy.audit(entry))

    async def audit_log(
        self,
        who: Principal,
        *,
        tenant: str | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[AuditEntry]:
        _require_admin(who)
        return await self._store.execute(
            lambda: tenancy.audit_log(tenant, before_id, limit), write=False
        )


def _require_admin(who: Principal) -> None:
    if Scope.ADMIN not in who.scopes:
        raise ForbiddenError(
            "this needs a key with the admin scope", code="missing_scope", scope="admin"
        )


#: what the command line acts as when it opens the store itself (``freight keys``)
def local_operator(user: str) -> Principal:
    return Principal(tenant="default", scopes=ALL_SCOPES, subject=f"cli:{user}")


__all__ = ["Keyring", "local_operator"]
