"""The store's records of who may call: API keys and the audit log.

Each transaction is a generator of :class:`~freight.store._op.Sql` like those of
``ops.py``, run by either engine through ``Store.execute``. A key's change and its
audit line commit together.
"""

from __future__ import annotations

from typing import Any

import orjson

from freight.access import ApiKey, AuditEntry, Scope
from freight.store._op import Op, Sql
from freight.store.sql import expand_in

_KEY_COLUMNS = (
    "id, tenant, name, scopes, targets, hash, created_at, created_by, expires_at, revoked_at, "
    "secret"
)
INSERT_KEY = f"""
INSERT INTO api_keys ({_KEY_COLUMNS})
VALUES (:id, :tenant, :name, :scopes, :targets, :hash, :created_at, :created_by,
    :expires_at, :revoked_at, :secret)"""
ADOPT_KEY = f"{INSERT_KEY} ON CONFLICT (id) DO NOTHING RETURNING id"
KEY = f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = :id"
KEYS = f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY created_at, id"
TENANT_KEYS = f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE tenant = :tenant ORDER BY created_at, id"
REVOKE_KEY = f"""
UPDATE api_keys SET revoked_at = :now WHERE id = :id AND revoked_at IS NULL
RETURNING {_KEY_COLUMNS}"""
# once a key was ever made, keys are required: revoking (or outliving) every key must
# not open the server to anyone
ANY_KEY = "SELECT 1 FROM api_keys LIMIT 1"

_AUDIT_COLUMNS = "id, at, actor, tenant, action, subject, detail"
INSERT_AUDIT = """
INSERT INTO audit_log (at, actor, tenant, action, subject, detail)
VALUES (:at, :actor, :tenant, :action, :subject, :detail)"""


def audit_query(
    tenant: str | None, before_id: int | None, limit: int
) -> tuple[str, dict[str, Any]]:
    """Newest first; ``tenant``: the lines about that tenant only."""
    where: list[str] = ["1 = 1"]
    params: dict[str, Any] = {"limit": limit}
    if tenant is not None:
        where.append("tenant = :tenant")
        params["tenant"] = tenant
    if before_id is not None:
        where.append("id < :before_id")
        params["before_id"] = before_id
    text = (
        f"SELECT {_AUDIT_COLUMNS} FROM audit_log WHERE {' AND '.join(where)} "
        "ORDER BY id DESC LIMIT :limit"
    )
    return text, params


def _key(row: tuple[Any, ...]) -> ApiKey:
    kid, tenant, name, scopes, targets, hash_, created, by, expires, revoked, secret = row
    return ApiKey(
        key_id=kid,
        tenant=tenant,
        name=name,
        scopes=frozenset(Scope(s) for s in orjson.loads(scopes)),
        targets=None if targets is None else frozenset(orjson.loads(targets)),
        hash=hash_,
        created_at=created,
        created_by=by,
        expires_at=expires,
        revoked_at=revoked,
        secret=secret,
    )


def _key_params(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.key_id,
        "tenant": key.tenant,
        "name": key.name,
        "scopes": orjson.dumps(sorted(key.scopes)).decode(),
        "targets": None if key.targets is None else orjson.dumps(sorted(key.targets)).decode(),
        "hash": key.hash,
        "created_at": key.created_at,
        "created_by": key.created_by,
        "expires_at": key.expires_at,
        "revoked_at": key.revoked_at,
        "secret": key.secret,
    }


def _audit_params(entry: AuditEntry) -> dict[str, Any]:
    return {
        "at": entry.at,
        "actor": entry.actor,
        "tenant": entry.tenant,
        "action": entry.action,
        "subject": entry.subject,
        "detail": None if entry.detail is None else orjson.dumps(entry.detail).decode(),
    }


def audit(entry: AuditEntry) -> Op[None]:
    yield Sql(INSERT_AUDIT, _audit_params(entry))


def create_key(key: ApiKey, entry: AuditEntry) -> Op[None]:
    yield Sql(INSERT_KEY, _key_params(key))
    yield from audit(entry)


def adopt_key(key: ApiKey, entry: AuditEntry) -> Op[ApiKey]:
    """Register ``key`` unless a key of its id exists; the key of that id, either way."""
    if (yield Sql(ADOPT_KEY, _key_params(key))):
        yield from audit(entry)
        return key
    rows = yield Sql(KEY, {"id": key.key_id})
    return _key(rows[0])


def key(key_id: str) -> Op[ApiKey | None]:
    rows = yield Sql(KEY, {"id": key_id})
    return _key(rows[0]) if rows else None


def keys(tenant: str | None) -> Op[list[ApiKey]]:
    rows = yield (Sql(KEYS) if tenant is None else Sql(TENANT_KEYS, {"tenant": tenant}))
    return [_key(r) for r in rows]


def revoke_key(key_id: str, now: float, entry: AuditEntry) -> Op[ApiKey | None]:
    """The key as revoked (None: no such key, or it was revoked already)."""
    rows = yield Sql(REVOKE_KEY, {"id": key_id, "now": now})
    if not rows:
        return None
    yield from audit(entry)
    return _key(rows[0])


def any_key() -> Op[bool]:
    return bool((yield Sql(ANY_KEY)))


def audit_log(tenant: str | None, before_id: int | None, limit: int) -> Op[list[AuditEntry]]:
    text, params = audit_query(tenant, before_id, limit)
    rows = yield Sql(text, params)
    return [
        AuditEntry(
            id=r[0],
            at=r[1],
            actor=r[2],
            tenant=r[3],
            action=r[4],
            subject=r[5],
            detail=None if r[6] is None else orjson.loads(r[6]),
        )
        for r in rows
    ]


# -- quotas -------------------------------------------------------------------------


IDEMPOTENT = "SELECT 1 FROM predictions WHERE tenant = :tenant AND idempotency_key = :key"


def _bounded(status: str, in_list: str) -> str:
    # each status's partial index (literal predicate), a tenant's rows of these targets,
    # counted no further than the bound: a quota check costs at most its bound
    return (
        f"SELECT '{status}', count(*) FROM (SELECT 1 FROM predictions WHERE status = "
        f"'{status}' AND target IN {in_list} AND tenant = :tenant LIMIT :limit) AS q"
    )


def has_idempotency_key(tenant: str, key: str) -> Op[bool]:
    """Whether the tenant already made a prediction with this idempotency key (its
    replay is answered with that prediction, whatever the quotas say now)."""
    return bool((yield Sql(IDEMPOTENT, {"tenant": tenant, "key": key})))


def tenant_load(tenant: str, targets: list[str], limit: int) -> Op[dict[str, int]]:
    """A tenant's rows of ``targets`` by status (queued, awaiting_input, running), each
    counted up to ``limit``."""
    in_list, params = expand_in("target_", sorted(targets))
    text = " UNION ALL ".join(
        _bounded(status, in_list) for status in ("queued", "awaiting_input", "running")
    )
    rows = yield Sql(text, params | {"tenant": tenant, "limit": limit})
    return {str(status): int(count) for status, count in rows}


# rows that hold a replica now, per tenant and target (the running partial index)
RUNNING_COUNTS = """
SELECT tenant, target, count(*) FROM predictions
WHERE status = 'running' AND kind IN ('chunk', 'model') GROUP BY tenant, target"""


def running_counts() -> Op[dict[tuple[str, str], int]]:
    """Rows in flight per (tenant, target): what ``max_in_flight`` bounds
    (``freight/bounds.py``)."""
    rows = yield Sql(RUNNING_COUNTS, {})
    return {(str(tenant), str(target)): int(n) for tenant, target, n in rows}
