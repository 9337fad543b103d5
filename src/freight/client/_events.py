"""Following a prediction's event stream, sans I/O: the SSE wire format parsed line by
line, and the rules for reconnecting — written once for both clients, which only
open the connection and hand over its lines (as ``_flows`` does for requests).

A server ends a stream after the prediction's final event, and also after it
has held the connection for its longest wait (or when its store hiccups); a
connection can also just drop. Each of those is resumed with ``Last-Event-ID``:
the server counts event ids from 1 within the prediction and replays only
later ones, so nothing is repeated (with log lines, an id also carries the last
line's seq, ``3-17``, and with chunks the last chunk's, ``3-17-5``: the follower sends
back the last id as it came). A follower that did not ask for lines (or chunks) asks
the server to leave them out, and skips any sent. A follower may start with another
request than the event stream (``start``: a real-time stream, ``client.stream``); it
learns the prediction's id from the first event, and resumes on the event stream.
A connection that brings nothing at all, a few times running, is given up on (the
server is not streaming); an HTTP error (404 from an older server without the
route, a proxy's 4xx) is raised at once, so a caller can fall back to long-polling.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import orjson
from pydantic import ValidationError

from freight.client._chunks import Chunk, ChunkEvent
from freight.client._logs import LogEvent, LogLine
from freight.client._models import Delivery, FreightClientError, Prediction, StreamEvent
from freight.client._protocol import (
    CONNECT_TIMEOUT_S,
    Call,
    error_from,
    json_body,
    media_type,
    outcome_error,
)

EVENT_STREAM = "text/event-stream"
#: the server sends a keep-alive every 15 s: three missed and the connection is dead
STREAM_READ_S = 45.0
#: connections in a row that bring not a single line before the follower gives up
MAX_EMPTY_CONNECTIONS = 3
#: the pause before the second reconnect in a row of empty ones, doubled after each
RECONNECT_PAUSE_S = 0.25


@dataclass(slots=True)
class RawEvent:
    id: str | None
    type: str
    data: str


@dataclass(slots=True)
class SseParser:
    """The ``text/event-stream`` format (the HTML standard's), one line at a time."""

    _data: list[str] = field(default_factory=list)
    _type: str = ""
    _id: str | None = None

    def feed(self, line: str) -> RawEvent | None:
        """Take one line (its terminator optional); return the event a blank line ends."""
        line = _strip_terminator(line)
        if not line:
            return self._dispatch()
        if line.startswith(":"):  # a comment: the server's keep-alive
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._type = value
        elif name == "id" and "\0" not in value:
            self._id = value
        return None

    def _dispatch(self) -> RawEvent | None:
        data, kind = self._data, self._type
        self._data, self._type = [], ""
        if not data:  # the standard: an event without data is not dispatched
            return None
        return RawEvent(self._id, kind or "message", "\n".join(data))


def _strip_terminator(line: str) -> str:
    for end in ("\r\n", "\n", "\r"):
        if line.endswith(end):
            return line[: -len(end)]
    return line


Event = StreamEvent | LogEvent | ChunkEvent


def event_from(raw: RawEvent) -> Event:
    """A freight stream event: an id (an integer, then ``-`` and a line's seq once a
    line was sent, and ``-`` and a chunk's once a chunk was) and a prediction object as
    its data, or a log line's (``log``), or a chunk's (``chunk``)."""
    try:
        event_id = _count(raw.id or "")
        if raw.type == "log":
            return LogEvent(raw.id or "", LogLine.model_validate(orjson.loads(raw.data)))
        if raw.type == "chunk":
            return ChunkEvent(raw.id or "", Chunk.model_validate(orjson.loads(raw.data)))
        prediction = Prediction.model_validate(orjson.loads(raw.data))
    except (ValueError, ValidationError, orjson.JSONDecodeError) as exc:
        raise FreightClientError(
            200, "invalid_response", f"not a freight stream event (id {raw.id!r}): {exc}"
        ) from exc
    return StreamEvent(event_id, raw.type, prediction, raw.id or "")


def _count(event_id: str) -> int:
    """The rungs an id counts (``3`` of ``3-17`` or ``3-17-5``); ValueError for what is
    not an id."""
    counts = event_id.split("-")
    if len(counts) > 3 or not all(c.isdigit() for c in counts):
        raise ValueError(f"not an event id: {event_id!r}")
    return int(counts[0])


def check_stream(response: httpx.Response) -> None:
    """Raise for an error answer (its body already read) or anything but a stream."""
    if response.is_error:
        raise error_from(response)
    kind = media_type(response.headers.get("Content-Type"))
    if kind != EVENT_STREAM:
        raise FreightClientError(
            response.status_code,
            "invalid_response",
            f"expected {EVENT_STREAM} from {response.request.url.path}, got {kind or 'nothing'}",
        )


def _retryable(error: FreightClientError) -> bool:
    """No answer at all, or the server's own trouble: worth reconnecting."""
    return error.status == 0 or error.status >= 500


class Follower:
    """One prediction's stream across connections: what to ask for next, the events
    the lines make, and whether (and after what pause) to reconnect."""

    def __init__(
        self,
        prediction_id: str | None,
        after: int | str | None,
        timeout: float | None,
        *,
        logs: bool = False,
        chunks: bool = False,
        start: Call | None = None,
    ) -> None:
        """``prediction_id`` None: ``start`` creates the prediction and streams its
        events (its id comes with the first)."""
        self.prediction_id = prediction_id
        self.status = "unfinished"  # the followed prediction's, as last heard
        self.last_id = None if after is None else str(after)
        self.logs = logs
        self.chunks = chunks
        self.start = start
        self._first = start
        self.final: StreamEvent | None = None  # the followed prediction's end, once seen
        self.done = False
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._timeout = timeout
        self._parser = SseParser()
        self._heard = False
        self._empty = 0

    @property
    def read_s(self) -> float:
        """How long one read of the stream may wait (keep-alives come every 15 s)."""
        if self._deadline is None:
            return STREAM_READ_S
        return min(STREAM_READ_S, max(self._deadline - time.monotonic(), 0.001))

    def call(self) -> Call:
        """The next connection's request, resuming after the last event seen."""
        self._parser, self._heard = SseParser(), False
        if self.start is not None:
            start, self.start = self.start, None
            return start
        if self.prediction_id is None:
            raise FreightClientError(
                0, "stream_ended", "the stream ended before it named its prediction"
            )
        headers = {"Accept": EVENT_STREAM, "Cache-Control": "no-cache"}
        if self.last_id is not None:
            headers["Last-Event-ID"] = self.last_id
        params = {"logs": "true"} if self.logs else {}  # an older server ignores them
        if self.chunks:
            params["chunks"] = "true"
        return Call(
            "GET",
            f"/v1/predictions/{quote(self.prediction_id, safe='')}/events",
            params=params,
            headers=headers,
            timeout=httpx.Timeout(CONNECT_TIMEOUT_S, read=self.read_s),
        )

    def feed(self, line: str) -> Event | None:
        """One line of the current connection; the event it completes, if any (a line
        or a chunk only when asked for)."""
        self._heard = True
        raw = self._parser.feed(line)
        event = None if raw is None else event_from(raw)
        if isinstance(event, LogEvent | ChunkEvent):
            self.last_id = event.cursor
            if isinstance(event, ChunkEvent):
                self.prediction_id = self.prediction_id or event.chunk.prediction_id
            if not (self.logs if isinstance(event, LogEvent) else self.chunks):
                event = None
        elif event is not None:
            self.last_id = event.cursor
            self.done = event.final
            if not event.type.startswith("step."):
                self.status = event.prediction.status
                self.prediction_id = self.prediction_id or event.prediction.id
            if event.final:
                self.final = event
        if not self.done:
            self.check_deadline()
        return event

    def ended(self, error: FreightClientError | None) -> float:
        """The connection ended before the final event (``error``: how). Returns the
        pause before reconnecting (at least the server's ``Retry-After``, at most what
        is left of the deadline); raises the error (or ``stream_ended``) to give up."""
        self.check_deadline()
        if self.prediction_id is None:  # the starting request did not get far
            if error is None or error.code != "too_many_streams" or self._first is None:
                raise error or FreightClientError(
                    0, "stream_ended", "the stream ended before it named its prediction"
                )
            self.start = self._first  # refused before anything was created: again
        if error is not None and not _retryable(error):
            raise error
        self._empty = 0 if self._heard else self._empty + 1
        if self._empty >= MAX_EMPTY_CONNECTIONS:
            raise error or FreightClientError(
                0,
                "stream_ended",
                f"the event stream of {self.prediction_id} keeps ending without events",
            )
        pause = 0.0 if self._empty <= 1 else min(RECONNECT_PAUSE_S * 2 ** (self._empty - 1), 2.0)
        if error is not None and error.retry_after_s:  # a server holding its most streams
            pause = max(pause, error.retry_after_s)
        if self._deadline is not None:
            pause = min(pause, max(self._deadline - time.monotonic(), 0.0))
        return pause

    def check_deadline(self) -> None:
        if self._deadline is not None and time.monotonic() >= self._deadline:
            raise TimeoutError(
                f"prediction {self.prediction_id} still {self.status} after {self._timeout} s"
            )


def outcome(follower: Follower) -> None:
    """After a stream's last event: raise the error of a prediction that did not succeed
    (424 with its code, as the real-time route answers it)."""
    final = follower.final
    if final is not None and final.prediction.status != "succeeded":
        raise outcome_error(final.prediction)


def delivery_from(response: httpx.Response) -> Delivery:
    try:
        return Delivery.model_validate(json_body(response))
    except ValidationError as exc:
        raise FreightClientError(
            response.status_code, "invalid_response", "not a delivery"
        ) from exc


def deliveries_from(response: httpx.Response) -> list[Delivery]:
    body: Any = json_body(response)
    try:
        return [Delivery.model_validate(item) for item in body["data"]]
    except (ValidationError, KeyError, TypeError) as exc:
        raise FreightClientError(
            response.status_code, "invalid_response", "not a list of deliveries"
        ) from exc
