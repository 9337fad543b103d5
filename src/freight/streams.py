"""A prediction's history as a stream of events, for the SSE route (and any other face).

Built only from the prediction service's public reads (``get``, ``steps``,
``watch``), so it works the same in every deployment shape: there is no event
log to read, the events are *derived* from the row's stamps. A live stream does
not poll whole runs: it reads a run's rows once, then wakes on completions and
reads again only the rows that may have changed (a few step heads, never the
for_each elements, which can be thousands), with a slow poll for what no
signal announces. A prediction goes up
a fixed ladder — ``awaiting_input`` (created without its input), ``queued``,
``running``, then its terminal status — and each rung it has reached is one
event; a pipeline run adds a ``step.<rung>`` event for each rung each of its
steps reached (for_each elements are left out: a fan-out over thousands of
items would drown the stream; their step's own events summarise them).

Why a ladder and not every status change: the stamps keep only the latest
``started_at``, so a retried prediction's first attempt cannot be replayed. Each
rung is emitted at most once and the ladder never goes down, so what a live
stream shows and what a later replay derives are the same sequence, and an
event's integer id (its position in that sequence, from 1) means the same on
every connection: ``after`` (``Last-Event-ID``) resumes without repeats.

The order is that of the stamps (a row's own rungs always in ladder order, the
subject's terminal event always last). A transition stamped earlier than one
already streamed but committed later (two steps on two workers racing a poll)
is streamed when seen, with the next id; a replay places it by its stamp, so a
stream resumed across exactly such a race may repeat or skip that one event.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

from freight.errors import NotFoundError
from freight.pipelines.runs import RUN
from freight.prediction import Prediction, Status
from freight.service import PredictionService

#: how often a live stream reads its rows when nothing woke it (a completion wakes it at
#: once; a claim, ``running``, sends no signal): the settings' ``event_poll_s``
POLL_S = 1.0
STEP_PREFIX = "step."


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One event: its id within the prediction (1, 2, ...), its type (a rung's name,
    ``step.<rung>`` for a run's step) and the row it is about, as read when sent."""

    id: int
    type: str
    prediction: Prediction

    @property
    def final(self) -> bool:
        """True for the subject's terminal event: the last of the stream."""
        return not self.type.startswith(STEP_PREFIX) and Status(self.type).terminal


@dataclass(frozen=True, slots=True)
class _Transition:
    at: float  # when it happened (forced non-decreasing along a row's ladder)
    order: int  # the row's place: the subject 0, its steps 1, 2, ... in creation order
    rung: int
    type: str
    row: Prediction

    @property
    def key(self) -> tuple[str, int]:
        return (self.row.id, self.rung)


def _rungs(row: Prediction) -> list[tuple[int, str, float | None]]:
    """The rungs a row has reached, in ladder order, with their stamps."""
    reached: list[tuple[int, str, float | None]] = []
    if row.upload_expires_at is not None:  # only a prediction created without input
        reached.append((0, str(Status.AWAITING_INPUT), row.created_at))
    if row.queued_at is not None:
        reached.append((1, str(Status.QUEUED), row.queued_at))
    if row.started_at is not None:
        reached.append((2, str(Status.RUNNING), row.started_at))
    if row.status.terminal:
        reached.append((3, str(row.status), row.finished_at))
    return reached


def _transitions(row: Prediction, order: int, *, subject: bool) -> Iterable[_Transition]:
    at = row.created_at
    for rung, name, stamp in _rungs(row):
        at = max(at, stamp if stamp is not None else at)
        final = subject and rung == 3
        yield _Transition(
            at=math.inf if final else at,
            order=order,
            rung=rung,
            type=name if subject else STEP_PREFIX + name,
            row=row,
        )


def history(row: Prediction, steps: Iterable[Prediction] = ()) -> list[_Transition]:
    """Every transition the rows show, in stream order."""
    found = list(_transitions(row, 0, subject=True))
    own = sorted((s for s in steps if s.step is not None and s.item_index is None), key=_by_id)
    for order, step in enumerate(own, start=1):
        found.extend(_transitions(step, order, subject=False))
    return sorted(found, key=lambda t: (t.at, t.order, t.rung))


