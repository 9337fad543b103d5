"""The client's batch-job methods against a scripted API (httpx.MockTransport)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from freight.client import AsyncClient, BatchJob, Client, FreightClientError
from freight.client._flows import batch_job_body, local_inputs, upload_type
from tests.unit.fake_api import Api, error

SIGNED = "http://freight.test/v1/batch-jobs/b1/input/{name}?expires=99&sig=s-{name}"


def job(status: str = "queued", **fields: Any) -> dict[str, Any]:
    """A batch job object as the API renders it."""
    body: dict[str, Any] = {
        "id": "b1",
        "target": "tabular",
        "target_kind": "model",
        "status": status,
        "created_at": "2025-01-01T00:00:00Z",
        "started_at": None,
        "finished_at": None,
        "options": {
            "split": "line",
            "records_per_call": 64,
            "max_call_bytes": 6291456,
            "concurrency": 4,
            "on_error": "fail",
            "join": "none",
            "input_filter": None,
            "output_filter": None,
            "content_type": None,
            "priority": -10,
        },
        "input": {"uri": "freight://data/x.jsonl", "files": 1},
        "output": {
            "uri": "freight://batch/b1/output/",
            "manifest_uri": "freight://batch/b1/output/manifest.json",
            "manifest_url": None,
        },
        "counts": {"total": None, "done": 0, "failed": 0},
        "progress": 0.0,
        "records_per_s": None,
        "eta_s": None,
        "outputs": [],
        "error": None,
        "upload_urls": None,
        "metadata": {},
        "urls": {"self": "/v1/batch-jobs/b1", "cancel": "/v1/batch-jobs/b1/cancel"},
    }
    body.update(fields)
    return body


def awaiting(*names: str) -> dict[str, Any]:
    return job(
        "awaiting_input",
        input={"uri": "freight://batch/b1/input/", "files": len(names)},
        upload_urls={n: SIGNED.format(name=n) for n in names},
    )


@pytest.fixture
def api() -> Api:
    return Api()


@pytest.fixture
def client(api: Api) -> Iterator[Client]:
    with Client("http://freight.test", transport=httpx.MockTransport(api)) as c:
        yield c


def test_create_posts_the_uri_and_only_the_options_given(api: Api, client: Client) -> None:
    """create_batch_job() sends target, input URI, output and the options set; the
    server's defaults fill the rest. The answer parses into a BatchJob."""
    api.on("POST", "/v1/batch-jobs", httpx.Response(202, json=job()))
    created = client.create_batch_job(
        "tabular",
        "freight://data/x.jsonl",
        output="freight://results/run1/",
        records_per_call=32,
        on_error="continue",
        join="input",
        input_filter="features",
        metadata={"run": 1},
        webhook="https://hooks.test/b",
        webhook_events=["started", "completed"],
    )
    assert isinstance(created, BatchJob)
    assert (created.id, created.status, created.terminal) == ("b1", "queued", False)
    assert created.options.records_per_call == 64 and created.output.uri is not None
    assert json.loads(api.requests[0].content) == {
        "target": "tabular",
        "input": "freight://data/x.jsonl",
        "output": "freight://results/run1/",
        "records_per_call": 32,
        "on_error": "continue",
        "join": "input",
        "input_filter": "features",
        "metadata": {"run": 1},
        "webhook": {"url": "https://hooks.test/b", "events": ["started", "completed"]},
    }


def test_create_with_names_asks_for_uploads(api: Api, client: Client) -> None:
    """A list of names is the {"upload": [...]} input; the job awaits them."""
    api.on("POST", "/v1/batch-jobs", httpx.Response(202, json=awaiting("a.jsonl", "b.csv")))
    created = client.create_batch_job("tabular", ["a.jsonl", "b.csv"])
    assert created.status == "awaiting_input"
    assert created.upload_urls == {n: SIGNED.format(name=n) for n in ("a.jsonl", "b.csv")}
    assert json.loads(api.requests[0].content) == {
        "target": "tabular",
        "input": {"upload": ["a.jsonl", "b.csv"]},
    }


