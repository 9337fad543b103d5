"""The usage ledger in the store: lines appended, and summed when read.

Lines are appended by the transaction that ends rows (``advancing.advance_runs``
calls :func:`append`, for every ending path of ``ops.py``), one INSERT per group
(:func:`freight.ledger.lines`), never an UPDATE: an insert locks no row another
transaction waits on, so concurrent completions never contend here and the lock
order of ``ops.py`` is untouched. A rolled-back (or retried) transaction takes
its lines with it: a crash neither loses nor doubles one.

:func:`report` is run by ``Store.execute`` (read-only) and sums the lines of the
hours ``[start, end)`` per the groups asked for (``ix_usage_ledger_hour``).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from freight.ledger import GROUPS, UsageLine
from freight.store import sql
from freight.store._op import Op, Sql

_AMOUNTS = (
    "count",
    "compute_s",
    "gpu_s",
    "queue_s",
    "cold_start_s",
    "bytes_in",
    "bytes_out",
)
_INTEGERS = frozenset({"count", "bytes_in", "bytes_out"})
_COLUMNS = ("hour", "tenant", "target", "kind", "status", *_AMOUNTS)
INSERT_LINE = (
    f"INSERT INTO usage_ledger ({', '.join(_COLUMNS)}) "
    f"VALUES ({', '.join(':' + c for c in _COLUMNS)})"
)


def append(lines: Sequence[UsageLine]) -> Op[None]:
    """Append the lines (the caller's transaction ended their rows)."""
    if not lines:
        return
    params = [{name: getattr(line, name) for name in _COLUMNS} for line in lines]
    yield Sql(INSERT_LINE, params[0] if len(params) == 1 else params)


def report_query(
    *,
    start: float,
    end: float,
    groups: Sequence[str],
    tenant: str | None = None,
    targets: Collection[str] | None = None,
) -> tuple[str, dict[str, Any]]:
    """The lines of the hours ``[start, end)`` summed per ``groups`` (of
    :data:`~freight.ledger.GROUPS`); ``tenant``, ``targets``: of these only."""
    keys = [g for g in GROUPS if g in groups]
    where = ["hour >= :start", "hour < :end"]
    params: dict[str, Any] = {"start": start, "end": end}
    if tenant is not None:
        where.append("tenant = :tenant")
        params["tenant"] = tenant
    if targets is not None:
        in_list, names = sql.expand_in("target_", sorted(targets) or [""])
        where.append(f"target IN {in_list}")
        params |= names
    sums = ", ".join(f"sum({a})" for a in _AMOUNTS)
    text = f"SELECT {', '.join([*keys, sums])} FROM usage_ledger WHERE {' AND '.join(where)}"
    if keys:
        text += f" GROUP BY {', '.join(keys)} ORDER BY {', '.join(keys)}"
    return text, params


def report(
    *,
    start: float,
    end: float,
    groups: Sequence[str],
    tenant: str | None = None,
    targets: Collection[str] | None = None,
) -> Op[list[UsageLine]]:
    text, params = report_query(start=start, end=end, groups=groups, tenant=tenant, targets=targets)
    keys = [g for g in GROUPS if g in groups]
    found: list[UsageLine] = []
    for row in (yield Sql(text, params)):
        if row[len(keys)] is None:  # no line at all (an aggregate without GROUP BY)
            continue
        fields: dict[str, Any] = dict.fromkeys(GROUPS)
        fields.update(zip(keys, row, strict=False))
        for name, value in zip(_AMOUNTS, row[len(keys) :], strict=True):
            # PostgreSQL sums a BIGINT as NUMERIC (a Decimal)
            fields[name] = int(value) if name in _INTEGERS else float(value)
        if fields["hour"] is not None:
            fields["hour"] = float(fields["hour"])
        found.append(UsageLine(**fields))
    return found


__all__ = ["INSERT_LINE", "append", "report", "report_query"]
