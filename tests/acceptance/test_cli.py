"""The ``freight`` command line as subprocesses against a real server, on both shapes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.acceptance.conftest import FREIGHT as FREIGHT_CMD
from tests.acceptance.conftest import Cli, run_cli
from tests.fixtures.server import Server

ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def test_models_predict_status_and_unknown_model(
    make_server: Callable[..., Server], cli_for: Callable[[Server], Cli]
) -> None:
    """models lists the served models; predict waits and prints the JSON output;
    status shows it; an unknown model exits 1 printing its error code."""
    cli = cli_for(make_server(models=["Echo", "Reverse"]))

    listed = cli("models")
    assert listed.returncode == 0, listed.stderr
    assert re.search(r"\becho\b.*\bjson\b", listed.stdout)
    assert re.search(r"\breverse\b.*\bbytes\b", listed.stdout)

    predicted = cli("predict", "echo", "--input", '{"x": 1}')
    assert predicted.returncode == 0, predicted.stderr
    assert json.loads(predicted.stdout) == {"x": 1}
    match = ID.search(predicted.stderr)
    assert match and "succeeded" in predicted.stderr
    prediction_id = match.group(0)

    shown = cli("status", prediction_id)
    assert shown.returncode == 0, shown.stderr
    assert prediction_id in shown.stdout
    assert re.search(r"status\s+succeeded", shown.stdout)
    assert re.search(r"target\s+echo \(model\)", shown.stdout)

    unknown = cli("predict", "nope", "--input", "{}")
    assert unknown.returncode == 1
    assert "unknown_target" in unknown.stderr and "Traceback" not in unknown.stderr

    missing = cli("status", "0193b7c2-0000-7000-8000-000000000000")
    assert missing.returncode == 1 and "prediction_not_found" in missing.stderr


def test_predict_uploads_a_file_and_cancel(
    make_server: Callable[..., Server], cli_for: Callable[[Server], Cli], tmp_path: Path
) -> None:
    """predict --input FILE uploads its bytes and -o saves the output; cancel stops a
    running prediction, and --no-wait prints its id at once."""
    cli = cli_for(make_server(models=["Reverse", "Hold"]))

    source = tmp_path / "input.bin"
    source.write_bytes(bytes(range(256)) * 4 + b"tail")
    out = tmp_path / "out.bin"
    predicted = cli("predict", "reverse", "--input", str(source), "-o", str(out))
    assert predicted.returncode == 0, predicted.stderr
    assert out.read_bytes() == source.read_bytes()[::-1]
    assert "output saved to" in predicted.stderr

    held = json.dumps({"pidfile": str(tmp_path / "hold.pid"), "ms": 60_000})
    queued = cli("predict", "hold", "--input", held, "--no-wait")
    assert queued.returncode == 0, queued.stderr
    match = ID.search(queued.stdout)
    assert match, queued.stdout
    canceled = cli("cancel", match.group(0))
    assert canceled.returncode == 0, canceled.stderr
    assert "canceled" in canceled.stdout
    shown = cli("status", match.group(0))
    assert re.search(r"status\s+canceled", shown.stdout)
    assert "canceled" in shown.stdout.split("error", 1)[-1]


def serve_project(project: Path, tmp_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """``freight serve PROJECT FLAGS``, expected to fail at start-up."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FREIGHT_")}
    env["FREIGHT_STATE_DIR"] = str(tmp_path / "state")
    return run_cli("serve", str(project), *flags, env=env, cwd=tmp_path, timeout_s=30)


MODEL = """
    import freight

    class {cls}(freight.Model):
        name = "{name}"

        def predict(self, input: dict) -> dict:
            return input
"""


