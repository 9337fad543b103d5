"""An invalid pipeline stops ``freight serve`` before anything starts, and ``freight
check`` lists every fault; both name the pipeline and the fault."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from tests.acceptance.conftest import run_cli

MODELS = """
import freight


class Double(freight.Model):
    name = "double"

    def predict(self, input: int) -> int:
        return input * 2
"""

BROKEN = {
    "looping": {
        "steps": {
            "a": {"model": "double", "input": "$steps.b.output"},
            "b": {"model": "double", "input": "$steps.a.output"},
        }
    },
    "dangling": {"steps": {"a": {"model": "nope", "input": "$steps.ghost.output"}}},
    "double": {"steps": {"a": {"model": "double"}}},
}


def project(tmp_path: Path, pipelines: dict[str, object]) -> Path:
    root = tmp_path / "project"
    root.mkdir(parents=True)
    (root / "models.py").write_text(MODELS)
    (root / "freight.yaml").write_text(yaml.safe_dump({"pipelines": pipelines}))
    return root


def env_for(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FREIGHT_")}
    return env | {"FREIGHT_STATE_DIR": str(tmp_path / "state")}


def test_serve_refuses_an_invalid_pipeline_naming_it(tmp_path: Path) -> None:
    """freight serve exits 2 before serving, naming the cycle, the unknown target, the
    missing step and the clash of a pipeline with a model's name."""
    root = project(tmp_path, BROKEN)
    result = run_cli("serve", str(root), "--port", "0", env=env_for(tmp_path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "freight: API" not in result.stdout
    for fact in ("looping", "a -> b -> a", "dangling", "nope", "ghost", "double"):
        assert fact in result.stderr, (fact, result.stderr)


def test_check_lists_every_fault_and_exits_1(tmp_path: Path) -> None:
    """freight check prints each fault on its own line and exits 1; a valid project
    exits 0 with a one-line summary."""
    root = project(tmp_path, BROKEN)
    result = run_cli("check", str(root), env=env_for(tmp_path))
    assert result.returncode == 1, result.stdout + result.stderr
    shown = result.stdout + result.stderr
    for fact in ("a -> b -> a", "nope", "ghost"):
        assert fact in shown, (fact, shown)
    good = project(tmp_path / "good", {"twice": {"steps": {"a": {"model": "double"}}}})
    result = run_cli("check", str(good), env=env_for(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 pipeline" in result.stdout
