"""A prediction's logs in the store: lines appended within the bound, read after a seq.

:func:`append` is one transaction for the lines of many predictions (the agent
coalesces what its runners printed): one SELECT of each prediction's last line
(``total`` is the running byte count, so the bound needs no sum), one INSERT of the
lines admitted, and the marker line inserted or updated once the bound is passed.
Only the worker holding a prediction's lease appends to it; should a stale worker
race the new attempt to the same ``seq``, ``ON CONFLICT DO NOTHING`` drops its line
rather than failing the other's. Inserts lock nothing the queue's transactions wait
on, so the lock order of ``ops.py`` is untouched. Rows go with their prediction
(``ops.purge``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from freight.logs import LOG, Append, LogLine, Printed, admit, marker_text, size
from freight.store import sql
from freight.store._op import Op, Sql

_COLUMNS = (
    "prediction_id",
    "seq",
    "at",
    "attempt",
    "stream",
    "level",
    "phase",
    "text",
    "total",
    "dropped",
)
INSERT = (
    f"INSERT INTO prediction_logs ({', '.join(_COLUMNS)}) "
    f"VALUES ({', '.join(':' + c for c in _COLUMNS)}) "
    "ON CONFLICT (prediction_id, seq) DO NOTHING"
)
LAST = """
SELECT l.prediction_id, l.seq, l.total, l.dropped FROM prediction_logs l
WHERE l.prediction_id IN {ids}
    AND l.seq = (
        SELECT max(m.seq) FROM prediction_logs m WHERE m.prediction_id = l.prediction_id
    )"""
UPDATE_MARKER = (
    "UPDATE prediction_logs SET dropped = :dropped, text = :text "
    "WHERE prediction_id = :prediction_id AND seq = :seq"
)
READ = """
SELECT seq, at, prediction_id, attempt, stream, text, level, phase, dropped
FROM prediction_logs WHERE prediction_id = :id AND seq > :after
ORDER BY seq LIMIT :limit"""


def append(appends: Sequence[Append], max_bytes: int) -> Op[list[LogLine]]:
    """Append each prediction's lines within ``max_bytes``; the lines stored (the
    marker among them when this append passed the bound)."""
    appends = [a for a in appends if a.lines or a.dropped]
    if not appends:
        return []
    in_list, params = sql.expand_in("id", sorted({a.prediction_id for a in appends}))
    last = {r[0]: (r[1], r[2], r[3]) for r in (yield Sql(LAST.format(ids=in_list), params))}
    stored: list[LogLine] = []
    rows: list[dict[str, Any]] = []
    markers: list[dict[str, Any]] = []
    for entry in appends:
        seq, total, dropped = last.get(entry.prediction_id, (0, 0, None))
        if dropped is not None:  # past the bound already: the marker counts on
            dropped += sum(size(p.text) for p in entry.lines) + entry.dropped
            text = marker_text(dropped, max_bytes)
            markers.append(
                {"prediction_id": entry.prediction_id, "seq": seq, "dropped": dropped, "text": text}
            )
            continue
        admitted = admit(total, entry.lines, max_bytes, entry.dropped)
        for printed in admitted.kept:
            seq += 1
            total += size(printed.text)
            stored.append(_line(entry, seq, printed))
            rows.append(_params(stored[-1], total))
        if admitted.dropped:
            seq += 1
            at = entry.lines[-1].at if entry.lines else time.time()
            marker = Printed(at, LOG, marker_text(admitted.dropped, max_bytes), "WARNING")
            stored.append(_line(entry, seq, marker, dropped=admitted.dropped))
            rows.append(_params(stored[-1], total))
        last[entry.prediction_id] = (seq, total, admitted.dropped or None)
    if rows:
        yield Sql(INSERT, rows[0] if len(rows) == 1 else rows)
    if markers:
        yield Sql(UPDATE_MARKER, markers[0] if len(markers) == 1 else markers)
    return stored


def read(prediction_id: str, after: int, limit: int) -> Op[list[LogLine]]:
    """The lines of ``prediction_id`` whose seq is over ``after``, at most ``limit``."""
    rows = yield Sql(READ, {"id": prediction_id, "after": after, "limit": limit})
    return [LogLine(*row) for row in rows]


def _line(entry: Append, seq: int, printed: Printed, dropped: int | None = None) -> LogLine:
    return LogLine(
        seq=seq,
        at=printed.at,
        prediction_id=entry.prediction_id,
        attempt=entry.attempt,
        stream=printed.stream,
        text=printed.text,
        level=printed.level,
        phase=printed.phase,
        dropped=dropped,
    )


def _params(line: LogLine, total: int) -> dict[str, Any]:
    return {
        "prediction_id": line.prediction_id,
        "seq": line.seq,
        "at": line.at,
        "attempt": line.attempt,
        "stream": line.stream,
        "level": line.level,
        "phase": line.phase,
        "text": line.text,
        "total": total,
        "dropped": line.dropped,
    }


__all__ = ["INSERT", "READ", "append", "read"]