@pytest.mark.parametrize(
    ("yaml_text", "setting"),
    [("port: notanumber\n", "port"), ("max_attempts: 0\n", "max_attempts")],
)
def test_serve_refuses_a_broken_setting(tmp_path: Path, yaml_text: str, setting: str) -> None:
    """serve exits non-zero with a message naming the bad freight.yaml setting."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "freight.yaml").write_text(yaml_text)
    (project / "ok_model.py").write_text(textwrap.dedent(MODEL.format(cls="Ok", name="ok")))
    # no --port: the flag would replace the port setting under test
    result = serve_project(project, tmp_path)
    assert result.returncode != 0
    assert f"{setting}:" in result.stderr and "Traceback" not in result.stderr


def test_serve_refuses_two_models_of_one_name(tmp_path: Path) -> None:
    """serve exits non-zero naming both classes that claim one model name."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "first_mod.py").write_text(textwrap.dedent(MODEL.format(cls="First", name="twin")))
    (project / "second_mod.py").write_text(textwrap.dedent(MODEL.format(cls="Second", name="twin")))
    result = serve_project(project, tmp_path, "--port", "0")
    assert result.returncode != 0
    assert "first_mod:First" in result.stderr and "second_mod:Second" in result.stderr
    assert "'twin'" in result.stderr


def test_serve_names_an_unreachable_database(tmp_path: Path) -> None:
    """serve against a database nobody listens on exits 2 naming it, no traceback."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "ok_model.py").write_text(textwrap.dedent(MODEL.format(cls="Ok", name="ok")))
    (project / "freight.yaml").write_text("database_url: postgresql://postgres@127.0.0.1:1/x\n")
    result = serve_project(project, tmp_path, "--port", "0")
    assert result.returncode == 2
    assert "cannot reach the database 127.0.0.1:1/x" in result.stderr
    assert "Traceback" not in result.stderr


def test_migrate_brings_a_fresh_database_to_head(tmp_path: Path) -> None:
    """`freight migrate` creates the schema and says so; running it again is harmless."""
    project = tmp_path / "project"
    project.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FREIGHT_")}
    env["FREIGHT_STATE_DIR"] = str(tmp_path / "state")
    for _ in range(2):
        result = run_cli("migrate", str(project), env=env, cwd=tmp_path, timeout_s=60)
        assert result.returncode == 0, result.stderr
        assert "is current" in result.stdout
    assert (tmp_path / "state" / "freight.db").exists()


def test_batch_detach_and_reattach(
    make_server: Callable[..., Server], cli_for: Callable[[Server], Cli], tmp_path: Path
) -> None:
    """`freight batch` uploads a local file and follows the job; Ctrl-C (SIGINT)
    detaches with exit 130 and leaves the job running; `batch status ID --follow -o`
    re-attaches and downloads every record, in order."""
    import signal as signals

    import httpx

    from tests.fixtures.server import wait_until

    server = make_server(models=["_Latch"])
    gate = tmp_path / "gate"
    gate.mkdir()
    data = tmp_path / "in.jsonl"
    data.write_text(
        "".join(json.dumps({"dir": str(gate), "n": i, "hold": i >= 50}) + "\n" for i in range(200))
    )
    out = tmp_path / "out.jsonl"
    env = {**server.env, "FREIGHT_URL": server.url, "COLUMNS": "200", "NO_COLOR": "1"}
    follower = subprocess.Popen(
        [*FREIGHT_CMD, "batch", "latch", str(data), "-o", str(out), "--records-per-call", "10"],
        env=env,
        cwd=server.cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with httpx.Client(base_url=server.url) as client:
        job = wait_until(
            lambda: next(
                (j for j in client.get("/v1/batch-jobs").json()["items"] if j["counts"]["done"]),
                None,
            )
        )
        follower.send_signal(signals.SIGINT)
        _, stderr = follower.communicate(timeout=30)
        assert follower.returncode == 130, stderr
        assert f"freight batch status {job['id']} --follow" in stderr
        assert client.get(f"/v1/batch-jobs/{job['id']}").json()["status"] == "running"
        assert not out.exists()
    (gate / "open").touch()
    cli = cli_for(server)
    attached = cli("batch", "status", job["id"], "--follow", "-o", str(out), timeout_s=120)
    assert attached.returncode == 0, attached.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["n"] for r in lines] == list(range(200))
