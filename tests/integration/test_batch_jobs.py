"""Batch jobs end to end on both shapes: real server, real uploads, real models.

Each test submits input files through the job's presigned upload URLs, waits for
the job to end (polling its status with a deadline), downloads the outputs
through their presigned URLs and checks them record by record.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import signal
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.server import Server, wait_until

MODELS = ["Echo", "Boom", "_Latch"]
TERMINAL = {"succeeded", "failed", "canceled", "expired"}

pytestmark = pytest.mark.slow


def submit(
    client: httpx.Client, target: str, files: Mapping[str, bytes], **options: Any
) -> dict[str, Any]:
    """Create a job whose input is uploaded, then upload every file."""
    response = client.post(
        "/v1/batch-jobs", json={"target": target, "input": {"upload": list(files)}, **options}
    )
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    assert job["status"] == "awaiting_input"
    for name, data in files.items():
        put = httpx.put(job["upload_urls"][name], content=data, timeout=30)
        assert put.status_code == 200, put.text
        job = put.json()
    assert job["status"] in {"queued", "running", *TERMINAL}
    return job


def wait_job(client: httpx.Client, job_id: str, timeout_s: float = 90) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        body: dict[str, Any] = client.get(f"/v1/batch-jobs/{job_id}").json()
        return body if body["status"] in TERMINAL else None

    result: dict[str, Any] = wait_until(done, timeout_s, interval_s=0.1)
    return result


def fetch(url: str) -> bytes:
    response = httpx.get(url, timeout=30)
    assert response.status_code == 200, response.text
    return response.content


def jsonl(records: list[Any]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def read_jsonl(data: bytes) -> list[Any]:
    return [json.loads(line) for line in data.splitlines() if line.strip()]


@pytest.fixture
def server(shared_server: Server) -> Server:
    """The module's shared server (its jobs read their own inputs and outputs)."""
    return shared_server


def test_jsonl_in_order_with_calls_and_counts(server: Server) -> None:
    """3,000 JSON Lines records through a batched model: the output has every record,
    in input order; counts, progress and the manifest agree."""
    records = [{"i": i, "text": f"record {i}"} for i in range(3000)]
    with server.client() as client:
        job = submit(client, "echo", {"data.jsonl": jsonl(records)}, records_per_call=50)
        job = wait_job(client, job["id"])
        assert job["status"] == "succeeded", job
        assert job["counts"] == {"total": 3000, "done": 3000, "failed": 0}
        assert job["progress"] == 1.0
        (output,) = job["outputs"]
        assert output["name"] == "data.jsonl" and output["errors_uri"] is None
        assert read_jsonl(fetch(output["output_url"])) == records
        manifest = json.loads(fetch(job["output"]["manifest_url"]))
        assert manifest["status"] == "succeeded"
        assert [o["records"] for o in manifest["outputs"]] == [3000]


def test_csv_gzip_and_several_files(server: Server) -> None:
    """A gzip CSV and a plain JSON Lines file in one job: one output per file, same
    format as its input (CSV with a header, cells that read as numbers are numbers)."""
    rows = [{"id": i, "name": f"n{i}", "score": i / 10} for i in range(500)]
    text = io.StringIO()
    writer = csv.DictWriter(text, ["id", "name", "score"])
    writer.writeheader()
    writer.writerows(rows)
    files = {
        "a/rows.csv.gz": gzip.compress(text.getvalue().encode()),
        "b.jsonl": jsonl([{"k": k} for k in range(10)]),
    }
    with server.client() as client:
        job = wait_job(client, submit(client, "echo", files)["id"])
        assert job["status"] == "succeeded", job
        by_name = {o["name"]: o for o in job["outputs"]}
        assert set(by_name) == set(files)
        out = list(
            csv.DictReader(io.StringIO(fetch(by_name["a/rows.csv.gz"]["output_url"]).decode()))
        )
        assert [r["id"] for r in out] == [str(i) for i in range(500)]
        assert out[3] == {"id": "3", "name": "n3", "score": "0.3"}
        assert read_jsonl(fetch(by_name["b.jsonl"]["output_url"])) == [{"k": k} for k in range(10)]
        assert job["counts"]["done"] == 510


