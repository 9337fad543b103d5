"""Which objects of the store a caller may name (``input_uri``, a job's ``output``).

A caller of a server without keys names any object (zero-setup local use). Any
other caller is confined to its tenant: it may read and write under its own
prefix (``tenants/<tenant>/``), and read the inputs and outputs of its own
predictions and batch jobs (to chain one into another); nothing else, and never
another tenant's objects (``403 uri_not_allowed``).
"""

from __future__ import annotations

from freight.access import Principal
from freight.errors import ForbiddenError
from freight.keys import owner_of, tenant_prefix
from freight.store.base import Store


async def confine(store: Store, who: Principal, key: str, uri: str, *, write: bool) -> str:
    """``key`` when ``who`` may name it (to read, or with ``write`` to write under it)."""
    if not who.confined or key.startswith(tenant_prefix(who.tenant)):
        return key
    owner = None if write else owner_of(key)
    if owner is not None:
        row = await store.get(owner)
        if row is not None and row.tenant == who.tenant:
            return key
    raise ForbiddenError(
        f"{uri!r} is outside this tenant's objects: name one under "
        f"freight://{tenant_prefix(who.tenant)}, or an input or output of your own",
        code="uri_not_allowed",
        uri=uri,
    )


__all__ = ["confine"]
