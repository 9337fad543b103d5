"""The keyring on a real (in-memory SQLite) store: keys hashed, revoked, expired,
cached for ``cache_s``; failures counted per address; keys required once any was made."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from freight.access import ANONYMOUS, Principal, Scope, hash_key, key_id_of, new_key
from freight.errors import (
    ConfigError,
    ForbiddenError,
    InvalidRequestError,
    QuotaExceededError,
    UnauthorizedError,
)
from freight.keyring import Keyring
from freight.store import open_store
from freight.store.base import Store

ADMIN = Principal(tenant="ops", scopes=frozenset({Scope.ADMIN}), subject="test")


class Clock:
    now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    opened = open_store("memory://")
    await opened.open()
    yield opened
    await opened.close()


async def test_a_key_is_stored_hashed_and_authenticates_as_its_tenant(store: Store) -> None:
    ring = Keyring(store, cache_s=0.0)
    assert not await ring.required()
    key, token = await ring.create(
        ADMIN, tenant="acme", scopes=[Scope.PREDICT], targets=["echo"], name="ci"
    )
    assert await ring.required()
    assert key.hash == hash_key(token) and token not in repr(key)
    who = await ring.authenticate(token)
    assert (who.tenant, who.scopes, who.targets) == ("acme", frozenset({Scope.PREDICT}), {"echo"})
    assert who.has(Scope.PREDICT) and not who.has(Scope.READ) and who.confined
    # the same id with another secret, and a malformed token: refused alike
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    for bad in (forged, "garbage", ""):
        with pytest.raises(UnauthorizedError) as raised:
            await ring.authenticate(bad)
        assert raised.value.code == "invalid_credentials" and token not in str(raised.value)


async def test_revoked_and_expired_keys_stop_and_keys_stay_required(store: Store) -> None:
    clock = Clock()
    ring = Keyring(store, cache_s=0.0, clock=clock)
    _, token = await ring.create(ADMIN, tenant="acme", expires_in_s=60)
    assert (await ring.authenticate(token)).tenant == "acme"
    clock.now += 61
    with pytest.raises(UnauthorizedError):
        await ring.authenticate(token)
    key, other = await ring.create(ADMIN, tenant="acme")
    await ring.revoke(ADMIN, key.key_id)
    with pytest.raises(UnauthorizedError):
        await ring.authenticate(other)
    # every key revoked or expired: still required (never open again by accident)
    assert await Keyring(store).required()
    log = await ring.audit_log(ADMIN)
    assert [e.action for e in log] == ["key.revoke", "key.create", "key.create"]
    assert all(token not in str(e) and other not in str(e) for e in log)


async def test_a_revocation_reaches_another_keyring_after_its_cache(store: Store) -> None:
    """Two API processes: the other one's cache holds the key at most ``cache_s``."""
    here, there = Keyring(store, cache_s=3600.0), Keyring(store, cache_s=0.0)
    cached = Keyring(store, cache_s=3600.0)
    key, token = await here.create(ADMIN, tenant="acme")
    await cached.authenticate(token)
    await here.revoke(ADMIN, key.key_id)
    with pytest.raises(UnauthorizedError):
        await there.authenticate(token)
    assert (await cached.authenticate(token)).tenant == "acme"  # within its cache_s


async def test_failures_per_address_are_limited(store: Store) -> None:
    ring = Keyring(store, max_failures=3)
    for _ in range(3):
        with pytest.raises(UnauthorizedError):
            await ring.authenticate("frk_aaaaaaaaaaaa_" + "A" * 43, "10.0.0.1")
    with pytest.raises(QuotaExceededError) as raised:
        await ring.authenticate("anything", "10.0.0.1")
    assert raised.value.code == "too_many_auth_failures" and raised.value.retry_after_s >= 1
    with pytest.raises(UnauthorizedError):  # another address is not held back
        await ring.authenticate("anything", "10.0.0.2")


async def test_only_admins_manage_keys_and_other_tenants_secrets(store: Store) -> None:
    ring = Keyring(store)
    user = Principal(tenant="acme", scopes=frozenset({Scope.PREDICT, Scope.READ}))
    with pytest.raises(ForbiddenError):
        await ring.create(user, tenant="acme")
    with pytest.raises(ForbiddenError):
        await ring.keys(user)
    with pytest.raises(ForbiddenError):
        await ring.webhook_secret(user, tenant="globex")
    with pytest.raises(ForbiddenError):
        await ring.webhook_secret(user, rotate=True)
    mine = await ring.webhook_secret(user)
    assert mine == await ring.webhook_secret(user) != await ring.webhook_secret(ANONYMOUS)
    with pytest.raises(InvalidRequestError):
        await ring.create(ADMIN, tenant="Not A Tenant")
    with pytest.raises(InvalidRequestError):
        await ring.create(ADMIN, tenant="acme", expires_in_s=1e12)
    _, token = await ring.create(ADMIN, tenant="acme")
    assert key_id_of(token) is not None


async def test_the_operators_admin_key_is_registered_once(store: Store) -> None:
    ring = Keyring(store, cache_s=0.0)
    token = new_key().token
    first = await ring.adopt(token)
    again = await Keyring(store).adopt(token)  # a second API process, at its start
    assert first.key_id == again.key_id and await ring.required()
    assert (await ring.authenticate(token)).has(Scope.ADMIN)
    assert [e.action for e in await ring.audit_log(ADMIN)] == ["key.create"]
    same_id = token[: len("frk_") + 13] + "B" * 43
    with pytest.raises(ConfigError):
        await ring.adopt(same_id)
    with pytest.raises(ConfigError):
        await ring.adopt("CHANGE-ME")
    await ring.revoke(ADMIN, first.key_id)
    assert (await ring.adopt(token)).revoked_at is not None  # stays revoked
    with pytest.raises(UnauthorizedError):
        await ring.authenticate(token)
