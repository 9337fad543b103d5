"""The usage ledger's lines: what each ended row cost, per tenant x target x hour (pure).

A *line* sums the rows one transaction ended, per (hour, tenant, target, kind,
status): their count, compute seconds (the replica's wall time shared by the rows
of its batch: 1/n each), GPU seconds (compute x the GPUs of that replica), queue
seconds (queued -> started; a row that never started: queued -> ended), cold-start
seconds (how long it waited, queued, for the replica that ran it to load), and
bytes in and out. The hour is that of the row's end.

Lines are appended in the transaction that ends the rows (``store/advancing.py``),
never updated; a report sums them (``store/usage.py``). Compute, GPU and cold start
come from the worker's :class:`~freight.prediction.Completion`; a row ended any
other way (canceled, expired, reaped, failed after its replica died) cost none that
anyone recorded. A for_each step's gathering row gets no line: it runs nothing and
no caller made it (its elements are the model's predictions).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from freight.prediction import Completion, Kind, Prediction

HOUR_S = 3600.0

#: what a report may be grouped by, in the order of a line's key
GROUPS = ("tenant", "target", "kind", "hour", "status")
#: other names a caller may give a group (``group_by=tenant,model``)
ALIASES = {"model": "target", "pipeline": "target"}


@dataclass(frozen=True, slots=True)
class UsageLine:
    """Usage of one group. A ledger line has every key; a report line has None for a
    key it is not grouped by."""

    hour: float | None
    tenant: str | None
    target: str | None
    kind: str | None
    status: str | None
    count: int = 0
    compute_s: float = 0.0
    gpu_s: float = 0.0
    queue_s: float = 0.0
    cold_start_s: float = 0.0
    bytes_in: int = 0
    bytes_out: int = 0


def hour_of(at: float) -> float:
    """The start of the hour holding ``at`` (epoch seconds)."""
    return math.floor(at / HOUR_S) * HOUR_S


def window(start: float, end: float) -> tuple[float, float]:
    """``[start, end)`` widened to whole hours: the hours a report covers."""
    return hour_of(start), math.ceil(end / HOUR_S) * HOUR_S


def group_keys(group_by: Iterable[str]) -> tuple[str, ...]:
    """The groups asked for, in :data:`GROUPS` order; ValueError for an unknown one."""
    asked = {ALIASES.get(g.strip(), g.strip()) for g in group_by if g.strip()}
    unknown = sorted(asked - set(GROUPS))
    if unknown:
        raise ValueError(
            f"cannot group usage by {', '.join(unknown)}: give any of "
            f"{', '.join(GROUPS)} (model: target)"
        )
    return tuple(g for g in GROUPS if g in asked)


def queue_s(row: Prediction) -> float:
    """Queued -> started (-> ended, for a row that never started)."""
    if row.queued_at is None:
        return 0.0
    until = row.started_at if row.started_at is not None else row.finished_at
    return max(0.0, (until or row.queued_at) - row.queued_at)


def lines(
    rows: Iterable[Prediction], spent: Mapping[str, Completion], now: float
) -> list[UsageLine]:
    """The ledger lines of the rows one transaction ended (each row once, whatever the
    number of times it is given), ``spent``: the completions of those a worker ran."""
    ended = {row.id: row for row in rows if row.status.terminal and row.kind != Kind.FOR_EACH}
    sums: dict[tuple[float, str, str, str, str], list[float]] = {}
    for row in ended.values():
        key = (hour_of(row.finished_at or now), row.tenant, row.target, row.kind, row.status)
        total = sums.get(key)
        if total is None:
            total = sums[key] = [0, 0.0, 0.0, 0.0, 0.0, 0, 0]
        total[0] += 1
        total[3] += queue_s(row)
        total[5] += row.input_bytes or 0
        total[6] += row.output_bytes or 0
        done = spent.get(row.id)
        if done is not None:
            total[1] += done.compute_s
            total[2] += done.compute_s * done.gpus
            total[4] += done.cold_start_s
    return [
        UsageLine(
            hour=key[0],
            tenant=key[1],
            target=key[2],
            kind=str(key[3]),
            status=str(key[4]),
            count=int(total[0]),
            compute_s=total[1],
            gpu_s=total[2],
            queue_s=total[3],
            cold_start_s=total[4],
            bytes_in=int(total[5]),
            bytes_out=int(total[6]),
        )
        for key, total in (sorted(sums.items()) if len(sums) > 1 else sums.items())
    ]


def total(found: Sequence[UsageLine]) -> UsageLine:
    """Every line summed into one (no key)."""
    return UsageLine(
        hour=None,
        tenant=None,
        target=None,
        kind=None,
        status=None,
        count=sum(u.count for u in found),
        compute_s=sum(u.compute_s for u in found),
        gpu_s=sum(u.gpu_s for u in found),
        queue_s=sum(u.queue_s for u in found),
        cold_start_s=sum(u.cold_start_s for u in found),
        bytes_in=sum(u.bytes_in for u in found),
        bytes_out=sum(u.bytes_out for u in found),
    )


__all__ = [
    "ALIASES",
    "GROUPS",
    "HOUR_S",
    "UsageLine",
    "group_keys",
    "hour_of",
    "lines",
    "queue_s",
    "total",
    "window",
]
