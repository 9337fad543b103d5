"""Helpers for the acceptance suite: the real CLI as a subprocess against a real server."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures.server import Server

FREIGHT = [sys.executable, "-m", "freight.cli"]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

Cli = Callable[..., subprocess.CompletedProcess[str]]


def run_cli(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout_s: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run ``freight ARGS`` to completion; wide columns so Rich does not wrap lines."""
    full_env = {**(env or os.environ), "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(
        [*FREIGHT, *args],
        env=full_env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


@pytest.fixture
def cli_for() -> Callable[[Server], Cli]:
    """A CLI runner pointed at a server through $FREIGHT_URL."""

    def bind(server: Server) -> Cli:
        def cli(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
            env = {**server.env, "FREIGHT_URL": server.url}
            return run_cli(*args, env=env, cwd=server.cwd, timeout_s=timeout_s)

        return cli

    return bind


@pytest.fixture(scope="session")
def examples_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One training cache for the example models per test session (per xdist worker)."""
    return tmp_path_factory.mktemp("examples-cache")


def render_digit_png(index: int) -> bytes:
    """examples/_training.py's renderer, loaded from its file (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        "_freight_examples_training", EXAMPLES / "_training.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    png: bytes = module.render_digit_png(index)
    return png