def _by_id(row: Prediction) -> str:
    return row.id


@dataclass(slots=True)
class _Followed:
    """What a stream follows: its subject and, for a run, its step heads by id."""

    row: Prediction
    heads: dict[str, Prediction] = field(default_factory=dict)

    def unfinished(self) -> list[str]:
        return [i for i, head in self.heads.items() if not head.status.terminal]

    def watched(self) -> list[str]:
        return [self.row.id, *self.unfinished()]

    def to_read(self, signalled: set[str]) -> list[str]:
        """The heads to read again: after a completion, those it may have moved on (its
        own, and the pending ones an advancement queues or skips); after a quiet
        poll, or once the subject ended, every unfinished one."""
        if not signalled or self.row.status.terminal:
            return self.unfinished()
        pending = {i for i, head in self.heads.items() if head.status == Status.PENDING}
        return [i for i in self.unfinished() if i in signalled or i in pending]


async def _first(svc: PredictionService, prediction_id: str) -> _Followed:
    """The subject, and a run's step heads (never its for_each elements)."""
    row = await svc.get(prediction_id)
    if row.kind != RUN:
        return _Followed(row)
    return _Followed(row, {s.id: s for s in await svc.steps(row.id, heads=True)})


async def _get(svc: PredictionService, prediction_id: str) -> Prediction | None:
    try:
        return await svc.get(prediction_id)
    except NotFoundError:
        return None


async def _refresh(svc: PredictionService, followed: _Followed, signalled: set[str]) -> bool:
    """Read again what may have changed, one row each; False once the subject is gone
    (deleted by retention while followed)."""
    row = await _get(svc, followed.row.id)
    if row is None:
        return False
    followed.row = row
    ids = followed.to_read(signalled)
    for head_id, head in zip(ids, await asyncio.gather(*(_get(svc, i) for i in ids)), strict=True):
        if head is None:
            del followed.heads[head_id]
        else:
            followed.heads[head_id] = head
    return True


def _left(poll_s: float, deadline: float | None) -> float:
    return poll_s if deadline is None else min(poll_s, deadline - time.monotonic())


async def events(
    svc: PredictionService,
    prediction_id: str,
    after: int | None = None,
    *,
    poll_s: float = POLL_S,
    max_s: float | None = None,
) -> AsyncIterator[StreamEvent]:
    """The prediction's events with ids past ``after``: first what already happened,
    then each change as it is seen, ending after the terminal event — or once
    ``max_s`` seconds have passed, like any request the server holds (the caller
    resumes with the last id). Raises NotFoundError (``prediction_not_found``) for
    an unknown id; a prediction deleted while followed (retention) ends the stream.

    It wakes when a followed row completes (:meth:`PredictionService.watch`: this
    process's completions and those PostgreSQL NOTIFYs) and then reads only the rows
    that may have changed; ``poll_s`` is the fallback for what sends no signal (a row
    claimed: ``running``). Each watch is made before the reads it guards, so a
    completion between a read and the wait is not missed (the first read of a run's
    heads excepted: a completion in that instant waits for the next poll)."""
    deadline = None if max_s is None else time.monotonic() + max_s
    watch = svc.watch([prediction_id])
    try:
        followed = await _first(svc, prediction_id)
        watch.add(followed.unfinished())
        seen: set[tuple[str, int]] = set()
        while True:
            for transition in history(followed.row, followed.heads.values()):
                if transition.key not in seen:
                    seen.add(transition.key)
                    if after is None or len(seen) > after:
                        yield StreamEvent(len(seen), transition.type, transition.row)
            left = _left(poll_s, deadline)
            if followed.row.status.terminal or left <= 0:
                return
            signalled = await watch.wait(left)
            watch.close()
            watch = svc.watch(followed.watched())  # before the reads it guards
            if not await _refresh(svc, followed, signalled):
                return
    finally:
        watch.close()


__all__ = ["POLL_S", "StreamEvent", "events", "history"]
