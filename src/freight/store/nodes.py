"""The store's record of the worker nodes: each node's last report of its replicas
(``agent/census.py`` writes it, the API reads it to say why work waits).

Transactions in the shape of ``ops.py`` (generators of :class:`~freight.store._op.Sql`),
run by either engine through ``Store.execute``.
"""

from __future__ import annotations

import orjson

from freight.store._op import Op, Sql
from freight.waiting import NodeReport

#: a node's row is deleted once it was not seen for this long (a node that died
#: without saying goodbye; readers ignore it long before, see ``live``)
FORGET_AFTER_S = 3600.0

REPORT = """
INSERT INTO nodes (id, host, started_at, seen_at, states)
VALUES (:id, :host, :started_at, :seen_at, :states)
ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at, states = excluded.states"""
FORGET_STALE = "DELETE FROM nodes WHERE seen_at < :before"
FORGET = "DELETE FROM nodes WHERE id = :id"
LIVE = "SELECT id, host, started_at, seen_at, states FROM nodes WHERE seen_at >= :since"


def report(node: NodeReport) -> Op[None]:
    """Record ``node``'s report (and forget the nodes gone for an hour)."""
    yield Sql(
        REPORT,
        {
            "id": node.id,
            "host": node.host,
            "started_at": node.started_at,
            "seen_at": node.seen_at,
            "states": orjson.dumps(node.to_json()).decode(),
        },
    )
    yield Sql(FORGET_STALE, {"before": node.seen_at - FORGET_AFTER_S})


def forget(node_id: str) -> Op[None]:
    """A node leaving (its agent stopped)."""
    yield Sql(FORGET, {"id": node_id})


def live(since: float) -> Op[list[NodeReport]]:
    """The nodes that reported at ``since`` or later."""
    rows = yield Sql(LIVE, {"since": since})
    return [
        NodeReport.of_row(id, host, started_at, seen_at, orjson.loads(states))
        for id, host, started_at, seen_at, states in rows
    ]