def test_bad_arguments_raise_before_any_request(api: Api, client: Client) -> None:
    """No names, repeated names, events without a webhook: ValueError, nothing sent."""
    with pytest.raises(ValueError, match="at least one"):
        client.create_batch_job("t", [])
    with pytest.raises(ValueError, match="unique"):
        client.create_batch_job("t", ["a.csv", "a.csv"])
    with pytest.raises(ValueError, match="needs webhook"):
        batch_job_body("t", "freight://x", webhook_events=["completed"])
    assert api.requests == []


def test_upload_streams_the_file_to_its_signed_url(
    api: Api, client: Client, tmp_path: Path
) -> None:
    """upload_batch_input() PUTs the file, chunk by chunk, to upload_urls[name] with its
    signature intact, a Content-Length and a type from the name; progress ends at the size."""
    path = tmp_path / "rows.csv"
    content = b"a,b\n" + b"1,2\n" * 700_000  # several 1 MiB chunks
    path.write_bytes(content)
    api.on("PUT", "/v1/batch-jobs/b1/input/rows.csv", httpx.Response(200, json=job()))
    seen: list[tuple[int, int]] = []
    done = client.upload_batch_input(
        BatchJob.model_validate(awaiting("rows.csv")),
        "rows.csv",
        path,
        lambda sent, total: seen.append((sent, total)),
    )
    assert done.status == "queued"
    (put,) = api.requests
    assert put.url.params["sig"] == "s-rows.csv" and put.url.params["expires"] == "99"
    assert put.headers["Content-Type"] == "text/csv"
    assert put.headers["Content-Length"] == str(len(content))
    assert put.content == content
    assert len(seen) > 1 and seen[-1] == (len(content), len(content))


def test_upload_without_a_url_for_the_name_is_an_error(client: Client, tmp_path: Path) -> None:
    """A name the job has no signed URL for raises invalid_response, sending nothing."""
    (tmp_path / "c.jsonl").write_text("{}\n")
    with pytest.raises(FreightClientError) as caught:
        client.upload_batch_input(
            BatchJob.model_validate(awaiting("a.jsonl")), "c.jsonl", tmp_path / "c.jsonl"
        )
    assert caught.value.code == "invalid_response"


def test_upload_types() -> None:
    """The job's content_type wins; else JSON Lines, CSV and gzip are named as such."""
    assert upload_type("x.jsonl") == "application/jsonl"
    assert upload_type("x.csv") == "text/csv"
    assert upload_type("x.csv.gz") == "application/gzip"
    assert upload_type("x.bin") == "application/octet-stream"
    assert upload_type("x.txt", "text/csv") == "text/csv"


