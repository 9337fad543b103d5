"""Graph algorithms over ``node -> the nodes it depends on`` maps, for steps and pipelines.

Pure and deterministic: ties are broken by the order nodes were declared in, so
a check prints the same cycle and a plan starts steps in the same order every
time. Edges to unknown nodes are ignored here (the checks report those).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable, Mapping

Needs = Mapping[str, Collection[str]]


def _known(needs: Needs, node: str) -> list[str]:
    """The node's dependencies that exist, self-loops dropped, in a stable order."""
    return sorted(d for d in set(needs[node]) if d in needs and d != node)


def dependants(needs: Needs) -> dict[str, frozenset[str]]:
    """Reverse edges: for each node, the nodes that depend on it."""
    out: dict[str, set[str]] = {node: set() for node in needs}
    for node in needs:
        for dep in _known(needs, node):
            out[dep].add(node)
    return {node: frozenset(users) for node, users in out.items()}


def in_degrees(needs: Needs) -> dict[str, int]:
    """How many (known, other) nodes each node waits for."""
    return {node: len(_known(needs, node)) for node in needs}


def topological(needs: Needs) -> tuple[str, ...]:
    """Dependencies first (Kahn's algorithm, declaration order among equals).

    Nodes on or behind a cycle never become ready; they are appended at the end
    in declaration order so the result always lists every node once.
    """
    position = {node: i for i, node in enumerate(needs)}
    waiting = in_degrees(needs)
    users = dependants(needs)
    ready = deque(node for node in needs if waiting[node] == 0)
    order: list[str] = []
    while ready:
        node = ready.popleft()
        order.append(node)
        unblocked = []
        for user in users[node]:
            waiting[user] -= 1
            if waiting[user] == 0:
                unblocked.append(user)
        ready.extend(sorted(unblocked, key=position.__getitem__))
    placed = set(order)
    return (*order, *(node for node in needs if node not in placed))


def _components(needs: Needs) -> list[list[str]]:
    """Strongly connected components (Tarjan, iterative), each in discovery order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in needs:
        if root in index:
            continue
        work: list[tuple[str, Iterable[str]]] = [(root, iter(_known(needs, root)))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            nxt = next(iter(edges), None)
            if nxt is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    found.append(_pop_component(stack, on_stack, node))
            elif nxt not in index:
                index[nxt] = low[nxt] = len(index)
                stack.append(nxt)
                on_stack.add(nxt)
                work.append((nxt, iter(_known(needs, nxt))))
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
    return found


def _pop_component(stack: list[str], on_stack: set[str], node: str) -> list[str]:
    component: list[str] = []
    while True:
        member = stack.pop()
        on_stack.discard(member)
        component.append(member)
        if member == node:
            return component[::-1]


def cycles(needs: Needs) -> list[list[str]]:
    """One cycle per group of nodes that depend on each other, in data-flow direction.

    Each is a closed walk ``[a, b, …, a]`` where every node feeds the next (the next
    one depends on it); it starts at the group's first declared node. Self-loops are
    not cycles here (a self-reference is its own fault).
    """
    position = {node: i for i, node in enumerate(needs)}
    out: list[list[str]] = []
    for component in _components(needs):
        if len(component) < 2:
            continue
        members = set(component)
        start = min(component, key=position.__getitem__)
        out.append(_shortest_loop(needs, members, start))
    return sorted(out, key=lambda loop: position[loop[0]])


def _shortest_loop(needs: Needs, members: set[str], start: str) -> list[str]:
    """A shortest walk from ``start`` back to itself along data-flow edges in ``members``."""
    feeds = {m: sorted(u for u in members if m in needs[u] and u != m) for m in members}
    parent: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for user in feeds[node]:
            if user == start:
                return [*_path_to(parent, start, node), start]
            if user not in parent:
                parent[user] = node
                queue.append(user)
    raise AssertionError("a strongly connected component always has a loop")  # pragma: no cover


def _path_to(parent: Mapping[str, str], start: str, node: str) -> list[str]:
    path = [node]
    while path[-1] != start:
        path.append(parent[path[-1]])
    return path[::-1]
