"""A prediction's logs: what its model printed or logged while it handled it.

What is kept: every line a model writes to stdout or stderr, and every ``logging``
record it emits, while the runner handles a batch — attributed to every prediction
of that batch — each with its time and stream. Lines written while the replica
loaded its model belong to no prediction alone: they go to the worker's own log,
and are attached (``phase="load"``) to the predictions of the batch that waited for
that load. The bound: ``max_log_bytes`` of text per prediction; past it, lines are
dropped and one marker line (``dropped`` set) says how many bytes were.

Pure: the line, the bound (:func:`admit`), the marker's text.
"""

from __future__ import annotations

from dataclasses import dataclass

STDOUT = "stdout"
STDERR = "stderr"
LOG = "log"
STREAMS = frozenset({STDOUT, STDERR, LOG})

PREDICT = "predict"
LOAD = "load"
PHASES = frozenset({PREDICT, LOAD})

DEFAULT_MAX_LOG_BYTES = 64 * 1024
"""Default of the ``max_log_bytes`` setting: text kept per prediction."""
MAX_LINE_BYTES = 8 * 1024
"""One line longer than this is cut (a model printing a tensor must not spend the
whole bound on one line nor make a frame of megabytes)."""
MAX_PAGE = 1000
"""The most lines one read returns."""
MAX_LOAD_LINES = 200
"""The most load lines a replica keeps to attach to its first batch."""


@dataclass(frozen=True, slots=True)
class LogLine:
    """One line of a prediction's log. ``seq`` increases per prediction from 1;
    ``attempt`` is the attempt that printed it; ``dropped`` is set on the marker line
    only (the bytes dropped past the bound)."""

    seq: int
    at: float
    prediction_id: str
    attempt: int
    stream: str
    text: str
    level: str | None = None
    phase: str = PREDICT
    dropped: int | None = None


@dataclass(frozen=True, slots=True)
class Printed:
    """A line as the runner captured it: not yet anyone's, not yet numbered."""

    at: float
    stream: str
    text: str
    level: str | None = None
    phase: str = PREDICT


@dataclass(frozen=True, slots=True)
class Append:
    """Lines to append to one prediction's log, printed by its attempt ``attempt``."""

    prediction_id: str
    attempt: int
    lines: tuple[Printed, ...]
    dropped: int = 0  # bytes of lines dropped before the store (the runner's own bound)


def size(text: str) -> int:
    """The bytes a line's text counts against the bound."""
    return len(text.encode("utf-8", "replace"))


def cut(text: str, limit: int = MAX_LINE_BYTES) -> str:
    """``text`` at most ``limit`` bytes (UTF-8), marked when cut."""
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", "ignore") + f"… [{len(data) - limit} bytes cut]"


@dataclass(frozen=True, slots=True)
class Admitted:
    """What :func:`admit` keeps of some lines: those kept, and the bytes dropped."""

    kept: tuple[Printed, ...]
    dropped: int


def admit(used: int, lines: tuple[Printed, ...], max_bytes: int, later: int = 0) -> Admitted:
    """Which of ``lines`` fit in ``max_bytes`` after ``used`` bytes already kept;
    ``later``: bytes dropped after these lines already (counted as dropped).

    Lines are kept in order until the first that does not fit; it and all after it
    are dropped (a log with a hole in its middle would mislead)."""
    kept: list[Printed] = []
    dropped = 0
    for line in lines:
        n = size(line.text)
        if dropped or used + n > max_bytes:
            dropped += n
            continue
        used += n
        kept.append(line)
    return Admitted(tuple(kept), dropped + later)


def marker_text(dropped: int, max_bytes: int) -> str:
    """The marker line's text."""
    return f"[freight] log limit of {max_bytes} bytes reached: {dropped} bytes dropped"


def signal_key(prediction_id: str) -> str:
    """The key a prediction's new lines are published under (``CompletionHub``), apart
    from its completions, so that waiters of its end are not woken by its prints."""
    return f"logs:{prediction_id}"


def as_text(lines: list[LogLine]) -> str:
    """The lines as plain text, one per line (``text/plain``)."""
    return "".join(line.text + "\n" for line in lines)