def test_batch_uploads_every_file_of_a_directory(api: Api, client: Client, tmp_path: Path) -> None:
    """batch() over a directory names its files relative to it (subdirectories too),
    creates the job with those names, then uploads each one; the last answer is returned."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.jsonl").write_text('{"x": 2}\n')
    (tmp_path / "a.csv").write_text("x\n1\n")
    (tmp_path / "sub" / "c.jsonl").write_text('{"x": 3}\n')
    names = ["a.csv", "b.jsonl", "sub/c.jsonl"]
    assert [name for name, _ in local_inputs(tmp_path)] == names
    api.on("POST", "/v1/batch-jobs", httpx.Response(202, json=awaiting(*names)))
    for i, name in enumerate(names):
        answer = job("queued") if i == len(names) - 1 else awaiting(*names)
        api.on("PUT", f"/v1/batch-jobs/b1/input/{name}", httpx.Response(200, json=answer))
    progress: list[str] = []
    result = client.batch(
        "tabular",
        tmp_path,
        output="freight://results/r/",
        progress=lambda name, sent, total: progress.append(name),
        concurrency=8,
    )
    assert result.status == "queued"
    create, *puts = api.requests
    assert json.loads(create.content) == {
        "target": "tabular",
        "input": {"upload": names},
        "output": "freight://results/r/",
        "concurrency": 8,
    }
    assert [p.url.path for p in puts] == [f"/v1/batch-jobs/b1/input/{n}" for n in names]
    assert puts[2].content == b'{"x": 3}\n'
    assert progress == names


def test_batch_over_a_uri_uploads_nothing(api: Api, client: Client) -> None:
    """batch() with an object URI creates the job over it: one request."""
    api.on("POST", "/v1/batch-jobs", httpx.Response(202, json=job()))
    assert client.batch("tabular", "freight://data/").status == "queued"
    assert [r.method for r in api.requests] == ["POST"]
    assert json.loads(api.requests[0].content)["input"] == "freight://data/"


def test_batch_rejects_a_missing_or_empty_input(client: Client, tmp_path: Path) -> None:
    """A local input that is missing, or a directory without files, is a ValueError."""
    with pytest.raises(ValueError, match="neither a file nor a directory"):
        client.batch("t", tmp_path / "nope")
    with pytest.raises(ValueError, match="no files"):
        client.batch("t", tmp_path)


def test_list_follows_cursors_with_filters(api: Api, client: Client) -> None:
    """batch_jobs() reads the items page by page via next_cursor, passing the filters."""
    pages = [
        httpx.Response(200, json={"items": [job(id="b2"), job(id="b1")], "next_cursor": "c1"}),
        httpx.Response(200, json={"items": [job(id="b0")], "next_cursor": None}),
    ]
    api.on("GET", "/v1/batch-jobs", *pages)
    found = [j.id for j in client.batch_jobs(status="succeeded", target="tabular", limit=2)]
    assert found == ["b2", "b1", "b0"]
    first, second = api.requests
    assert dict(first.url.params) == {"status": "succeeded", "target": "tabular", "limit": "2"}
    assert second.url.params["cursor"] == "c1"


def test_get_wait_and_cancel(api: Api, client: Client) -> None:
    """batch_job() reads it, wait_batch_job() polls until terminal, cancel posts."""
    done = job(
        "succeeded",
        counts={"total": 3, "done": 2, "failed": 1},
        progress=1.0,
        outputs=[
            {
                "name": "x.jsonl",
                "input_uri": "freight://data/x.jsonl",
                "output_uri": "freight://batch/b1/output/x.jsonl.out",
                "output_url": "http://freight.test/v1/objects/o?sig=1",
                "errors_uri": "freight://batch/b1/output/x.jsonl.out.errors",
                "errors_url": "http://freight.test/v1/objects/e?sig=2",
                "records": 2,
                "failed": 1,
            }
        ],
        future_field="kept",
    )
    api.on(
        "GET",
        "/v1/batch-jobs/b1",
        httpx.Response(200, json=job("running")),
        httpx.Response(200, json=done),
    )
    api.on("POST", "/v1/batch-jobs/b1/cancel", httpx.Response(200, json=job("canceled")))
    assert client.batch_job("b1").status == "running"
    finished = client.wait_batch_job("b1", poll_s=0)
    assert finished.succeeded and finished.terminal
    assert (finished.counts.total, finished.counts.failed) == (3, 1)
    assert finished.outputs[0].errors_url == "http://freight.test/v1/objects/e?sig=2"
    assert finished.model_extra == {"future_field": "kept"}
    assert client.cancel_batch_job("b1").status == "canceled"
    assert api.requests[-1].method == "POST"


def test_wait_times_out(api: Api, client: Client) -> None:
    """wait_batch_job raises TimeoutError while the job is still running at the deadline."""
    api.on("GET", "/v1/batch-jobs/b1", httpx.Response(200, json=job("running")))
    with pytest.raises(TimeoutError, match="still running"):
        client.wait_batch_job("b1", timeout=0.05, poll_s=0.01)


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (404, "unknown_target"),
        (422, "invalid_request"),
        (422, "input_not_found"),
        (422, "invalid_location"),
        (409, "invalid_state"),
    ],
)
def test_errors_carry_the_apis_code(api: Api, client: Client, status: int, code: str) -> None:
    """The API's error body becomes a FreightClientError with its status, code, detail."""
    api.on("POST", "/v1/batch-jobs", error(status, code))
    with pytest.raises(FreightClientError) as caught:
        client.create_batch_job("t", "freight://x")
    assert (caught.value.status, caught.value.code, caught.value.detail) == (
        status,
        code,
        {"k": 1},
    )


