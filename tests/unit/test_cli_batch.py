"""``freight batch`` with its client pointed at a scripted API (httpx.MockTransport)."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console
from typer.testing import CliRunner

from freight.cli import _base, _batch, app
from freight.client import Client
from tests.unit.fake_api import Api, error
from tests.unit.test_client_batch import awaiting, job

runner = CliRunner()
WIDE = {"COLUMNS": "200"}


def output_entry(name: str, failed: int = 0, records: int = 2) -> dict[str, Any]:
    errors = failed > 0
    return {
        "name": name,
        "input_uri": f"freight://batch/b1/input/{name}",
        "output_uri": f"freight://batch/b1/output/{name}.out",
        "output_url": f"http://freight.test/v1/objects/out/{name}?sig=o",
        "errors_uri": f"freight://batch/b1/output/{name}.out.errors" if errors else None,
        "errors_url": f"http://freight.test/v1/objects/err/{name}?sig=e" if errors else None,
        "records": records,
        "failed": failed,
    }


def running(done: int, total: int | None) -> httpx.Response:
    return httpx.Response(
        200,
        json=job(
            "running",
            counts={"total": total, "done": done, "failed": 0},
            progress=0.5,
            records_per_s=120.5,
            eta_s=3.0,
        ),
    )


def succeeded(*outputs: dict[str, Any], **fields: Any) -> httpx.Response:
    done = sum(o["records"] for o in outputs)
    failed = sum(o["failed"] for o in outputs)
    body = job(
        "succeeded",
        counts={"total": done + failed, "done": done, "failed": failed},
        progress=1.0,
        outputs=list(outputs),
        finished_at="2025-01-01T00:01:00Z",
    )
    body.update(fields)
    return httpx.Response(200, json=body)


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Api:
    scripted = Api()

    def client(url: str | None) -> Client:
        return Client(url or "http://freight.test", transport=httpx.MockTransport(scripted))

    monkeypatch.setattr(_base, "client_factory", client)
    monkeypatch.setattr(_batch, "POLL_S", 0.0)
    return scripted


def calls(api: Api) -> list[str]:
    return [f"{r.method} {r.url.path}" for r in api.requests]


def test_file_input_is_uploaded_followed_and_downloaded(api: Api, tmp_path: Path) -> None:
    """A local file: create with {"upload": [name]}, PUT it to its signed URL, poll until
    done, then save the output to -o and the failed records beside it as .errors."""
    source = tmp_path / "rows.jsonl"
    source.write_text('{"x": 1}\n{"x": 2}\n{"x": 3}\n')
    target = tmp_path / "result.jsonl"
    api.on("POST", "/v1/batch-jobs", httpx.Response(202, json=awaiting("rows.jsonl")))
    api.on("PUT", "/v1/batch-jobs/b1/input/rows.jsonl", httpx.Response(200, json=job()))
    api.on(
        "GET",
        "/v1/batch-jobs/b1",
        running(1, None),
        running(2, 3),
        succeeded(output_entry("rows.jsonl", failed=1)),
    )
    api.on("GET", "/v1/objects/out/rows.jsonl", httpx.Response(200, content=b'{"y": 1}\n'))
    api.on("GET", "/v1/objects/err/rows.jsonl", httpx.Response(200, content=b'{"line": 2}\n'))
    result = runner.invoke(
        app,
        ["batch", "tabular", str(source), "-o", str(target), "--records-per-call", "16"],
        env=WIDE,
    )
    assert result.exit_code == 0, result.output
    assert calls(api) == [
        "POST /v1/batch-jobs",
        "PUT /v1/batch-jobs/b1/input/rows.jsonl",
        "GET /v1/batch-jobs/b1",
        "GET /v1/batch-jobs/b1",
        "GET /v1/batch-jobs/b1",
        "GET /v1/objects/out/rows.jsonl",
        "GET /v1/objects/err/rows.jsonl",
    ]
    assert json.loads(api.requests[0].content) == {
        "target": "tabular",
        "input": {"upload": ["rows.jsonl"]},
        "records_per_call": 16,
    }
    put = api.requests[1]
    assert put.url.params["sig"] == "s-rows.jsonl" and put.content == source.read_bytes()
    assert target.read_bytes() == b'{"y": 1}\n'
    assert (tmp_path / "result.jsonl.errors").read_bytes() == b'{"line": 2}\n'
    assert "b1 succeeded: 3 records, 1 failed" in result.stdout
    assert str(target) in result.stdout


def test_directory_input_keeps_relative_names(api: Api, tmp_path: Path) -> None:
    """A directory: every file uploaded under its name relative to it, every output
    saved under that name in the output directory."""
    data = tmp_path / "data"
    (data / "more").mkdir(parents=True)
    (data / "a.csv").write_text("x\n1\n")
    (data / "more" / "b.jsonl").write_text('{"x": 2}\n')
    names = ["a.csv", "more/b.jsonl"]
    api.on("POST", "/v1/batch-jobs", httpx.Response(202, json=awaiting(*names)))
    api.on("PUT", "/v1/batch-jobs/b1/input/a.csv", httpx.Response(200, json=awaiting(*names)))
    api.on("PUT", "/v1/batch-jobs/b1/input/more/b.jsonl", httpx.Response(200, json=job()))
    api.on(
        "GET", "/v1/batch-jobs/b1", succeeded(output_entry("a.csv"), output_entry("more/b.jsonl"))
    )
    api.on("GET", "/v1/objects/out/a.csv", httpx.Response(200, content=b"y\n1\n"))
    api.on("GET", "/v1/objects/out/more/b.jsonl", httpx.Response(200, content=b'{"y": 2}\n'))
    out = tmp_path / "out"
    result = runner.invoke(app, ["batch", "tabular", str(data), "-o", str(out)], env=WIDE)
    assert result.exit_code == 0, result.output
    assert json.loads(api.requests[0].content)["input"] == {"upload": names}
    puts = [r.url.path for r in api.requests if r.method == "PUT"]
    assert puts == ["/v1/batch-jobs/b1/input/a.csv", "/v1/batch-jobs/b1/input/more/b.jsonl"]
    assert (out / "a.csv").read_bytes() == b"y\n1\n"
    assert (out / "more" / "b.jsonl").read_bytes() == b'{"y": 2}\n'
    assert "2 file(s) saved" in result.stdout


def test_uri_input_and_output_upload_and_download_nothing(api: Api) -> None:
    """URIs pass through as the job's input and output: no PUT, no object GET."""
    api.on("POST", "/v1/batch-jobs", httpx.Response(202, json=job()))
    done = succeeded(output_entry("x.jsonl"), output={"uri": "freight://results/run1/"})
    api.on("GET", "/v1/batch-jobs/b1", done)
    result = runner.invoke(
        app,
        [
            "batch",
            "tabular",
            "freight://data/",
            "-o",
            "freight://results/run1/",
            "--split",
            "line",
            "--on-error",
            "continue",
            "--join",
            "input",
            "--priority",
            "5",
        ],
        env=WIDE,
    )
    assert result.exit_code == 0, result.output
    assert calls(api) == ["POST /v1/batch-jobs", "GET /v1/batch-jobs/b1"]
    assert json.loads(api.requests[0].content) == {
        "target": "tabular",
        "input": "freight://data/",
        "output": "freight://results/run1/",
        "split": "line",
        "on_error": "continue",
        "join": "input",
        "priority": 5,
    }
    assert "freight://results/run1/" in result.stdout


