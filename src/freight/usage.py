"""What each tenant and model cost: reports over the usage ledger.

The ledger (``freight.ledger``; written by the store in the transaction that ends
rows) holds one line per tenant x target x kind x status x hour and transaction;
a report sums them over whole hours, grouped as asked. Who may see what:
:func:`tenant_for` (a caller sees its own tenant's usage; ``admin``, every
tenant's).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from freight.access import Principal, Scope
from freight.errors import ForbiddenError, InvalidRequestError
from freight.ledger import GROUPS, UsageLine, group_keys, window
from freight.store import usage
from freight.store.base import Lifecycle

#: what a report is grouped by when the caller does not say
DEFAULT_GROUPS = ("tenant", "target")


def tenant_for(who: Principal, asked: str | None) -> str | None:
    """The tenant whose usage ``who`` sees when asking for ``asked`` (None: all of
    them, for an admin asking for no tenant). Anyone else sees its own tenant alone;
    asking for another is ``403 missing_scope`` (that of admin)."""
    if Scope.ADMIN in who.scopes:
        return asked
    if asked is not None and asked != who.tenant:
        raise ForbiddenError(
            "only a key with the admin scope sees another tenant's usage",
            code="missing_scope",
            scope=str(Scope.ADMIN),
        )
    return who.tenant


class UsageService:
    """Reports of the usage ledger, over the store."""

    def __init__(self, store: Lifecycle) -> None:
        self._store = store

    async def report(
        self,
        *,
        tenant: str | None,
        start: float,
        end: float,
        group_by: Sequence[str],
        targets: Collection[str] | None = None,
    ) -> list[UsageLine]:
        """The usage of the whole hours covering ``[start, end)`` (epoch seconds),
        summed per ``group_by`` (any of tenant, target — or model —, kind, hour,
        status; none: one line, the total), ordered by those groups. ``tenant`` None:
        every tenant's; ``targets``: of these models and pipelines only (a key
        limited to them)."""
        try:
            groups = group_keys(group_by)
        except ValueError as exc:
            raise InvalidRequestError(
                str(exc), code="invalid_group_by", allowed=list(GROUPS)
            ) from None
        if end <= start:
            raise InvalidRequestError(
                "`to` must be after `from`", code="invalid_window", start=start, end=end
            )
        first, last = window(start, end)
        return await self._store.execute(
            lambda: usage.report(
                start=first, end=last, groups=groups, tenant=tenant, targets=targets
            ),
            write=False,
        )


__all__ = ["DEFAULT_GROUPS", "UsageLine", "UsageService", "tenant_for"]
