"""A streaming prediction's chunks in the store: appended numbered, read after a seq.

:func:`append` is one transaction for the chunks of many predictions (the agent
coalesces what its runners yielded meanwhile): one SELECT of each prediction's last
seq, one INSERT of the chunks numbered on from it. The INSERT is fenced on the row:
a chunk lands only while its prediction is ``running`` in the attempt that yielded it,
so a chunk still in flight when the prediction was canceled (or lost its lease) is
dropped, never shown after the stream's end. Only the worker holding a prediction's
lease appends to it; ``ON CONFLICT DO NOTHING`` drops a stale writer's chunk should it
race to the same seq. Inserts lock nothing the queue's transactions wait on, so the
lock order of ``ops.py`` is untouched. On PostgreSQL a trigger of the table NOTIFYs
``freight_done`` with the chunk's :func:`~freight.streaming.signal_key` (migration
0016), so another process's streams wake at once. Rows go with their prediction
(``ops.purge``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from freight.store import sql
from freight.store._op import Op, Sql
from freight.streaming import Append, Chunk

_COLUMNS = ("prediction_id", "seq", "at", "attempt", "kind", "data")
INSERT = (
    f"INSERT INTO prediction_chunks ({', '.join(_COLUMNS)}) "
    f"SELECT {', '.join(':' + c for c in _COLUMNS)} "
    "WHERE EXISTS (SELECT 1 FROM predictions p WHERE p.id = :prediction_id "
    "AND p.status = 'running' AND p.attempts = :attempt) "
    "ON CONFLICT (prediction_id, seq) DO NOTHING"
)
LAST = """
SELECT prediction_id, max(seq) FROM prediction_chunks
WHERE prediction_id IN {ids} GROUP BY prediction_id"""
READ = """
SELECT seq, at, prediction_id, attempt, kind, data
FROM prediction_chunks WHERE prediction_id = :id AND seq > :after
ORDER BY seq LIMIT :limit"""


def append(appends: Sequence[Append]) -> Op[list[Chunk]]:
    """Append each prediction's chunks after its last; the chunks as numbered (those
    of a prediction no longer running in their attempt are numbered, then dropped)."""
    appends = [a for a in appends if a.parts]
    if not appends:
        return []
    in_list, params = sql.expand_in("id", sorted({a.prediction_id for a in appends}))
    last: dict[str, int] = {r[0]: r[1] for r in (yield Sql(LAST.format(ids=in_list), params))}
    chunks: list[Chunk] = []
    for entry in appends:
        seq = last.get(entry.prediction_id, 0)
        for part in entry.parts:
            seq += 1
            chunks.append(
                Chunk(seq, part.at, entry.prediction_id, entry.attempt, part.kind, part.data)
            )
        last[entry.prediction_id] = seq
    rows = [_params(c) for c in chunks]
    yield Sql(INSERT, rows[0] if len(rows) == 1 else rows)
    return chunks


def read(prediction_id: str, after: int, limit: int) -> Op[list[Chunk]]:
    """The chunks of ``prediction_id`` whose seq is over ``after``, at most ``limit``."""
    rows = yield Sql(READ, {"id": prediction_id, "after": after, "limit": limit})
    return [Chunk(*row) for row in rows]


def _params(chunk: Chunk) -> dict[str, Any]:
    return {
        "prediction_id": chunk.prediction_id,
        "seq": chunk.seq,
        "at": chunk.at,
        "attempt": chunk.attempt,
        "kind": chunk.kind,
        "data": chunk.data,
    }


__all__ = ["INSERT", "READ", "append", "read"]