def test_a_malformed_job_is_an_invalid_response(api: Api, client: Client) -> None:
    """A job body missing its fields is a FreightClientError ``invalid_response``."""
    api.on("GET", "/v1/batch-jobs/b1", httpx.Response(200, json={"id": "b1"}))
    with pytest.raises(FreightClientError) as caught:
        client.batch_job("b1")
    assert caught.value.code == "invalid_response"


def test_download_streams_a_presigned_url_to_disk(api: Api, client: Client, tmp_path: Path) -> None:
    """download() GETs the URL with its query intact and streams it into the file."""
    body = b"r" * 2_500_000
    api.on("GET", "/v1/objects/o", httpx.Response(200, content=body))
    seen: list[tuple[int, int]] = []
    saved = client.download(
        "http://freight.test/v1/objects/o?expires=9&sig=z",
        tmp_path / "x.out",
        lambda got, total: seen.append((got, total)),
    )
    assert saved.read_bytes() == body
    assert api.requests[0].url.params["sig"] == "z"
    assert len(seen) > 1 and seen[-1] == (len(body), len(body))
    api.on("GET", "/v1/objects/gone", error(404, "not_found"))
    with pytest.raises(FreightClientError):
        client.download("/v1/objects/gone", tmp_path / "gone")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.out"]  # no partial file left


async def test_async_client_runs_the_same_batch_flows(api: Api, tmp_path: Path) -> None:
    """AsyncClient: batch() with upload (progress), get, list, cancel, download, errors."""
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"a": 1}\n' * 200_000)
    api.on("POST", "/v1/batch-jobs", httpx.Response(202, json=awaiting("rows.jsonl")))
    api.on("PUT", "/v1/batch-jobs/b1/input/rows.jsonl", httpx.Response(200, json=job()))
    api.on("GET", "/v1/batch-jobs/b1", httpx.Response(200, json=job("succeeded")))
    api.on("GET", "/v1/batch-jobs", httpx.Response(200, json={"items": [job()]}))
    api.on("POST", "/v1/batch-jobs/b1/cancel", error(409, "invalid_state"))
    api.on("GET", "/v1/objects/o", httpx.Response(200, content=b"out" * 1000))
    sent: list[int] = []
    async with AsyncClient("http://freight.test", transport=httpx.MockTransport(api)) as client:
        created = await client.batch(
            "tabular", path, progress=lambda name, done, total: sent.append(done)
        )
        assert created.status == "queued"
        assert (await client.wait_batch_job("b1", poll_s=0)).succeeded
        assert [j.id async for j in client.batch_jobs(limit=5)] == ["b1"]
        with pytest.raises(FreightClientError) as caught:
            await client.cancel_batch_job("b1")
        assert caught.value.code == "invalid_state"
        got: list[int] = []
        saved = await client.download(
            "/v1/objects/o", tmp_path / "o.out", lambda done, total: got.append(done)
        )
    assert saved.read_bytes() == b"out" * 1000 and got[-1] == 3000
    put = api.requests[1]
    assert put.headers["Content-Length"] == str(path.stat().st_size)
    assert put.content == path.read_bytes()
    assert sent[-1] == path.stat().st_size
