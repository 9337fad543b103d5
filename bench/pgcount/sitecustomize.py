"""Bench-only: counts a freight process's PostgreSQL work (bench/dispatch.py).

On ``PYTHONPATH`` (first) of ``freight api`` / ``freight worker`` processes with
``FREIGHT_BENCH_COUNTS_DIR`` set, it counts, in that process:

- ``transactions``: the store's transactions (``freight.store.postgres.drive``), also
  by the name of their ``ops.py`` generator (``by_op``);
- ``statements``: their statements (``_execute``; an ``executemany`` counts once);
- ``round_trips``: psycopg's waits on the connection (``AsyncConnection.wait``),
  also by generator (``by_gen``): ``_execute_gen`` is one query (the pool's check
  ``""`` included; a transaction's ``BEGIN`` travels in its first query's wait, a
  round trip of its own), ``_commit_gen`` a ``COMMIT``, ``notifies`` one wake of the
  LISTEN connection; ``_set_autocommit_gen`` (the pool's check toggles it) sends
  nothing;

and on ``SIGUSR1`` writes them to ``$FREIGHT_BENCH_COUNTS_DIR/<pid>.json``. Any other
process (the runners) is left alone. Never imported by freight itself.
"""

from __future__ import annotations

import os
import sys


def _install(directory: str) -> None:
    import json
    import signal
    from pathlib import Path

    import psycopg

    from freight.store import postgres

    counts = {"transactions": 0, "statements": 0, "round_trips": 0}
    by_gen: dict[str, int] = {}
    by_op: dict[str, int] = {}  # transactions by the name of their ops.py generator
    wait, drive, execute = psycopg.AsyncConnection.wait, postgres.drive, postgres._execute

    async def counted_wait(self, gen, *args, **kwargs):  # type: ignore[no-untyped-def]
        name = getattr(gen, "__name__", "?")
        by_gen[name] = by_gen.get(name, 0) + 1
        counts["round_trips"] += 1
        return await wait(self, gen, *args, **kwargs)

    async def counted_drive(conn, op):  # type: ignore[no-untyped-def]
        counts["transactions"] += 1
        name = getattr(op, "__name__", "?")
        by_op[name] = by_op.get(name, 0) + 1
        return await drive(conn, op)

    async def counted_execute(conn, statement):  # type: ignore[no-untyped-def]
        counts["statements"] += 1
        return await execute(conn, statement)

    psycopg.AsyncConnection.wait = counted_wait  # type: ignore[method-assign]
    postgres.drive = counted_drive
    postgres._execute = counted_execute

    def dump(*_: object) -> None:
        path = Path(directory) / f"{os.getpid()}.json"
        written = path.with_suffix(".tmp")
        written.write_text(json.dumps({**counts, "by_op": by_op, "by_gen": by_gen}))
        written.replace(path)

    signal.signal(signal.SIGUSR1, dump)


_DIR = os.environ.get("FREIGHT_BENCH_COUNTS_DIR")
if _DIR and {"api", "worker"} & set(sys.argv[1:3]):
    _install(_DIR)
