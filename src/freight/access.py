"""Who is calling: tenants, scopes, principals and API keys (pure: no I/O).

A *tenant* owns predictions, runs, batch jobs, objects under its own prefix and
webhook secrets; nothing of one tenant is visible to another. A *principal* is an
authenticated caller: a tenant, the scopes it was granted and, optionally, the
targets (models or pipelines) it is limited to. It comes from an API key (stored
hashed: :func:`hash_key`) or from an identity provider's token.

With no key configured, a loopback server serves :data:`ANONYMOUS`: the
``default`` tenant with every scope (zero-setup local use).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field

DEFAULT_TENANT = "default"
#: the longest a key may be made to live (an expiry must be a date people can read)
MAX_KEY_LIFETIME_S = 10 * 365 * 86400.0

#: a tenant's name: what keys, prefixes and metrics labels carry
TENANT_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_TENANT = re.compile(TENANT_PATTERN)

#: every key starts with this (recognisable by secret scanners and people alike)
KEY_PREFIX = "frk_"
_KEY = re.compile(r"^frk_([a-z0-9]{12})_([A-Za-z0-9_-]{43})$")


class Scope(enum.StrEnum):
    PREDICT = "predict"  # create, upload, cancel its own
    READ = "read"  # get, list, events, outputs, deliveries
    BATCH = "batch"  # batch jobs
    ADMIN = "admin"  # keys, secrets, every tenant's usage, the audit log
    METRICS = "metrics"  # scrape /metrics (a Prometheus server's key)


ALL_SCOPES = frozenset(Scope)


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. ``targets`` None: every model and pipeline."""

    tenant: str
    scopes: frozenset[Scope] = ALL_SCOPES
    targets: frozenset[str] | None = None
    key_id: str | None = None  # the key's public id, or the token's subject
    subject: str = field(default="", compare=False)  # who, for the audit log
    # False only for the caller of a server without keys: it may name any object
    confined: bool = True

    def has(self, scope: Scope) -> bool:
        return scope in self.scopes or Scope.ADMIN in self.scopes

    def may_use(self, target: str) -> bool:
        return self.targets is None or target in self.targets

    def owns(self, tenant: str, target: str) -> bool:
        """Whether a row of ``tenant`` for ``target`` is this caller's to see."""
        return tenant == self.tenant and self.may_use(target)

    @property
    def actor(self) -> str:
        return self.subject or (f"key:{self.key_id}" if self.key_id else self.tenant)


#: the caller of a server with no key configured, on loopback
ANONYMOUS = Principal(tenant=DEFAULT_TENANT, subject="anonymous", confined=False)


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key as stored: never its token, only the token's hash (a SigV4 pair: its
    secret sealed, which a signature check needs)."""

    key_id: str
    tenant: str
    name: str
    scopes: frozenset[Scope]
    targets: frozenset[str] | None
    hash: str = field(repr=False)
    created_at: float
    created_by: str
    expires_at: float | None = None
    revoked_at: float | None = None
    # a SigV4 pair's secret access key, sealed (:class:`freight.sigv4.Sealer`); None for
    # a bearer key. The key id is then the access key id.
    secret: str | None = field(default=None, repr=False)

    @property
    def sigv4(self) -> bool:
        return self.secret is not None

    def active(self, now: float) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)

    def principal(self) -> Principal:
        return Principal(
            tenant=self.tenant,
            scopes=self.scopes,
            targets=self.targets,
            key_id=self.key_id,
            subject=f"key:{self.key_id}",
        )


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One line of the audit log: who did what to which tenant, when."""

    at: float
    actor: str
    tenant: str
    action: str  # key.create, key.revoke, webhook_secret.rotate, ...
    subject: str | None = None
    detail: dict[str, object] | None = None
    id: int | None = None


def valid_tenant(name: str) -> bool:
    return bool(_TENANT.match(name))


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key as created: ``token`` is shown once and never stored."""

    key_id: str
    token: str = field(repr=False)
    hash: str = field(repr=False)


def new_key() -> NewKey:
    key_id = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(12))
    token = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    return NewKey(key_id=key_id, token=token, hash=hash_key(token))


def hash_key(token: str) -> str:
    """A key's stored form. SHA-256 suffices: keys carry 256 random bits, so no
    password-style stretching is needed to resist guessing."""
    return hashlib.sha256(token.encode()).hexdigest()


def key_id_of(token: str) -> str | None:
    """The public id inside a well-formed key, or None."""
    match = _KEY.match(token)
    return match.group(1) if match else None


def matches(token: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_key(token), stored_hash)


__all__ = [
    "ALL_SCOPES",
    "ANONYMOUS",
    "DEFAULT_TENANT",
    "KEY_PREFIX",
    "ApiKey",
    "AuditEntry",
    "NewKey",
    "Principal",
    "Scope",
    "hash_key",
    "key_id_of",
    "matches",
    "new_key",
    "valid_tenant",
]
