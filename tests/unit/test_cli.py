"""The freight CLI with its client pointed at a scripted API (httpx.MockTransport)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from freight.cli import _app, _base, app
from freight.client import Client

runner = CliRunner()


def prediction(status: str = "queued", **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "p1",
        "target": "digits",
        "kind": "model",
        "status": status,
        "created_at": "2025-01-01T00:00:00Z",
        "metrics": {"queue_ms": 12.5, "run_ms": 40.0, "total_ms": 55.0, "batch_size": 4},
        "attempts": 1,
        "priority": 0,
        "urls": {"self": "/v1/predictions/p1"},
    }
    body.update(fields)
    return body


class Api:
    """Scripted answers per (method, path); the last answer repeats. Records requests."""

    def __init__(self) -> None:
        self.answers: dict[tuple[str, str], list[httpx.Response]] = {}
        self.requests: list[httpx.Request] = []
        self.urls: list[str | None] = []

    def on(self, method: str, path: str, *answers: httpx.Response) -> None:
        self.answers[(method, path)] = list(answers)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        queue = self.answers.get((request.method, request.url.path))
        if not queue:
            body = {"error": {"code": "not_found", "message": "no such thing", "detail": {}}}
            return httpx.Response(404, json=body)
        return queue.pop(0) if len(queue) > 1 else queue[0]

    def client(self, url: str | None) -> Client:
        self.urls.append(url)
        return Client(url or "http://freight.test", transport=httpx.MockTransport(self))


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Api:
    scripted = Api()
    monkeypatch.setattr(_base, "client_factory", scripted.client)
    return scripted


def test_predict_waits_and_prints_json_output(api: Api) -> None:
    """predict --wait follows the prediction to the end and prints its JSON output."""
    api.on("POST", "/v1/predictions", httpx.Response(202, json=prediction("queued")))
    api.on(
        "GET",
        "/v1/predictions/p1",
        httpx.Response(200, json=prediction("running")),
        httpx.Response(200, json=prediction("succeeded", output={"label": 3})),
    )
    result = runner.invoke(app, ["predict", "digits", "--input", '{"x": [1, 2]}', "--wait"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"label": 3}
    assert "succeeded" in result.stderr
    assert json.loads(api.requests[0].content) == {"target": "digits", "input": {"x": [1, 2]}}


def test_predict_no_wait_prints_id_and_status(api: Api) -> None:
    """predict --no-wait prints the id and the status, and asks nothing more."""
    api.on("POST", "/v1/predictions", httpx.Response(202, json=prediction("queued")))
    result = runner.invoke(app, ["predict", "digits", "-i", "[1]", "--no-wait"])
    assert result.exit_code == 0, result.output
    assert "p1" in result.stdout and "queued" in result.stdout
    assert len(api.requests) == 1


def test_predict_uploads_a_file_and_saves_binary_output(api: Api, tmp_path: Path) -> None:
    """A non-JSON file is uploaded with a guessed type; --output saves a binary output."""
    image = tmp_path / "seven.png"
    image.write_bytes(b"\x89PNG fake")
    awaiting = prediction("awaiting_input", upload_url="/v1/uploads/p1?sig=s")
    done = prediction("succeeded", output_url="/v1/objects/out", output_content_type="image/png")
    api.on("POST", "/v1/predictions", httpx.Response(202, json=awaiting))
    api.on("PUT", "/v1/uploads/p1", httpx.Response(200, json=prediction("queued")))
    api.on("GET", "/v1/predictions/p1", httpx.Response(200, json=done))
    api.on("GET", "/v1/objects/out", httpx.Response(200, content=b"result-bytes"))
    saved = tmp_path / "out.png"
    result = runner.invoke(
        app, ["predict", "digits", "--input", str(image), "--output", str(saved)]
    )
    assert result.exit_code == 0, result.output
    put = api.requests[1]
    assert (put.method, put.headers["Content-Type"], put.content) == (
        "PUT",
        "image/png",
        b"\x89PNG fake",
    )
    assert saved.read_bytes() == b"result-bytes"
    assert "out.png" in result.stderr


def test_predict_sends_a_json_file_as_json(api: Api, tmp_path: Path) -> None:
    """A .json file is read and sent as the inline JSON input, not uploaded."""
    rows = tmp_path / "rows.json"
    rows.write_text('[{"a": 1}]')
    api.on("POST", "/v1/predictions", httpx.Response(202, json=prediction("queued")))
    result = runner.invoke(app, ["predict", "tabular", "--input", str(rows), "--no-wait"])
    assert result.exit_code == 0, result.output
    assert json.loads(api.requests[0].content)["input"] == [{"a": 1}]


def test_predict_rejects_an_input_that_is_neither_json_nor_a_file(api: Api) -> None:
    """A bad --input is a usage error (exit 2) before any request."""
    result = runner.invoke(app, ["predict", "digits", "--input", "no-such-file.png"])
    assert result.exit_code == 2
    assert api.requests == []


def test_failed_prediction_exits_1_with_its_code(api: Api) -> None:
    """A prediction that fails prints its error code in red and exits 1."""
    failed = prediction("failed", error={"code": "model_error", "message": "boom", "detail": {}})
    api.on("POST", "/v1/predictions", httpx.Response(200, json=failed))
    result = runner.invoke(app, ["predict", "digits", "--input", "{}"])
    assert result.exit_code == 1
    assert "model_error" in result.stderr and "boom" in result.stderr
    assert "Traceback" not in result.output


def test_status_shows_a_panel(api: Api) -> None:
    """status shows the prediction's status, timings, attempts and error."""
    failed = prediction(
        "failed", attempts=3, error={"code": "attempts_exhausted", "message": "gave up"}
    )
    api.on("GET", "/v1/predictions/p1", httpx.Response(200, json=failed))
    result = runner.invoke(app, ["status", "p1"])
    assert result.exit_code == 0, result.output
    for expected in ("p1", "failed", "attempts", "3", "55.0 ms", "attempts_exhausted"):
        assert expected in result.stdout


