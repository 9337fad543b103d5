"""Redrive against a real server, on both shapes: a run of a -> b -> c -> d failed at
c is redriven after its model is fixed; a and b are not run again, c and d run once
(every call counted in files by tests/redrive_project/models.py)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

from tests.fixtures.server import Server
from tests.integration.helpers import error_code, wait_done

PROJECT = Path(__file__).resolve().parent.parent / "redrive_project"


def calls(directory: Path) -> Counter[str]:
    """How many times each step's model ran."""
    return Counter(p.name.split(".")[0] for p in directory.iterdir() if "." in p.name)


def test_a_run_failed_at_c_redriven_after_the_fix_runs_c_and_d_only(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    server = make_server(project=PROJECT)
    directory = tmp_path / "calls"
    with server.client() as client:
        created = client.post(
            "/v1/predictions", json={"target": "chain", "input": {"dir": str(directory), "x": 1}}
        )
        assert created.status_code == 202, created.text
        run_id = created.json()["id"]
        failed = wait_done(client, run_id)
        assert (failed["status"], failed["redrives"]) == ("failed", 0), failed
        assert failed["steps"]["c"]["status"] == "failed"
        assert calls(directory) == Counter({"a": 1, "b": 1, "c": 1})
        kept = {n: failed["steps"][n]["prediction_id"] for n in ("a", "b")}

        (directory / "fixed").touch()  # the model is fixed
        redriven = client.post(f"/v1/predictions/{run_id}/redrive")
        assert redriven.status_code == 200, redriven.text
        assert (redriven.json()["status"], redriven.json()["redrives"]) == ("running", 1)
        done = wait_done(client, run_id)
        assert (done["status"], done["output"], done["redrives"]) == ("succeeded", 7, 1)
        assert {n: done["steps"][n]["prediction_id"] for n in ("a", "b")} == kept
        assert calls(directory) == Counter({"a": 1, "b": 1, "c": 2, "d": 1})

        again = client.post(f"/v1/predictions/{run_id}/redrive")  # it succeeded
        assert (again.status_code, error_code(again)) == (409, "invalid_state")
        step = client.post(f"/v1/predictions/{kept['a']}/redrive")  # a step, no run
        assert (step.status_code, error_code(step)) == (409, "invalid_state")
        unknown = client.post("/v1/predictions/no-such-run/redrive")
        assert (unknown.status_code, error_code(unknown)) == (404, "prediction_not_found")