def test_record_errors_continue_and_fail(server: Server) -> None:
    """A malformed line and a record the model rejects are per-record errors with their
    line numbers: on_error=continue finishes the job and writes the error file;
    on_error=fail fails the job."""
    lines = [
        json.dumps({"n": 1}),
        "{not json",
        json.dumps({"fail": True, "why": "rejected"}),
        json.dumps({"n": 4}),
    ]
    data = ("\n".join(lines) + "\n").encode()
    with server.client() as client:
        job = wait_job(client, submit(client, "boom", {"x.jsonl": data}, on_error="continue")["id"])
        assert job["status"] == "succeeded", job
        assert job["counts"] == {"total": 4, "done": 2, "failed": 2}
        (output,) = job["outputs"]
        assert read_jsonl(fetch(output["output_url"])) == [{"ok": True}, {"ok": True}]
        errors = read_jsonl(fetch(output["errors_url"]))
        assert [(e["line"], e["error"]["code"]) for e in errors] == [
            (2, "invalid_record"),
            (3, "model_error"),
        ]
        assert "rejected" in errors[1]["error"]["message"]

        failed = wait_job(client, submit(client, "boom", {"x.jsonl": data})["id"])
        assert failed["status"] == "failed"
        assert failed["error"]["code"] == "record_failed"


def test_join_and_filters(server: Server) -> None:
    """input_filter picks what the model sees, output_filter what is kept of its
    answer, join=input puts each input record beside its output."""
    records = [{"id": i, "payload": {"v": i}} for i in range(20)]
    with server.client() as client:
        job = submit(
            client,
            "echo",
            {"f.jsonl": jsonl(records)},
            input_filter="payload",
            output_filter="v",
            join="input",
        )
        job = wait_job(client, job["id"])
        assert job["status"] == "succeeded", job
        out = read_jsonl(fetch(job["outputs"][0]["output_url"]))
        assert out == [{"input": r, "output": r["payload"]["v"]} for r in records]


def test_empty_input_succeeds_with_zero_records(server: Server) -> None:
    """An empty file is a succeeded job with zero records and an empty output."""
    with server.client() as client:
        job = wait_job(client, submit(client, "echo", {"empty.jsonl": b""})["id"])
        assert job["status"] == "succeeded", job
        assert job["counts"] == {"total": 0, "done": 0, "failed": 0}
        assert fetch(job["outputs"][0]["output_url"]) == b""


def test_bad_requests_fail_at_create(make_server: Callable[..., Server]) -> None:
    """Unknown target, unreadable input location, location outside the store or among
    freight's own objects, bad options and a bad filter: a precise 4xx at create, and
    no job left behind."""
    server = make_server(models=MODELS)  # compares the whole list of jobs
    with server.client() as client:
        before = client.get("/v1/batch-jobs").json()["items"]
        cases = [
            ({"target": "nope", "input": {"upload": ["a.jsonl"]}}, 404, "unknown_target"),
            ({"target": "echo", "input": "freight://missing/data.jsonl"}, 404, "input_not_found"),
            ({"target": "echo", "input": "freight://missing/"}, 404, "input_not_found"),
            ({"target": "echo", "input": "ftp://elsewhere/x.jsonl"}, 400, "invalid_location"),
            ({"target": "echo", "input": "freight://batch/x/chunks/"}, 400, "invalid_location"),
            (
                {"target": "echo", "input": {"upload": ["a.jsonl"]}, "output": "freight://inputs/"},
                400,
                "invalid_location",
            ),
            ({"target": "echo", "input": {"upload": ["a.txt"]}}, 400, "unknown_format"),
            ({"target": "echo", "input": {"upload": ["../a.jsonl"]}}, 400, "invalid_request"),
            (
                {"target": "echo", "input": {"upload": ["a.jsonl"]}, "input_filter": "a[["},
                400,
                "invalid_request",
            ),
            (
                {"target": "echo", "input": {"upload": ["a.jsonl"]}, "split": "word"},
                422,
                "validation_error",
            ),
        ]
        for body, status, code in cases:
            response = client.post("/v1/batch-jobs", json=body)
            assert (response.status_code, response.json()["error"]["code"]) == (status, code), (
                body,
                response.text,
            )
        garbage = client.post(
            "/v1/batch-jobs", content=b"{", headers={"Content-Type": "application/json"}
        )
        assert garbage.status_code == 400
        assert client.get("/v1/batch-jobs").json()["items"] == before
        assert client.get("/v1/batch-jobs/nope").status_code == 404