def test_unknown_prediction_exits_1_without_traceback(api: Api) -> None:
    """A client error is one red line with the code, exit status 1, no traceback."""
    result = runner.invoke(app, ["status", "nope"])
    assert result.exit_code == 1
    assert "not_found" in result.stderr
    assert "Traceback" not in result.output


def test_unreachable_server_exits_1(monkeypatch: pytest.MonkeyPatch) -> None:
    """No server at the URL: connection_error, exit 1."""

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    monkeypatch.setattr(
        _base, "client_factory", lambda url: Client(url, transport=httpx.MockTransport(refuse))
    )
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 1
    assert "connection_error" in result.stderr


def test_models_table_and_cancel(api: Api) -> None:
    """models lists each model's settings and backlog; cancel reports the new status."""
    listing = {
        "data": [
            {
                "name": "echo",
                "input_kind": "json",
                "batching": {"max_size": 64, "max_wait_ms": 0},
                "replicas": {"min": 2, "max": 2, "running": 2},
                "backlog": {"queued": 7, "running": 1},
            }
        ]
    }
    api.on("GET", "/v1/models", httpx.Response(200, json=listing))
    api.on("POST", "/v1/predictions/p1/cancel", httpx.Response(200, json=prediction("canceled")))
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    assert "echo" in result.stdout and "7" in result.stdout
    result = runner.invoke(app, ["cancel", "p1"])
    assert result.exit_code == 0, result.output
    assert "canceled" in result.stdout


def test_url_option_global_and_per_command(api: Api) -> None:
    """--url before the command applies to it; --url on the command wins."""
    api.on("GET", "/v1/models", httpx.Response(200, json={"data": []}))
    runner.invoke(app, ["--url", "http://global.test", "models"])
    runner.invoke(app, ["--url", "http://global.test", "models", "--url", "http://mine.test"])
    runner.invoke(app, ["models"])
    assert api.urls == ["http://global.test", "http://mine.test", None]


