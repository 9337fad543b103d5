"""A streaming model's chunks, sans I/O: what a ``chunk`` event carries, and the request
that starts a stream — written once for both clients (as ``_flows`` does for requests).

``client.stream(model, input)`` is one real-time request, ``POST
/v1/models/{name}/predict`` with ``Accept: text/event-stream``: the prediction's events
with its chunks, each as the model yields it. Should the connection drop, the follower
(``_events.Follower``) resumes on the prediction's own event stream (``?chunks=true``)
after the last event it saw, so no chunk is lost and none seen twice; the prediction's
id comes with its first event (its ``queued``, sent at once).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from freight.client._models import _Wire
from freight.client._protocol import CONNECT_TIMEOUT_S, Call

EVENT_STREAM = "text/event-stream"
OCTET_STREAM = "application/octet-stream"


class Chunk(_Wire):
    """One chunk a streaming model yielded: ``seq`` from 1, ``attempt`` the attempt that
    yielded it, ``kind`` ``text``, ``json`` or ``bytes`` (``data`` then in base64);
    :attr:`value` is the chunk as the model yielded it."""

    prediction_id: str
    seq: int
    at: float
    attempt: int
    kind: str
    data: Any

    @property
    def value(self) -> Any:
        """The text, the JSON value, or the bytes."""
        if self.kind == "bytes":
            return base64.b64decode(self.data)
        return self.data


@dataclass(frozen=True, slots=True)
class ChunkEvent:
    """A ``chunk`` event of a prediction's stream (``client.events(id, chunks=True)``):
    the ``chunk``, and ``cursor``, the event's id (pass it as ``after`` to resume)."""

    cursor: str
    chunk: Chunk

    @property
    def type(self) -> str:
        return "chunk"

    @property
    def final(self) -> bool:
        """Never: the stream's last event is the prediction's end."""
        return False


def stream_call(
    target: str,
    input: Any = None,
    *,
    data: bytes | None = None,
    content_type: str | None = None,
    read_s: float,
) -> Call:
    """The request that creates a prediction of ``target`` and streams its events: a
    JSON ``input``, or ``data`` (bytes, of ``content_type``)."""
    if input is not None and data is not None:
        raise ValueError("give input or data, not both")
    headers = {"Accept": EVENT_STREAM, "Cache-Control": "no-cache"}
    path = f"/v1/models/{quote(target, safe='')}/predict"
    timeout = httpx.Timeout(CONNECT_TIMEOUT_S, read=read_s)
    if data is not None:
        headers["Content-Type"] = content_type or OCTET_STREAM
        return Call("POST", path, headers=headers, content=data, timeout=timeout)
    return Call("POST", path, headers=headers, json=input, has_json=True, timeout=timeout)


__all__ = ["Chunk", "ChunkEvent", "stream_call"]