def test_a_jobs_outputs_are_the_next_jobs_input(server: Server) -> None:
    """A gzip CSV's output is ``rows.csv.out``, uncompressed; a second job over the
    first one's output prefix reads that output (not the manifest, not the error
    file) and writes ``rows.csv.out.out``."""
    text = "id,fail\n" + "".join(f"{i},{int(i == 3)}\n" for i in range(20))
    with server.client() as client:
        files = {"rows.csv.gz": gzip.compress(text.encode())}
        first = wait_job(client, submit(client, "boom", files, on_error="continue")["id"])
        assert first["status"] == "succeeded", first
        (output,) = first["outputs"]
        assert output["output_uri"] == first["output"]["uri"] + "rows.csv.out"
        assert output["errors_uri"] == first["output"]["uri"] + "rows.csv.out.errors"
        assert fetch(output["output_url"]).decode().splitlines()[:2] == ["ok", "true"]
        response = client.post(
            "/v1/batch-jobs",
            json={"target": "echo", "input": first["output"]["uri"], "output": "freight://c/"},
        )
        assert response.status_code == 202, response.text
        second = wait_job(client, response.json()["id"])
        assert second["status"] == "succeeded", second
        assert [(o["name"], o["output_uri"]) for o in second["outputs"]] == [
            ("rows.csv.out", "freight://c/rows.csv.out.out")
        ]
        assert second["counts"] == {"total": 19, "done": 19, "failed": 0}


def test_prefix_input_and_list(make_server: Callable[..., Server]) -> None:
    """A prefix holding several files is one job over all of them; jobs list newest
    first and filter by target and status."""
    server = make_server(models=MODELS)  # lists every job of the server
    with server.client() as client:
        first = wait_job(
            client,
            submit(client, "echo", {"p/1.jsonl": jsonl([1, 2]), "p/2.jsonl": jsonl([3])})["id"],
        )
        prefix = first["input"]["uri"] + "p/"
        response = client.post(
            "/v1/batch-jobs", json={"target": "echo", "input": prefix, "output": "freight://res/"}
        )
        assert response.status_code == 202, response.text
        second = wait_job(client, response.json()["id"])
        assert second["status"] == "succeeded", second
        assert [o["name"] for o in second["outputs"]] == ["1.jsonl", "2.jsonl"]
        assert second["outputs"][0]["output_uri"] == "freight://res/1.jsonl.out"
        assert second["counts"]["done"] == 3
        listed = client.get("/v1/batch-jobs", params={"target": "echo"}).json()["items"]
        assert [j["id"] for j in listed[:2]] == [second["id"], first["id"]]
        assert client.get("/v1/batch-jobs", params={"target": "boom"}).json()["items"] == []