def test_serve_calls_the_server_lazily(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """serve/api/worker call freight.server's entry points and exit with their code."""
    calls: list[tuple[str, Path, str | None, int | None]] = []
    fake = types.ModuleType("freight.server")

    def entry(name: str) -> Any:
        def run(
            project_dir: Path, host: str | None, port: int | None, models: Any = None
        ) -> int:
            calls.append((name, project_dir, host, port))
            if models:
                calls.append((name, project_dir, ",".join(models), None))
            return 3 if name == "serve" else 0

        return run

    for name in ("serve", "serve_api", "serve_worker"):
        setattr(fake, name, entry(name))
    monkeypatch.setitem(sys.modules, "freight.server", fake)
    result = runner.invoke(app, ["serve", str(tmp_path), "--port", "0"])
    assert result.exit_code == 3
    assert runner.invoke(app, ["worker"]).exit_code == 0
    assert runner.invoke(app, ["api", "--host", "0.0.0.0"]).exit_code == 0
    assert runner.invoke(app, ["worker", "--model", "a", "--model", "b"]).exit_code == 0
    assert calls == [
        ("serve", tmp_path, None, 0),
        ("serve_worker", Path("."), None, None),
        ("serve_api", Path("."), "0.0.0.0", None),
        ("serve_worker", Path("."), None, None),
        ("serve_worker", Path("."), "a,b", None),
    ]


PIPELINE = {
    "name": "claim",
    "timeout_s": 60,
    "output": "$steps.estimate.output",
    "steps": [
        {
            "name": "damage",
            "target": "classifier",
            "kind": "model",
            "needs": [],
            "input": "$input.image",
            "when": None,
            "for_each": None,
            "max_concurrency": None,
            "optional": False,
            "timeout_s": None,
            "max_attempts": None,
        },
        {
            "name": "estimate",
            "target": "pricing",
            "kind": "pipeline",
            "needs": ["damage"],
            "input": {"d": "$steps.damage.output"},
            "when": "steps.damage.output.severity != 'none'",
            "for_each": None,
            "max_concurrency": None,
            "optional": True,
            "timeout_s": None,
            "max_attempts": None,
        },
    ],
    "graph": 'graph TD\n    input(["input"])\n    s0["damage<br/>model: classifier"]\n',
}


def step(status: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "status": status,
        "prediction_id": f"id-{status}",
        "target": "m",
        "kind": "model",
        "attempts": 1,
        "created_at": "2025-01-01T00:00:00Z",
        "metrics": {"queue_ms": 1.0, "run_ms": 2.0},
    }
    body.update(fields)
    return body


def run_prediction(status: str, **fields: Any) -> dict[str, Any]:
    steps = {
        "damage": step("succeeded"),
        "each": step(
            "failed" if status == "failed" else "succeeded",
            kind="for_each",
            items=[
                {"index": 0, "prediction_id": "e0", "status": "succeeded", "error": None},
                {"index": 1, "prediction_id": "e1", "status": "succeeded", "error": None},
            ],
            error={"code": "model_error", "message": "element 1: boom"}
            if status == "failed"
            else None,
        ),
        "late": step("skipped"),
    }
    return prediction(status, target="claim", kind="pipeline", steps=steps, **fields)


def test_pipelines_lists_names_steps_targets_and_timeout(api: Api) -> None:
    """pipelines prints a table: name, step count, targets, timeout."""
    api.on("GET", "/v1/pipelines", httpx.Response(200, json={"data": [PIPELINE]}))
    result = runner.invoke(app, ["pipelines"])
    assert result.exit_code == 0, result.output
    for expected in ("claim", "2", "classifier, pricing", "60 s"):
        assert expected in result.stdout


def test_pipeline_shows_its_steps(api: Api) -> None:
    """pipelines NAME shows each step's target, needs, when and whether it is optional."""
    api.on("GET", "/v1/pipelines/claim", httpx.Response(200, json=PIPELINE))
    result = runner.invoke(app, ["pipelines", "claim"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for expected in ("damage", "classifier (model)", "pricing (pipeline)", "yes"):
        assert expected in result.stdout
    assert "steps.damage.output.severity != 'none'" in result.stdout


def test_pipeline_graph_prints_the_mermaid_text_only(api: Api) -> None:
    """--graph prints the Mermaid text verbatim (brackets kept), nothing else."""
    api.on("GET", "/v1/pipelines/claim", httpx.Response(200, json=PIPELINE))
    result = runner.invoke(app, ["pipelines", "claim", "--graph"])
    assert result.exit_code == 0, result.output
    assert result.stdout == PIPELINE["graph"]


def test_graph_without_a_name_is_a_usage_error(api: Api) -> None:
    """--graph without NAME exits 2 before any request."""
    assert runner.invoke(app, ["pipelines", "--graph"]).exit_code == 2
    assert api.requests == []


def test_unknown_pipeline_exits_1(api: Api) -> None:
    """An unknown pipeline name is the server's error code and exit status 1."""
    body = {"error": {"code": "unknown_pipeline", "message": "no pipeline 'x'", "detail": {}}}
    api.on("GET", "/v1/pipelines/x", httpx.Response(404, json=body))
    result = runner.invoke(app, ["pipelines", "x"])
    assert result.exit_code == 1 and "unknown_pipeline" in result.stderr


def test_predict_on_a_pipeline_prints_output_then_steps(api: Api) -> None:
    """A run's output alone on stdout; its steps with their status on stderr."""
    api.on("POST", "/v1/predictions", httpx.Response(202, json=run_prediction("queued")))
    api.on(
        "GET",
        "/v1/predictions/p1",
        httpx.Response(200, json=run_prediction("succeeded", output={"total": 3})),
    )
    result = runner.invoke(app, ["predict", "claim", "-i", "{}"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"total": 3}
    for expected in ("damage", "each", "late", "skipped", "2/2 elements succeeded"):
        assert expected in result.stderr


def test_failed_run_shows_steps_then_exits_1(api: Api) -> None:
    """A failed run prints its steps (which one failed, and why) and exits 1."""
    failed = run_prediction("failed", error={"code": "model_error", "message": "step each"})
    api.on("POST", "/v1/predictions", httpx.Response(200, json=failed))
    result = runner.invoke(app, ["predict", "claim", "-i", "{}"], env={"COLUMNS": "200"})
    assert result.exit_code == 1
    assert "element 1: boom" in result.stderr and "model_error" in result.stderr
    assert result.stderr.index("each") < result.stderr.rindex("step each")


def test_status_of_a_run_shows_its_steps(api: Api) -> None:
    """status of a run shows the panel and the steps table."""
    api.on("GET", "/v1/predictions/p1", httpx.Response(200, json=run_prediction("succeeded")))
    result = runner.invoke(app, ["status", "p1"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for expected in ("claim (pipeline)", "steps", "damage", "skipped", "2.0 ms"):
        assert expected in result.stdout


def test_status_of_a_step_names_its_run(api: Api) -> None:
    """status of a step shows the run it belongs to and its step name."""
    body = prediction("succeeded", run_id="r9", step="damage", item_index=3)
    api.on("GET", "/v1/predictions/p1", httpx.Response(200, json=body))
    result = runner.invoke(app, ["status", "p1"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "r9, step damage [3]" in result.stdout


def fake_server(monkeypatch: pytest.MonkeyPatch, result: Any) -> list[Path]:
    """Install a freight.server whose check returns ``result``; records its calls."""
    calls: list[Path] = []
    fake = types.ModuleType("freight.server")

    def check(project_dir: Path) -> Any:
        calls.append(project_dir)
        if isinstance(result, Exception):
            raise result
        return result

    setattr(fake, "check", check)  # noqa: B010 - a module built at run time
    monkeypatch.setitem(sys.modules, "freight.server", fake)
    return calls


def test_check_prints_every_fault_and_exits_1(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """check prints each fault and exits 1 when there is any."""
    faults = ["pipeline 'p', step 'a': unknown model 'x'", "pipeline 'q': nests itself"]
    calls = fake_server(monkeypatch, faults)
    result = runner.invoke(app, ["check", str(tmp_path)], env={"COLUMNS": "200"})
    assert result.exit_code == 1
    assert calls == [tmp_path]
    for fault in faults:
        assert fault in result.stderr
    assert "2 faults" in result.stderr


def test_check_ok_exits_0_with_the_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    """A valid project exits 0 with one line counting its models and pipelines."""
    fake_server(monkeypatch, [])
    monkeypatch.setattr(_app, "_counts", lambda project_dir: (1, 2))
    result = runner.invoke(app, ["check"])
    assert (result.exit_code, result.stdout.strip()) == (0, "ok: 1 model, 2 pipelines")


def test_check_turns_a_raised_error_into_a_fault(monkeypatch: pytest.MonkeyPatch) -> None:
    """A FreightError escaping the check is printed as a fault, exit 1, no traceback."""
    from freight.errors import ConfigError

    fake_server(monkeypatch, ConfigError("FREIGHT_MAX_RUN_S: not a number"))
    result = runner.invoke(app, ["check"])
    assert result.exit_code == 1
    assert "FREIGHT_MAX_RUN_S" in result.stderr and "Traceback" not in result.output


def test_redrive_restarts_a_run_and_says_how_often(api: Api) -> None:
    """redrive POSTs to the run's redrive and prints it running, with its count; a run
    that cannot be redriven exits 1 with the error's code."""
    redriven = prediction("running", kind="pipeline", target="chain", redrives=2)
    api.on("POST", "/v1/predictions/p1/redrive", httpx.Response(200, json=redriven))
    result = runner.invoke(app, ["redrive", "p1"])
    assert result.exit_code == 0, result.output
    assert "running" in result.stdout and "2 in all" in result.stderr
    assert api.requests[-1].method == "POST"
    refused = {"error": {"code": "invalid_state", "message": "p2 is running", "detail": {}}}
    api.on("POST", "/v1/predictions/p2/redrive", httpx.Response(409, json=refused))
    result = runner.invoke(app, ["redrive", "p2"])
    assert result.exit_code == 1
    assert "invalid_state" in result.stderr
