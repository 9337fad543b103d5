"""A prediction's history as a stream of events, for the SSE route (and any other face).

Built only from the prediction service's public reads (``get``, ``steps``,
``watch``), so it works the same in every deployment shape: there is no event
log to read, the events are *derived* from the row's stamps. A live stream does
not poll whole runs: it reads a run's rows once, then wakes on completions and
reads again its step heads (in one statement, never the for_each elements, which can
be thousands), with a slow poll for what no signal announces. A prediction goes up
a fixed ladder — ``awaiting_input`` (created without its input), ``queued``,
``running``, then its terminal status — and each rung it has reached is one
event; a pipeline run adds a ``step.<rung>`` event for each rung each of its
steps reached (for_each elements are left out: a fan-out over thousands of
items would drown the stream; their step's own events summarise them). A callback
step's ``running`` rung is ``step.waiting``: it runs by waiting for its answer, and
its event's data (the step's prediction object) carries the URLs that answer it.

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

A prediction's log lines (what its model printed, :mod:`freight.logs`) are ``log``
events between its rungs, each line once. They are numbered by the store already
(``seq``, from 1 per prediction), apart from the rungs, and neither order can be
derived from the other on a replay (a line and a claim race), so an event's id is
the pair of both counts as they stand after it, a :class:`Cursor`: ``"3"`` while no
line has been sent (a prediction that prints nothing streams exactly as before
lines existed), ``"3-17"`` after line 17. Resuming after ``"3-17"`` replays the rungs
past the third and the lines past the 17th; an id without a line part (a client
that never asked for lines) resumes the lines from the first. Lines are read after
the row, and only once the row shows it started (a queued prediction has printed
nothing: its stream reads no lines); the agent writes a batch's lines before it
records the batch's end, so the lines read after the row showed the end are the
last, and the terminal event still ends the stream. Embedded, the agent's
:func:`~freight.logs.signal_key` wakes the stream at once (and only the lines are
read again); another process's lines are found at the next poll (``poll_s``), one
bounded read of the lines after the last seq sent. A pipeline run's stream carries
no lines (its steps' are read by each step's id); a marker line updated after it was
sent (the bytes dropped past the bound, counted on) is not sent again.

A streaming model's chunks (:mod:`freight.streaming`) are ``chunk`` events the same
way, when asked for: numbered by the store (``seq`` from 1 per prediction), after each
round's lines, all before the terminal event (the agent stores a prediction's chunks
before it records its end); the id gets a third count, the last chunk's seq, once a
chunk was sent (``"3-0-5"``, ``"3-17-5"``), so a client resuming after a chunk gets the
next one — none lost, none twice. Embedded, the agent's
:func:`~freight.streaming.signal_key` wakes the stream at once; on PostgreSQL the
chunk's insert NOTIFYs it to every process, so the stream of another process wakes at
once too.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Self

from freight.errors import NotFoundError
from freight.logs import MAX_PAGE, LogLine, signal_key
from freight.pipelines.runs import RUN
from freight.prediction import Kind, Prediction, Status
from freight.service import PredictionService
from freight.streaming import MAX_PAGE as MAX_CHUNK_PAGE
from freight.streaming import Chunk
from freight.streaming import signal_key as chunk_key

#: how often a live stream reads its rows when nothing woke it (a completion wakes it at
#: once; a claim, ``running``, sends no signal): the settings' ``event_poll_s``
POLL_S = 1.0
STEP_PREFIX = "step."
#: a callback step's ``running`` rung, as its run's stream names it (``step.waiting``)
WAITING = "waiting"
LOG = "log"
CHUNK = "chunk"


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a stream stands: the rungs sent (``events``), the last line's ``seq`` and
    the last chunk's (``chunk``); written ``"3"``, ``"3-17"`` or ``"3-17-5"`` (an
    event's id, ``Last-Event-ID``)."""

    events: int = 0
    seq: int = 0
    chunk: int = 0

    def __str__(self) -> str:
        if self.chunk:
            return f"{self.events}-{self.seq}-{self.chunk}"
        return f"{self.events}-{self.seq}" if self.seq else str(self.events)

    @classmethod
    def parse(cls, text: str) -> Self:
        """The cursor an id names (``ValueError`` for anything else)."""
        counts = text.split("-")
        if len(counts) > 3 or not all(c.isdigit() for c in counts):
            raise ValueError(f"not an event id: {text!r}")
        events, seq, chunk = (*(int(c) for c in counts), 0, 0)[:3]
        return cls(events, seq, chunk)


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One event: the rungs sent up to it (1, 2, ...), its type (a rung's name,
    ``step.<rung>`` for a run's step, ``log`` for a line) and the row it is about, as
    read when sent (the subject's, for a line); ``seq`` is the last line sent with or
    before it, ``line`` the line of a ``log`` event; ``chunked`` the last chunk sent
    with or before it, ``chunk`` the chunk of a ``chunk`` event."""

    id: int
    type: str
    prediction: Prediction
    seq: int = 0
    line: LogLine | None = None
    chunked: int = 0
    chunk: Chunk | None = None

    @property
    def cursor(self) -> Cursor:
        """Where a stream resumed after this event starts (its id on the wire)."""
        return Cursor(self.id, self.seq, self.chunked)

    @property
    def final(self) -> bool:
        """True for the subject's terminal event: the last of the stream."""
        if self.line is not None or self.chunk is not None or self.type.startswith(STEP_PREFIX):
            return False
        return Status(self.type).terminal


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
        if not subject and rung == 2 and row.kind == Kind.CALLBACK:
            name = WAITING  # a callback step runs by waiting for its answer
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


async def _refresh(svc: PredictionService, followed: _Followed) -> bool:
    """Read the subject again, then a run's step heads all in one statement: one
    snapshot, so a step is never seen ended before a dependency it waited for (reads
    of one row each, even concurrent, could see a dependant's end and not yet its
    dependency's). False once the subject is gone (deleted by retention)."""
    row = await _get(svc, followed.row.id)
    if row is None:
        return False
    followed.row = row
    if followed.unfinished():
        followed.heads = {s.id: s for s in await svc.steps(row.id, heads=True)}
    return True


def _left(poll_s: float, deadline: float | None) -> float:
    return poll_s if deadline is None else min(poll_s, deadline - time.monotonic())


async def _lines(svc: PredictionService, prediction_id: str, after: int) -> list[LogLine]:
    """Every line past ``after``, a page (``MAX_PAGE``) at a time: one indexed read when
    there is none; at most ``max_log_bytes`` of text in all."""
    found: list[LogLine] = []
    while True:
        page = await svc.lines(prediction_id, after=after, limit=MAX_PAGE)
        found.extend(page)
        if len(page) < MAX_PAGE:
            return found
        after = page[-1].seq


async def _chunks(svc: PredictionService, prediction_id: str, after: int) -> list[Chunk]:
    """Every chunk past ``after``, a page (``MAX_CHUNK_PAGE``) at a time."""
    found: list[Chunk] = []
    while True:
        page = await svc.chunks(prediction_id, after=after, limit=MAX_CHUNK_PAGE)
        found.extend(page)
        if len(page) < MAX_CHUNK_PAGE:
            return found
        after = page[-1].seq


def _start(after: Cursor | int | None) -> Cursor:
    return after if isinstance(after, Cursor) else Cursor(after or 0)


@dataclass(slots=True)
class _Sent:
    """What a stream has sent: its rungs (by key) and the last line's seq, over what the
    client had before it connected (``start``: nothing up to it is sent again)."""

    start: Cursor
    seen: set[tuple[str, int]] = field(default_factory=set)

    def rung(self, transition: _Transition, seq: int, chunked: int = 0) -> StreamEvent | None:
        self.seen.add(transition.key)
        if len(self.seen) <= self.start.events:
            return None
        return StreamEvent(
            len(self.seen), transition.type, transition.row, seq, chunked=chunked
        )

    def line(self, row: Prediction, line: LogLine, chunked: int = 0) -> StreamEvent:
        rungs = max(len(self.seen), self.start.events)
        return StreamEvent(rungs, LOG, row, line.seq, line, chunked)

    def chunk(self, row: Prediction, chunk: Chunk, seq: int) -> StreamEvent:
        rungs = max(len(self.seen), self.start.events)
        return StreamEvent(rungs, CHUNK, row, seq, chunked=chunk.seq, chunk=chunk)


async def _round(
    svc: PredictionService,
    followed: _Followed,
    sent: _Sent,
    seq: int,
    logs: bool,
    chunked: int = 0,
    chunks: bool = False,
) -> list[StreamEvent]:
    """The events of what was just read: the new rungs, then the new lines and chunks
    (once the subject ran), then the subject's terminal event (the last: after every
    line and chunk)."""
    found = [t for t in history(followed.row, followed.heads.values()) if t.key not in sent.seen]
    end = found.pop() if found and found[-1].order == 0 and found[-1].rung == 3 else None
    out = [sent.rung(t, seq, chunked) for t in found]
    if followed.row.started_at is not None:
        if logs:
            for line in await _lines(svc, followed.row.id, seq):
                out.append(sent.line(followed.row, line, chunked))
                seq = line.seq
        if chunks:
            for chunk in await _chunks(svc, followed.row.id, chunked):
                out.append(sent.chunk(followed.row, chunk, seq))
                chunked = chunk.seq
    if end is not None:
        out.append(sent.rung(end, seq, chunked))
    return [event for event in out if event is not None]


async def events(
    svc: PredictionService,
    prediction_id: str,
    after: Cursor | int | None = None,
    *,
    logs: bool = False,
    chunks: bool = False,
    poll_s: float = POLL_S,
    max_s: float | None = None,
) -> AsyncIterator[StreamEvent]:
    """The prediction's events past ``after`` (an id's :class:`Cursor`, or a count of
    rungs): first what already happened, then each change as it is seen, ending after
    the terminal event — or once ``max_s`` seconds have passed, like any request the
    server holds (the caller resumes with the last id). With ``logs``, its log lines as
    ``log`` events too (never a run's); with ``chunks``, a streaming model's chunks as
    ``chunk`` events (never a run's). Raises NotFoundError (``prediction_not_found``)
    for an unknown id; a prediction deleted while followed (retention) ends the stream.

    It wakes when a followed row completes (:meth:`PredictionService.watch`: this
    process's completions and those PostgreSQL NOTIFYs) and then reads the subject and
    a run's heads again, or when this process wrote lines of the subject, and then
    reads only them; ``poll_s`` is the fallback for what sends no signal (a row
    claimed: ``running``; another process's lines). Each watch is made before the reads
    it guards, so a completion between a read and the wait is not missed (the first
    read of a run's heads excepted: a completion in that instant waits for the next
    poll)."""
    sent = _Sent(_start(after))
    seq, chunked = sent.start.seq, sent.start.chunk
    deadline = None if max_s is None else time.monotonic() + max_s
    # keys that wake for lines and chunks, not rows
    quiet = [signal_key(prediction_id)] if logs else []
    quiet += [chunk_key(prediction_id)] if chunks else []
    watch = svc.watch([prediction_id, *quiet])
    try:
        followed = await _first(svc, prediction_id)
        if followed.row.kind == RUN:
            quiet, logs, chunks = [], False, False
        watch.add(followed.unfinished())
        while True:
            for event in await _round(svc, followed, sent, seq, logs, chunked, chunks):
                seq, chunked = event.seq, event.chunked
                yield event
            left = _left(poll_s, deadline)
            if followed.row.status.terminal or left <= 0:
                return
            signalled = await watch.wait(left)
            watch.close()
            watch = svc.watch([*followed.watched(), *quiet])  # before the reads it guards
            if signalled and signalled <= set(quiet) and followed.row.started_at is not None:
                continue  # new lines or chunks of a row known to run: read them alone
            if not await _refresh(svc, followed):
                return
    finally:
        watch.close()


__all__ = ["CHUNK", "LOG", "POLL_S", "Cursor", "StreamEvent", "events", "history"]
