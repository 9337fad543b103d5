"""Pipeline runs survive the server being killed at any moment, on both shapes.

A two-stage run (``chain``, declared in Python in tests/pipeline_project/) is
held inside each stage by a gate file while the whole server is SIGKILLed and
restarted: the run resumes where it was, a finished stage never runs again,
and the run ends with the output of both stages.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures.server import Server, wait_until
from tests.integration.helpers import wait_done

PROJECT = Path(__file__).resolve().parent.parent / "pipeline_project"

pytestmark = pytest.mark.slow


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_a_run_resumes_after_kills_during_and_between_steps(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    """Killed while stage one runs, then while stage two runs (one finished): after
    each restart the run goes on; each stage finished exactly once; output = input + 2."""
    gates = tmp_path / "gates"
    gates.mkdir()
    server = make_server(project=PROJECT)
    with server.client() as client:
        created = client.post(
            "/v1/predictions",
            json={"target": "chain", "input": {"dir": str(gates), "value": 40}},
        )
        assert created.status_code == 202, created.text
        run_id = created.json()["id"]
    wait_until(lambda: lines(gates / "one.runs") == 1)

    server.signal(signal.SIGKILL)  # during stage one
    server.wait_exit()
    server = make_server(project=PROJECT)
    wait_until(lambda: lines(gates / "one.runs") == 2)  # stage one runs again
    (gates / "one.open").touch()
    wait_until(lambda: lines(gates / "two.runs") == 1)

    server.signal(signal.SIGKILL)  # stage one finished, stage two running
    server.wait_exit()
    server = make_server(project=PROJECT)
    wait_until(lambda: lines(gates / "two.runs") == 2)
    (gates / "two.open").touch()
    with server.client() as client:
        done = wait_done(client, run_id)
    assert done["status"] == "succeeded", done
    assert done["output"] == 42
    assert {name: step["status"] for name, step in done["steps"].items()} == {
        "one": "succeeded",
        "two": "succeeded",
    }
    assert (lines(gates / "one.done"), lines(gates / "two.done")) == (1, 1)
    assert lines(gates / "one.runs") == 2  # never run again once finished