def test_a_failed_job_prints_its_error_and_exits_1(api: Api, tmp_path: Path) -> None:
    """A job that fails: its error code and message, exit 1, nothing downloaded."""
    failed = job(
        "failed",
        counts={"total": None, "done": 4, "failed": 1},
        error={"code": "record_failed", "message": "line 5: boom", "detail": {}},
    )
    api.on("POST", "/v1/batch-jobs", httpx.Response(202, json=job()))
    api.on("GET", "/v1/batch-jobs/b1", running(1, None), httpx.Response(200, json=failed))
    result = runner.invoke(
        app, ["batch", "tabular", "freight://data/x.jsonl", "-o", str(tmp_path / "o.jsonl")]
    )
    assert result.exit_code == 1
    assert "record_failed" in result.stderr and "line 5: boom" in result.stderr
    assert "failed" in result.stderr
    assert not (tmp_path / "o.jsonl").exists()
    assert "Traceback" not in result.output


def test_a_server_error_exits_1_with_its_code(api: Api) -> None:
    """An unknown target (404 unknown_target) is one red line and exit 1."""
    api.on("POST", "/v1/batch-jobs", error(404, "unknown_target"))
    result = runner.invoke(app, ["batch", "nope", "freight://data/x.jsonl"])
    assert result.exit_code == 1
    assert "unknown_target" in result.stderr and "Traceback" not in result.output


