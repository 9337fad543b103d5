"""The shape of a store transaction (see ``ops.py``) and the small steps every
transaction builds on."""

from __future__ import annotations

from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from freight.events import Offer
from freight.ledger import UsageLine
from freight.prediction import Prediction
from freight.store import sql
from freight.store.rows import row_to_prediction

T = TypeVar("T")
Rows = list[tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class Sql:
    """One statement: ``:name`` parameters, ``{lock}``/``{skip_locked}`` slots. A list
    of parameter sets runs it once per set (one round trip on PostgreSQL). A
    ``lock_only`` statement only takes row locks: a store with one writer skips it."""

    text: str
    params: dict[str, Any] | list[dict[str, Any]] = field(default_factory=dict)
    lock_only: bool = False


Op = Generator[Sql, Rows, T]


@dataclass
class Told:
    """What a committed transaction's run advancement wakes: claim loops of targets
    whose steps it queued, waiters of rows it ended. The rows the caller itself
    changed are the caller's to announce (the agent publishes its completions).
    ``usage``: the ledger lines it appended, counted in this process's metrics once
    it committed. ``handed``: rows claimed in the transaction for this process's idle
    replicas (``ops.handing_off``), to give them once it committed. ``outbox``: it may
    have written outbox rows (a run with subscriptions advanced): the deliverers' to
    know (on PostgreSQL the outbox trigger NOTIFYs too)."""

    queued: set[str] = field(default_factory=set)
    finished: list[str] = field(default_factory=list)
    usage: list[UsageLine] = field(default_factory=list)
    handed: list[tuple[Offer, list[Prediction]]] = field(default_factory=list)
    outbox: bool = False


# -- small steps ------------------------------------------------------------------


def fetch(text: str, params: dict[str, Any]) -> Op[list[Prediction]]:
    return [row_to_prediction(r) for r in (yield Sql(text, params))]


def fetch_one(text: str, params: dict[str, Any]) -> Op[Prediction | None]:
    rows = yield from fetch(text, params)
    return rows[0] if rows else None


def get(prediction_id: str) -> Op[Prediction | None]:
    return (yield from fetch_one(sql.GET, {"id": prediction_id}))


def get_many(ids: Sequence[str]) -> Op[list[Prediction]]:
    in_list, params = sql.expand_in("id", sorted(set(ids)))
    return (yield from fetch(sql.GET_MANY.format(ids=in_list), params))


def lock_runs_of(ids: Iterable[str | None]) -> Op[None]:
    """Lock the runs (and their ancestors) that rows ``ids`` belong to, in id order."""
    wanted = sorted({i for i in ids if i is not None})
    runs: set[str] = set()
    while wanted:
        in_list, params = sql.expand_in("id", wanted)
        rows = yield Sql(sql.RUNS_OF.format(ids=in_list), params, lock_only=True)
        wanted = sorted({r[0] for r in rows} - runs)
        runs |= set(wanted)
    if runs:
        in_list, params = sql.expand_in("id", sorted(runs))
        yield Sql(sql.LOCK_IDS.format(ids=in_list), params, lock_only=True)


def as_rows(rows: Rows) -> list[Prediction]:
    return [row_to_prediction(r) for r in rows]


__all__ = ["Op", "Rows", "Sql", "T", "Told", "as_rows", "fetch", "fetch_one", "get", "lock_runs_of"]
