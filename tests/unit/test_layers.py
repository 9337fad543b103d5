"""The import graph points one way: faces -> services -> engine/backends -> domain.

Read from the source with ``ast`` (every ``import``, including those under
``TYPE_CHECKING`` and inside functions), so a new arrow pointing the wrong way
fails here instead of surviving until someone reads the code.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "freight"

#: top-level module or package of freight (or one module of a package whose parts sit
#: in different layers, as ``batch.service``) -> its layer
LAYER = {
    "": "root",  # the package itself: the public facade (lazy client imports)
    "api": "face",
    "cli": "face",
    "web": "face",
    "client": "sdk",
    "server": "root",
    "wiring": "root",
    "service": "service",
    "intake": "service",  # the prediction service's inputs
    "system": "service",
    "backlog": "service",
    "subscriptions": "service",
    "streams": "service",
    "batch.service": "service",  # batch/: the pure core is domain, as pipelines/ is
    "batch.driver": "engine",  # run by the agent, beside the workers
    "batch.files": "engine",  # the driver's part that runs one input file
    "batch.pipeline_chunks": "engine",  # and a pipeline target's chunks
    "notify": "backend",
    "agent": "engine",
    "runner": "engine",
    "store": "backend",
    "storage": "backend",
}
# everything else: errors, prediction, keys, media, config, model, and the pure
# policies (pipelines/: DAG checks, templates, planning), which do no I/O and which
# the stores call inside their transactions
DOMAIN = "domain"

#: which layers a layer may import (besides itself and the domain)
ALLOWED = {
    "root": {"face", "sdk", "service", "engine", "backend"},
    "face": {"service", "sdk"},
    "sdk": set(),
    "service": {"backend"},
    "engine": {"backend"},
    "backend": set(),
    DOMAIN: set(),
}

#: narrower rules than the layers say, each with its reason
FORBIDDEN: dict[str, set[str]] = {
    # the runner never touches the store (nor what does: the batch driver and service)
    "runner": {
        "store",
        "agent",
        "batch.driver",
        "batch.files",
        "batch.pipeline_chunks",
        "batch.service",
    },
    "store": {"storage"},  # backends do not know each other
    "storage": {"store"},
    "client": {"server", "api", "service"},  # the SDK speaks HTTP only
}


def _top(module: str) -> str | None:
    """The unit of ``module`` that has a layer: its top-level package, or the module
    itself where LAYER names it (``batch.driver``)."""
    parts = module.split(".")
    if parts[0] != "freight" or len(parts) < 2:
        return None
    own = ".".join(parts[1:3])
    return own if own in LAYER else parts[1]


def _layer(top: str) -> str:
    return LAYER.get(top, DOMAIN)


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(module: str, source: str, is_package: bool) -> set[str]:
    tree = ast.parse(source)
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                found.add(".".join([*base, node.module or ""]).rstrip("."))
            elif node.module == "freight":  # from freight import client
                found.update(f"freight.{alias.name}" for alias in node.names)
            elif node.module:  # the module, and a module of another layer in it
                found.add(node.module)
                inner = (f"{node.module}.{alias.name}" for alias in node.names)
                found.update(name for name in inner if _top(name) != _top(node.module))
    return found


def _violations(module: str, source: str, is_package: bool = False) -> list[str]:
    own_top = _top(module) or ""
    own = _layer(own_top)
    bad: list[str] = []
    for name in sorted(_imports(module, source, is_package)):
        top = _top(name)
        if top is None or top == own_top:
            continue
        layer = _layer(top)
        if layer != own and layer != DOMAIN and layer not in ALLOWED[own]:
            bad.append(f"{own} {own_top} imports {layer} {name}")
        if top in FORBIDDEN.get(own_top, set()):
            bad.append(f"{own_top} must not import {name}")
    return bad


MODULES = sorted(SRC.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_point_down(path: Path) -> None:
    """No module imports a layer above it, and faces reach only services and the domain."""
    source = path.read_text()
    assert _violations(_module_name(path), source, path.name == "__init__.py") == []


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("freight.api.routes.x", "from freight.store.sqlite import SqliteStore", 1),
        ("freight.api.routes.x", "import freight.runner.protocol", 1),
        ("freight.api.routes.x", "from freight.agent import Agent", 1),
        ("freight.service", "from freight.api import deps", 1),
        ("freight.runner.process", "from freight.store import open_store", 1),
        ("freight.client._sync", "from freight.service import NewInput", 2),
        ("freight.errors", "from freight.service import NewInput", 1),
        ("freight.api.routes.x", "from freight.service import NewInput", 0),
        ("freight.agent.worker", "from freight.store.base import Store", 0),
        ("freight.batch.job", "from freight.batch import driver", 1),
        ("freight.batch.driver", "from freight.batch.service import BatchService", 1),
        ("freight.batch.service", "from freight.batch.job import JobDoc", 0),
        ("freight.runner.chunks", "from freight.batch.records import run_chunk", 0),
        ("freight.runner.chunks", "from freight.batch.driver import BatchDriver", 1),
    ],
)
def test_the_checker_flags_wrong_arrows(module: str, source: str, expected: int) -> None:
    """The checker itself catches arrows pointing the wrong way (so passing means something)."""
    assert len(_violations(module, source)) == expected


def _package_modules(package: str) -> dict[str, Path]:
    """Every module of ``freight.<package>`` (its ``__init__`` included) by dotted name."""
    root = SRC.parent / package.replace(".", "/")
    assert root.is_dir(), root
    return {_module_name(path): path for path in sorted(root.rglob("*.py"))}


def _edges(module: str, source: str, is_package: bool, known: set[str]) -> set[str]:
    """The modules of ``known`` that ``module`` imports: ``from pkg import name`` points at
    ``pkg.name`` when that is a module, else at ``pkg`` itself."""
    tree = ast.parse(source)
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base]).rstrip(".")
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {name for name in found if name in known and name != module}


def _graph(modules: dict[str, str], packages: set[str]) -> dict[str, set[str]]:
    """Each module of ``modules`` (name -> source; ``packages``: the ``__init__`` ones) with
    the modules of ``modules`` it imports."""
    known = set(modules)
    return {name: _edges(name, source, name in packages, known) for name, source in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of ``graph`` (its modules in order, the first repeated), or []."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []


def _sources(package: str) -> tuple[dict[str, str], set[str]]:
    paths = _package_modules(package)
    sources = {name: path.read_text() for name, path in paths.items()}
    return sources, {name for name, path in paths.items() if path.name == "__init__.py"}


def test_routes_never_import_each_other() -> None:
    """A route module reaches what it shares with others through ``freight.api`` modules
    (params, render, bodies), never through another route module."""
    sources, packages = _sources("freight.api.routes")
    graph = _graph(sources, packages)
    crossing = {
        name: sorted(targets - {"freight.api.routes"})
        for name, targets in graph.items()
        if targets - {"freight.api.routes"}
    }
    assert crossing == {}


def test_the_cli_package_has_no_import_cycle() -> None:
    """The CLI's modules import each other one way (the package's ``__init__`` wires
    them; a submodule importing it or a sibling that imports it back is a cycle)."""
    sources, packages = _sources("freight.cli")
    assert _cycle(_graph(sources, packages)) == []


def test_the_cycle_and_crossing_checks_catch_what_they_look_for() -> None:
    """The checkers find a two-module cycle, an import through the package's own name, a
    relative one, and pass a graph that only points one way."""
    looped = {
        "p": "from p import a",
        "p.a": "from p.b import x",
        "p.b": "import p.a",
    }
    assert _cycle(_graph(looped, {"p"})) == ["p.a", "p.b", "p.a"]
    relative = {"p": "", "p.a": "from . import b", "p.b": "from .a import y"}
    assert _cycle(_graph(relative, {"p"})) == ["p.a", "p.b", "p.a"]
    through_init = {"p": "from p.a import run", "p.a": "from p import helper"}
    assert _cycle(_graph(through_init, {"p"})) == ["p", "p.a", "p"]
    one_way = {"p": "from p import a, b", "p.a": "from p import b", "p.b": "import json"}
    assert _cycle(_graph(one_way, {"p"})) == []
