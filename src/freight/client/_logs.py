"""A prediction's logs, sans I/O: a page of lines after a seq, and one step of following
them — written once for both clients (as ``_flows`` does for every request).

Following reads pages until one is empty, then asks whether the prediction has ended:
the server writes a prediction's lines before it records its end, so the read after
the end is the last one needed. While it runs, an empty page is followed by a pause of
``poll_s`` (there is no long-poll for lines; the event stream carries them live).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import ValidationError

from freight.client._models import FreightClientError, _Wire
from freight.client._protocol import Call, Flow, json_body, pause, prediction_from, request


class LogLine(_Wire):
    """One line the model printed or logged while it handled the prediction: ``stream``
    ``stdout``, ``stderr`` or ``log`` (with its ``level``); ``phase`` ``load`` for its
    replica's load; ``dropped`` set on the one line saying the bound was reached."""

    seq: int
    at: float
    attempt: int
    stream: str
    level: str | None = None
    phase: str = "predict"
    text: str
    dropped: int | None = None


@dataclass(frozen=True, slots=True)
class LogEvent:
    """A ``log`` event of a prediction's stream (``client.events(id, logs=True)``): the
    ``line``, and ``cursor``, the event's id (pass it as ``after`` to resume)."""

    cursor: str
    line: LogLine

    @property
    def type(self) -> str:
        return "log"

    @property
    def final(self) -> bool:
        """Never: the stream's last event is the prediction's end."""
        return False


def _path(prediction_id: str) -> str:
    return f"/v1/predictions/{quote(prediction_id, safe='')}"


def lines_from(response: httpx.Response) -> list[LogLine]:
    body: Any = json_body(response)
    try:
        return [LogLine.model_validate(item) for item in body["data"]]
    except (ValidationError, KeyError, TypeError) as exc:
        raise FreightClientError(
            response.status_code, "invalid_response", "not a page of log lines"
        ) from exc


def logs(prediction_id: str, *, after: int = 0, limit: int = 1000) -> Flow[list[LogLine]]:
    """The lines whose seq is over ``after`` (at most ``limit``)."""
    params = {"after": str(after), "limit": str(limit)}
    return lines_from(
        (yield from request(Call("GET", _path(prediction_id) + "/logs", params=params)))
    )


def follow_step(
    prediction_id: str, after: int, *, poll_s: float = 0.5
) -> Flow[tuple[list[LogLine], bool]]:
    """The next lines after ``after``, and whether that was the last of them (the
    prediction ended and nothing is left); pauses ``poll_s`` when there was none yet."""
    lines = yield from logs(prediction_id, after=after)
    if lines:
        return lines, False
    prediction = prediction_from((yield from request(Call("GET", _path(prediction_id)))))
    if prediction.terminal:
        lines = yield from logs(prediction_id, after=after)
        return lines, not lines
    yield from pause(poll_s)
    return [], False


__all__ = ["LogEvent", "LogLine", "follow_step", "lines_from", "logs"]