def test_detach_prints_the_id_after_the_upload(api: Api, tmp_path: Path) -> None:
    """--detach: create and upload, print the id alone on stdout, follow nothing."""
    source = tmp_path / "rows.csv"
    source.write_text("x\n1\n")
    api.on("POST", "/v1/batch-jobs", httpx.Response(202, json=awaiting("rows.csv")))
    api.on("PUT", "/v1/batch-jobs/b1/input/rows.csv", httpx.Response(200, json=job()))
    result = runner.invoke(
        app, ["batch", "tabular", str(source), "-o", str(tmp_path / "out.csv"), "--detach"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == "b1\n"
    assert calls(api) == ["POST /v1/batch-jobs", "PUT /v1/batch-jobs/b1/input/rows.csv"]
    assert "freight batch status b1 --follow -o" in result.stderr


def test_ctrl_c_while_following_detaches_without_canceling(api: Api) -> None:
    """KeyboardInterrupt during the follow: exit 130, the id and how to re-attach; no
    cancel request is sent."""
    polls = 0

    def poll(request: httpx.Request) -> httpx.Response:
        nonlocal polls
        polls += 1
        if polls == 2:
            raise KeyboardInterrupt
        return running(1, 10)

    api.on("POST", "/v1/batch-jobs", httpx.Response(202, json=job()))
    api.on("GET", "/v1/batch-jobs/b1", poll)
    result = runner.invoke(app, ["batch", "tabular", "freight://data/x.jsonl"], env=WIDE)
    assert result.exit_code == 130, result.output
    assert "b1" in result.stderr
    assert "re-attach: freight batch status b1 --follow" in result.stderr
    assert not any(r.url.path.endswith("/cancel") for r in api.requests)
    assert calls(api) == ["POST /v1/batch-jobs", "GET /v1/batch-jobs/b1", "GET /v1/batch-jobs/b1"]


def test_output_over_the_input_is_a_usage_error(api: Api, tmp_path: Path) -> None:
    """-o naming the input file itself is refused (exit 2) before any request."""
    source = tmp_path / "rows.jsonl"
    source.write_text("{}\n")
    result = runner.invoke(app, ["batch", "tabular", str(source), "-o", str(source)])
    assert result.exit_code == 2
    assert api.requests == []


def test_a_missing_input_is_a_usage_error(api: Api, tmp_path: Path) -> None:
    """A local INPUT that does not exist is a usage error (exit 2), no request."""
    result = runner.invoke(app, ["batch", "tabular", str(tmp_path / "nope.jsonl")])
    assert result.exit_code == 2
    assert api.requests == []


def test_status_shows_the_job_and_its_files(api: Api) -> None:
    """status ID: a panel with status, records, rate, locations, options and the
    finished files; no follow, one request."""
    body = job(
        "running",
        counts={"total": 100, "done": 40, "failed": 2},
        progress=0.42,
        records_per_s=12.5,
        eta_s=125.0,
        outputs=[output_entry("a.jsonl", failed=2, records=40)],
    )
    api.on("GET", "/v1/batch-jobs/b1", httpx.Response(200, json=body))
    result = runner.invoke(app, ["batch", "status", "b1"], env=WIDE)
    assert result.exit_code == 0, result.output
    for expected in (
        "b1",
        "tabular (model)",
        "running",
        "42/100, 2 failed",
        "12.5 records/s",
        "ETA 2:05",
        "freight://data/x.jsonl (1 file(s))",
        "records_per_call=64",
        "a.jsonl",
        "freight://batch/b1/output/a.jsonl.out",
    ):
        assert expected in result.stdout, expected
    assert calls(api) == ["GET /v1/batch-jobs/b1"]


def test_status_follow_reattaches_and_downloads(api: Api, tmp_path: Path) -> None:
    """status ID --follow -o DIR: the progress bar until the end, then the download."""
    many = job("running", input={"uri": "freight://data/", "files": 2})
    api.on(
        "GET",
        "/v1/batch-jobs/b1",
        httpx.Response(200, json=many),
        succeeded(output_entry("a.jsonl"), output_entry("b.jsonl")),
    )
    api.on("GET", "/v1/objects/out/a.jsonl", httpx.Response(200, content=b"A"))
    api.on("GET", "/v1/objects/out/b.jsonl", httpx.Response(200, content=b"B"))
    out = tmp_path / "results"
    result = runner.invoke(app, ["batch", "status", "b1", "--follow", "-o", str(out)], env=WIDE)
    assert result.exit_code == 0, result.output
    assert (out / "a.jsonl").read_bytes() == b"A" and (out / "b.jsonl").read_bytes() == b"B"
    assert "succeeded: 4 records, 0 failed" in result.stdout


def test_a_gzip_inputs_output_is_saved_without_gz(api: Api, tmp_path: Path) -> None:
    """The output of ``rows.csv.gz`` (``rows.csv.out``, not compressed) is saved as
    ``rows.csv``; one that keeps ``.gz`` in its name keeps its ``.out`` too."""
    many = job("succeeded", input={"uri": "freight://data/", "files": 2})
    gz, clash = output_entry("rows.csv.gz"), output_entry("b.csv.gz", failed=1)
    gz["output_uri"] = "freight://batch/b1/output/rows.csv.out"
    api.on("GET", "/v1/batch-jobs/b1", httpx.Response(200, json=many | {"outputs": [gz, clash]}))
    api.on("GET", "/v1/objects/out/rows.csv.gz", httpx.Response(200, content=b"A"))
    api.on("GET", "/v1/objects/out/b.csv.gz", httpx.Response(200, content=b"B"))
    api.on("GET", "/v1/objects/err/b.csv.gz", httpx.Response(200, content=b"E"))
    out = tmp_path / "results"
    result = runner.invoke(app, ["batch", "status", "b1", "-o", str(out)], env=WIDE)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "b.csv.gz.out",
        "b.csv.gz.out.errors",
        "rows.csv",
    ]


def test_status_follow_of_a_failed_job_exits_1(api: Api) -> None:
    """Following a job that ends other than succeeded exits 1 with its status."""
    failed = job("canceled", counts={"total": None, "done": 3, "failed": 0})
    api.on("GET", "/v1/batch-jobs/b1", httpx.Response(200, json=failed))
    result = runner.invoke(app, ["batch", "status", "b1", "--follow"])
    assert result.exit_code == 1
    assert "canceled" in result.stderr


def test_list_shows_a_table(api: Api) -> None:
    """list: one row per job with its status and counts; the filters go to the server."""
    page = {
        "items": [
            job("running", id="b2", counts={"total": None, "done": 7, "failed": 1}),
            job("canceled", id="b1", counts={"total": 10, "done": 9, "failed": 0}),
        ],
        "next_cursor": "more",
    }
    api.on("GET", "/v1/batch-jobs", httpx.Response(200, json=page))
    result = runner.invoke(
        app,
        ["batch", "list", "--status", "running", "--target", "tabular", "--limit", "2"],
        env=WIDE,
    )
    assert result.exit_code == 0, result.output
    for expected in ("b2", "b1", "running", "canceled", "8/? (0%)", "9/10"):
        assert expected in result.stdout
    (sent,) = api.requests  # --limit 2 and a full first page: no second page fetched
    assert dict(sent.url.params) == {"status": "running", "target": "tabular", "limit": "2"}


def test_list_without_jobs(api: Api) -> None:
    """An empty listing says so in one line."""
    api.on("GET", "/v1/batch-jobs", httpx.Response(200, json={"items": [], "next_cursor": None}))
    result = runner.invoke(app, ["batch", "list"])
    assert (result.exit_code, result.stdout.strip()) == (0, "no batch jobs")


def test_cancel(api: Api) -> None:
    """cancel ID posts one cancel and prints what was done."""
    canceled = job("canceled", counts={"total": None, "done": 5, "failed": 0})
    api.on("POST", "/v1/batch-jobs/b1/cancel", httpx.Response(200, json=canceled))
    result = runner.invoke(app, ["batch", "cancel", "b1"])
    assert result.exit_code == 0, result.output
    assert "b1 canceled: 5/? records" in result.stdout
    assert calls(api) == ["POST /v1/batch-jobs/b1/cancel"]


def test_help_lists_the_commands_and_run_is_reachable_by_name(api: Api) -> None:
    """batch --help lists status, list, cancel and the main form; `batch run` is the
    explicit name of the main form (for a target named like a command)."""
    result = runner.invoke(app, ["batch", "--help"], env=WIDE)
    assert result.exit_code == 0, result.output
    for expected in ("status", "list", "cancel", "TARGET INPUT"):
        assert expected in result.stdout
    api.on("POST", "/v1/batch-jobs", httpx.Response(202, json=job(target="list")))
    result = runner.invoke(app, ["batch", "run", "list", "freight://data/x", "--detach"])
    assert result.exit_code == 0, result.output
    assert json.loads(api.requests[0].content)["target"] == "list"


def test_the_live_bars_show_uploads_records_rate_and_eta(
    api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a terminal: a bar per uploaded file, then records done/total, records/s, ETA."""
    screen = io.StringIO()
    terminal = Console(file=screen, force_terminal=True, width=120, color_system=None)
    monkeypatch.setattr(_batch, "err", terminal)
    source = tmp_path / "rows.jsonl"
    source.write_bytes(b'{"x": 1}\n' * 150_000)
    api.on("POST", "/v1/batch-jobs", httpx.Response(202, json=awaiting("rows.jsonl")))
    api.on("PUT", "/v1/batch-jobs/b1/input/rows.jsonl", httpx.Response(200, json=job()))
    api.on("GET", "/v1/batch-jobs/b1", running(500, 1000), succeeded(output_entry("rows.jsonl")))
    result = runner.invoke(app, ["batch", "tabular", str(source)])
    assert result.exit_code == 0, result.output
    drawn = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", screen.getvalue())
    for expected in ("upload 1 file(s)", "1.4 MB", "500/1,000 records", "120 rec/s", "ETA 0:03"):
        assert expected in drawn, expected
    assert "following batch job b1" in drawn


def test_the_four_spellings_of_the_batch_options_agree() -> None:
    """batch.options.Options is the one definition: the API body inherits it, and the
    client's BatchJobOptions and the CLI's options name its fields with its types,
    choices and bounds (each left out, None, takes the server's default)."""
    import typing

    import typer.main
    from annotated_types import Ge, Le

    from freight.api.schemas import CreateBatchJob
    from freight.batch.options import Options
    from freight.client import BatchJobOptions, BatchOptions

    fields, types = Options.model_fields, typing.get_type_hints(Options)
    assert issubclass(CreateBatchJob, Options)
    client = typing.get_type_hints(BatchJobOptions)
    assert set(client) - set(fields) == {"output", "metadata", "webhook", "webhook_events"}
    assert set(BatchOptions.model_fields) == set(fields)  # the job's options, as read back
    assert {name: client[name] for name in fields} == {n: types[n] | None for n in fields}
    command = typer.main.get_command(_batch.batch_app)
    params: dict[str, Any] = {p.name: p for p in command.commands["run"].params}
    for name, info in fields.items():
        param = params[name]
        assert param.default is None, name
        choices = typing.get_args(types[name]) if typing.get_origin(types[name]) else ()
        if choices and all(isinstance(c, str) for c in choices):
            enum = param.type_descriptor.annotation
            assert sorted(member.value for member in enum) == sorted(choices), name
        bounds = {type(rule): rule for rule in info.metadata}
        assert (param.min, param.max) == (
            bounds[Ge].ge if Ge in bounds else None,
            bounds[Le].le if Le in bounds else None,
        ), name
