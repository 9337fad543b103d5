"""The import graph points one way: faces -> services -> engine/backends -> domain.

Read from the source with ``ast`` (every ``import``, including those under
``TYPE_CHECKING`` and inside functions), so a new arrow pointing the wrong way
fails here instead of surviving until someone reads the code. The layers and the
narrower rules are the tables of ``docs/architecture.md``, parsed here: the map a
reader follows is the one enforced.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "freight"
#: the one source of the layers: its tables are parsed here, so the map and the check
#: cannot drift apart
DOC = ROOT / "docs" / "architecture.md"
LAYER_HEADER = ("layer", "modules", "may import")
RULE_HEADER = ("module", "never imports", "why")
DOMAIN = "domain"
_NAME = re.compile(r"`(freight(?:\.\w+)*)`")


def _table(text: str, header: tuple[str, ...]) -> list[list[str]]:
    """The rows (cells stripped) of the markdown table of ``text`` headed ``header``."""
    lines = text.splitlines()
    heads = [i for i, line in enumerate(lines) if _cells(line) == list(header)]
    assert len(heads) == 1, f"{len(heads)} tables headed {header} in {DOC.name}"
    at = heads[0] + 1
    assert set(lines[at].replace("|", "").strip()) <= set("-: "), lines[at]
    rows = []
    for line in lines[at + 1 :]:
        if not line.startswith("|"):
            break
        cells = _cells(line)
        assert len(cells) == len(header), line
        rows.append(cells)
    return rows


def _cells(line: str) -> list[str]:
    line = line.strip()
    if not (line.startswith("|") and line.endswith("|")):
        return []
    return [cell.strip() for cell in line[1:-1].split("|")]


def _unit(name: str) -> str:
    """``freight.batch.driver`` -> ``batch.driver``; ``freight`` (the package) -> ``""``."""
    return name.removeprefix("freight").removeprefix(".")


def _names(cell: str) -> list[str]:
    return [_unit(name) for name in _NAME.findall(cell)]


def _layers(text: str) -> tuple[dict[str, str], dict[str, set[str]], list[str]]:
    """The layer table: unit -> layer, layer -> the layers it may import, the layers
    top to bottom."""
    layer: dict[str, str] = {}
    allowed: dict[str, set[str]] = {}
    order: list[str] = []
    for name, modules, may in _table(text, LAYER_HEADER):
        order.append(name)
        allowed[name] = set(re.findall(r"[a-z]+", may))
        for unit in _names(modules):
            assert unit not in layer, f"{unit or 'freight'} is in two layers"
            layer[unit] = name
    return layer, allowed, order


def _rules(text: str) -> dict[str, set[str]]:
    """The narrower rules: unit -> the units it must never import."""
    forbidden: dict[str, set[str]] = {}
    for module, never, _why in _table(text, RULE_HEADER):
        (unit,) = _names(module)
        forbidden.setdefault(unit, set()).update(_names(never))
    return forbidden


_TEXT = DOC.read_text()
#: top-level module or package of freight (or one module of a package whose parts sit
#: in different layers, as ``batch.service``) -> its layer; a name the table does not
#: list (only a non-module name imported from ``freight``, once the coverage test
#: passes) is domain
LAYER, ALLOWED, ORDER = _layers(_TEXT)
#: narrower rules than the layers say (their reasons are in the table)
FORBIDDEN = _rules(_TEXT)


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


def _source_of(unit: str) -> Path | None:
    """The package directory or module file of ``unit`` (``""``: the package)."""
    base = SRC.joinpath(*unit.split(".")) if unit else SRC
    if (base / "__init__.py").is_file():
        return base
    module = base.with_suffix(".py")
    return module if module.is_file() else None


def test_the_layer_table_covers_every_module() -> None:
    """Every module of freight is in a layer of docs/architecture.md: a new one is
    placed in the map before it is checked against it."""
    unplaced = sorted(
        _module_name(path) for path in MODULES if (_top(_module_name(path)) or "") not in LAYER
    )
    assert unplaced == [], f"add these to the layer table of {DOC.name}"


def test_the_tables_name_only_real_modules() -> None:
    """Each name of the two tables is a module or package of freight, at most one level
    inside a top-level package (the depth at which the checker looks)."""
    named = set(LAYER) | set(FORBIDDEN) | {u for units in FORBIDDEN.values() for u in units}
    assert sorted(u for u in named if _source_of(u) is None) == []
    assert sorted(u for u in named if u.count(".") > 1) == []
    assert set(FORBIDDEN) <= set(LAYER)


def test_the_layers_point_down() -> None:
    """A layer may import only layers listed below it in the table, and the domain (the
    last row) nothing else."""
    assert ORDER[-1] == DOMAIN and len(set(ORDER)) == len(ORDER)
    assert ALLOWED[DOMAIN] == set()
    for index, layer in enumerate(ORDER):
        assert ALLOWED[layer] <= set(ORDER[index + 1 :]), layer
    assert {"root", "face", "sdk", "service", "engine", "backend"} <= set(ORDER)


def test_the_table_parser() -> None:
    """The parser reads a table by its header, stops at its end, and names units."""
    text = (
        "intro\n\n| layer | modules | may import |\n|---|---|---|\n"
        "| top | `freight`, `freight.a.b` | low |\n| low | `freight.c` | — |\n\nafter\n"
        "| not | a | row |\n"
    )
    assert _layers(text) == (
        {"": "top", "a.b": "top", "c": "low"},
        {"top": {"low"}, "low": set()},
        ["top", "low"],
    )
    rules = "| module | never imports | why |\n|:-|:-|:-|\n| `freight.a` | `freight.b.c` | x |\n"
    assert _rules(rules) == {"a": {"b.c"}}


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
        ("freight.runner.chunks", "from freight.batch.service import BatchService", 2),
        ("freight.batch.service", "from freight.agent import Agent", 1),
        ("freight.store.ops", "from freight.storage import open_storage", 1),
        ("freight.storage.local", "import freight.store.sql", 1),
        ("freight.client._sync", "from freight.api.errors import STATUS", 2),
        ("freight.scaling.policy", "from freight.agent.worker import ModelWorker", 1),
        ("freight", "from freight.agent import Agent", 0),
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