def test_cancel_keeps_what_is_done(make_server: Callable[..., Server], tmp_path: Path) -> None:
    """Cancel while later records are held: the job is canceled, its remaining chunks
    too, and the output keeps the records that were done, in order."""
    server = make_server(models=MODELS)  # the latch model is served on demand
    gate = tmp_path / "gate"
    gate.mkdir()
    records = [{"dir": str(gate), "n": i, "hold": i >= 40} for i in range(400)]
    with server.client() as client:
        job = submit(client, "latch", {"r.jsonl": jsonl(records)}, records_per_call=10)
        wait_until(lambda: client.get(f"/v1/batch-jobs/{job['id']}").json()["counts"]["done"] >= 30)
        canceled = client.post(f"/v1/batch-jobs/{job['id']}/cancel").json()
        assert canceled["status"] == "canceled"
        (gate / "open").touch()
        manifest_url = wait_until(
            lambda: client.get(f"/v1/batch-jobs/{job['id']}").json()["output"]["manifest_url"]
        )
        manifest = json.loads(fetch(manifest_url))
        assert manifest["status"] == "canceled"
        final = client.get(f"/v1/batch-jobs/{job['id']}").json()
        (output,) = final["outputs"]
        out = [r["n"] for r in read_jsonl(fetch(output["output_url"]))]
        assert out == list(range(len(out))) and 30 <= len(out) < 400


def test_resumes_after_a_crash_without_rerunning_or_duplicating(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    """SIGKILL the server while later chunks are held, restart it: the job goes on
    from the chunks not yet done; the output holds every record once, in order, and
    the records finished before the crash did not run again."""
    gate = tmp_path / "gate"
    gate.mkdir()
    records = [{"dir": str(gate), "n": i, "hold": i >= 300} for i in range(600)]
    server = make_server(models=MODELS)
    with server.client() as client:
        job = submit(client, "latch", {"r.jsonl": jsonl(records)}, records_per_call=20)
        wait_until(
            lambda: client.get(f"/v1/batch-jobs/{job['id']}").json()["counts"]["done"] >= 200
        )
    server.signal(signal.SIGKILL)
    server.wait_exit()
    server.start()
    (gate / "open").touch()
    with server.client() as client:
        final = wait_job(client, job["id"])
        assert final["status"] == "succeeded", final
        out = [r["n"] for r in read_jsonl(fetch(final["outputs"][0]["output_url"]))]
    assert out == list(range(600))
    runs = [int(n) for n in (gate / "runs").read_text().split()]
    early = [n for n in runs if n < 200]
    assert sorted(early) == list(range(200)), "a record done before the crash ran again"


def test_a_chunk_run_again_after_its_runner_died_gives_each_record_once(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    """SIGKILL the runner while it holds a chunk: the chunk runs again on a fresh
    runner, and the output holds every record once, in order; the chunks done before
    did not run again."""
    server = make_server(models=MODELS)  # the latch model is served on demand
    gate = tmp_path / "gate"
    gate.mkdir()
    records = [{"dir": str(gate), "n": i, "hold": i >= 300} for i in range(600)]
    with server.client() as client:
        job = submit(client, "latch", {"r.jsonl": jsonl(records)}, records_per_call=20)
        wait_until(lambda: (gate / "pid").exists())
        os.kill(int((gate / "pid").read_text()), signal.SIGKILL)
        wait_until(lambda: (gate / "runs").read_text().split().count("300") >= 2)
        (gate / "open").touch()
        final = wait_job(client, job["id"])
        assert final["status"] == "succeeded", final
        assert final["counts"]["done"] == 600
        out = [r["n"] for r in read_jsonl(fetch(final["outputs"][0]["output_url"]))]
    assert out == list(range(600))
    runs = [int(n) for n in (gate / "runs").read_text().split()]
    assert sorted(n for n in runs if n < 300) == list(range(300)), "a done chunk ran again"


def test_a_pipeline_target_runs_each_record(make_server: Callable[..., Server]) -> None:
    """A job over a pipeline: each record is one run of the DAG, outputs in order."""
    project = Path(__file__).resolve().parent.parent / "pipeline_project"
    server = make_server(project=project)
    records = [{"x": i} for i in range(30)]
    with server.client() as client:
        job = submit(client, "diamond", {"xs.jsonl": jsonl(records)}, records_per_call=8)
        job = wait_job(client, job["id"])
        assert job["status"] == "succeeded", job
        assert job["target_kind"] == "pipeline"
        out = read_jsonl(fetch(job["outputs"][0]["output_url"]))
    assert out == [{"sum": 8 * i, "a": 2 * i} for i in range(30)]
