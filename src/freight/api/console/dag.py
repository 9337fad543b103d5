"""A pipeline's DAG laid out for an SVG (pure): layered, left to right.

Each step sits in the column after its deepest dependency (longest path from the
sources, :func:`freight.pipelines.graph.topological` order), rows in declaration
order within a column; edges run from a dependency's right side to its user's
left side as cubic curves. Small pipelines are the rule (tens of steps), so no
crossing minimisation is attempted.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from freight.pipelines.graph import topological

NODE_W = 168
NODE_H = 44
GAP_X = 64
GAP_Y = 20
PAD = 12


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    x: int
    y: int
    column: int


@dataclass(frozen=True, slots=True)
class Edge:
    source: str
    target: str
    path: str  # the SVG path's ``d``


@dataclass(frozen=True, slots=True)
class Layout:
    nodes: dict[str, Node]
    edges: list[Edge]
    width: int
    height: int


def columns(needs: Mapping[str, Collection[str]]) -> dict[str, int]:
    """Each node's column: 0 for a source, else one past its deepest dependency."""
    column: dict[str, int] = {}
    for node in topological(needs):
        deps = [column[d] for d in needs[node] if d in column and d != node]
        column[node] = 1 + max(deps) if deps else 0
    return column


def layout(needs: Mapping[str, Collection[str]]) -> Layout:
    """Positions for ``needs`` (step -> the steps it depends on, declaration order)."""
    column = columns(needs)
    rows: dict[int, int] = {}
    nodes: dict[str, Node] = {}
    for name in needs:  # declaration order within a column
        c = column[name]
        r = rows.get(c, 0)
        rows[c] = r + 1
        x = PAD + c * (NODE_W + GAP_X)
        nodes[name] = Node(name, x, PAD + r * (NODE_H + GAP_Y), c)
    edges = []
    for name, deps in needs.items():
        for dep in sorted(d for d in deps if d in nodes and d != name):
            a, b = nodes[dep], nodes[name]
            x1, y1 = a.x + NODE_W, a.y + NODE_H // 2
            x2, y2 = b.x, b.y + NODE_H // 2
            mid = (x1 + x2) // 2
            edges.append(Edge(dep, name, f"M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}"))
    width = PAD * 2 + (max(column.values(), default=0) + 1) * (NODE_W + GAP_X) - GAP_X
    height = PAD * 2 + max(rows.values(), default=1) * (NODE_H + GAP_Y) - GAP_Y
    return Layout(nodes, edges, width, height)


__all__ = ["NODE_H", "NODE_W", "Edge", "Layout", "Node", "columns", "layout"]
