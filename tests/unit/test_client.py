"""The Python client against a scripted API (httpx.MockTransport): requests and parsing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from freight.client import (
    AsyncClient,
    Client,
    FreightClientError,
    ModelInfo,
    PipelineInfo,
    Prediction,
    StepInfo,
)
from freight.errors import FreightError
from tests.unit.fake_api import Api, error


def prediction(id: str = "p1", status: str = "queued", **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": id,
        "target": "echo",
        "kind": "model",
        "status": status,
        "created_at": "2025-01-01T00:00:00Z",
        "queued_at": None,
        "started_at": None,
        "finished_at": None,
        "metrics": {"queue_ms": None, "run_ms": None, "total_ms": None, "batch_size": None},
        "attempts": 0,
        "priority": 0,
        "input": None,
        "output": None,
        "output_url": None,
        "upload_url": None,
        "error": None,
        "metadata": {},
        "urls": {"self": f"/v1/predictions/{id}", "cancel": None, "events": None},
    }
    body.update(fields)
    return body


@pytest.fixture
def api() -> Api:
    return Api()


@pytest.fixture
def client(api: Api) -> Iterator[Client]:
    with Client("http://freight.test", transport=httpx.MockTransport(api)) as c:
        yield c


def test_base_url_argument_then_environment_then_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """url= wins over FREIGHT_URL, which wins over http://127.0.0.1:8000."""
    monkeypatch.delenv("FREIGHT_URL", raising=False)
    assert Client().url == "http://127.0.0.1:8000"
    monkeypatch.setenv("FREIGHT_URL", "http://env.test:9/")
    assert Client().url == "http://env.test:9"
    assert Client("http://arg.test").url == "http://arg.test"


def test_predict_sends_json_body_and_headers(api: Api, client: Client) -> None:
    """predict() posts target, input and options; Idempotency-Key and Prefer: wait are set."""
    api.on("POST", "/v1/predictions", httpx.Response(202, json=prediction()))
    handle = client.predict(
        "echo", {"x": 1}, metadata={"ref": "a"}, priority=5, idempotency_key="k1", wait=2.5
    )
    assert (handle.id, handle.status, handle.terminal) == ("p1", "queued", False)
    sent = api.requests[0]
    assert json.loads(sent.content) == {
        "target": "echo",
        "input": {"x": 1},
        "metadata": {"ref": "a"},
        "priority": 5,
    }
    assert sent.headers["Idempotency-Key"] == "k1"
    assert sent.headers["Prefer"] == "wait=2.5"
    assert sent.url == "http://freight.test/v1/predictions"


def test_predict_rejects_two_inputs(client: Client) -> None:
    """Giving both an inline input and bytes is a caller error, caught before any request."""
    with pytest.raises(ValueError, match="at most one"):
        client.predict("echo", {"x": 1}, data=b"raw")


def test_error_body_becomes_freight_client_error(api: Api, client: Client) -> None:
    """A 4xx error body's code, message and detail are carried by the exception."""
    api.on("GET", "/v1/predictions/nope", error(404, "not_found"))
    with pytest.raises(FreightClientError) as caught:
        client.get("nope")
    err = caught.value
    assert isinstance(err, FreightError)
    assert (err.status, err.code, err.message, err.detail) == (
        404,
        "not_found",
        "not_found happened",
        {"k": 1},
    )
    assert "not_found" in str(err) and "404" in str(err)


def test_queue_full_carries_retry_after(api: Api, client: Client) -> None:
    """A 429 exposes Retry-After as retry_after_s."""
    api.on("POST", "/v1/predictions", error(429, "queue_full", {"Retry-After": "3"}))
    with pytest.raises(FreightClientError) as caught:
        client.predict("echo", {})
    assert (caught.value.code, caught.value.retry_after_s) == ("queue_full", 3.0)


def test_non_json_error_still_raises(api: Api, client: Client) -> None:
    """A proxy's HTML 502 becomes code http_502 with the body text as message."""
    api.on("GET", "/healthz", httpx.Response(502, text="<h1>Bad gateway</h1>"))
    with pytest.raises(FreightClientError) as caught:
        client.health()
    assert (caught.value.status, caught.value.code) == (502, "http_502")
    assert "Bad gateway" in caught.value.message


def test_unreachable_server_is_a_client_error() -> None:
    """No response at all is FreightClientError with status 0 and code connection_error."""

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with Client(transport=httpx.MockTransport(refuse)) as c, pytest.raises(FreightClientError) as e:
        c.health()
    assert (e.value.status, e.value.code) == (0, "connection_error")


def _awaiting() -> httpx.Response:
    body = prediction(status="awaiting_input", upload_url="/v1/uploads/p1?sig=abc")
    return httpx.Response(202, json=body)


class StreamSpy(httpx.MockTransport):
    """Notes, before the mock reads it, whether each request body was a stream."""

    def __init__(self, api: Api) -> None:
        super().__init__(api)
        self.streamed: list[bool] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.streamed.append(not isinstance(request.stream, httpx.ByteStream))
        return super().handle_request(request)


def test_file_is_streamed_to_the_upload_url(api: Api, tmp_path: Path) -> None:
    """file= creates the prediction without input, then PUTs the file as a stream,
    with Content-Length and a content type guessed from the name."""
    path = tmp_path / "rows.csv"
    content = b"a,b\n" + b"1,2\n" * 800_000  # several 1 MiB chunks
    path.write_bytes(content)
    api.on("POST", "/v1/predictions", _awaiting())
    api.on("PUT", "/v1/uploads/p1", httpx.Response(200, json=prediction(status="queued")))
    spy = StreamSpy(api)
    with Client("http://freight.test", transport=spy) as client:
        handle = client.predict("tabular", file=path)
    assert handle.status == "queued"
    create, put = api.requests
    assert json.loads(create.content) == {"target": "tabular"}
    assert put.url.params["sig"] == "abc"
    assert put.headers["Content-Type"] == "text/csv"
    assert put.headers["Content-Length"] == str(len(content))
    assert "Transfer-Encoding" not in put.headers
    assert put.content == content
    assert spy.streamed == [False, True]


def test_upload_progress_reports_every_chunk_up_to_the_size(api: Api, tmp_path: Path) -> None:
    """upload_progress(sent, total) rises with each streamed chunk and ends at the size."""
    path = tmp_path / "big.bin"
    path.write_bytes(b"x" * 3_000_000)
    api.on("POST", "/v1/predictions", _awaiting())
    api.on("PUT", "/v1/uploads/p1", httpx.Response(200, json=prediction(status="queued")))
    seen: list[tuple[int, int]] = []
    with Client(
        "http://freight.test",
        transport=httpx.MockTransport(api),
        upload_progress=lambda sent, total: seen.append((sent, total)),
    ) as client:
        client.predict("reverse", file=path)
    assert len(seen) > 1
    assert [sent for sent, _ in seen] == sorted(sent for sent, _ in seen)
    assert seen[-1] == (3_000_000, 3_000_000)


def test_bytes_upload_then_wait(api: Api, client: Client) -> None:
    """data= uploads the bytes with the given type; wait= then long-polls the prediction."""
    api.on("POST", "/v1/predictions", _awaiting())
    api.on("PUT", "/v1/uploads/p1", httpx.Response(200, json=prediction()))
    api.on("GET", "/v1/predictions/p1", httpx.Response(200, json=prediction(status="succeeded")))
    handle = client.predict("digits", data=b"\x89PNG", content_type="image/png", wait=5)
    assert handle.status == "succeeded"
    create, put, get = api.requests
    assert "Prefer" not in create.headers  # waiting before the upload would be pointless
    assert (put.headers["Content-Type"], put.content) == ("image/png", b"\x89PNG")
    assert get.url.params["wait"] == "5"


def test_idempotent_retry_skips_a_done_upload(api: Api, client: Client) -> None:
    """When the keyed prediction already has its input, nothing is uploaded again."""
    api.on("POST", "/v1/predictions", httpx.Response(200, json=prediction(status="running")))
    handle = client.predict("digits", data=b"x", idempotency_key="k")
    assert handle.status == "running"
    assert [r.method for r in api.requests] == ["POST"]


def test_wait_long_polls_until_terminal(api: Api, client: Client) -> None:
    """wait() repeats GET ?wait= until terminal (a server that answers early is asked
    again), each asking the server to hold the answer."""
    api.on(
        "GET",
        "/v1/predictions/p1",
        httpx.Response(200, json=prediction(status="queued")),
        httpx.Response(200, json=prediction(status="running")),
        httpx.Response(200, json=prediction(status="succeeded", output={"y": 2})),
    )
    result = client.wait("p1", timeout=30, poll_s=0)
    assert isinstance(result, Prediction) and result.terminal
    assert [r.url.path for r in api.requests] == ["/v1/predictions/p1"] * 3
    assert all(float(r.url.params["wait"]) > 0 for r in api.requests)


def test_wait_times_out(api: Api, client: Client) -> None:
    """A prediction still running at the deadline raises TimeoutError."""
    api.on("GET", "/v1/predictions/p1", httpx.Response(200, json=prediction(status="running")))
    handle = client.handle("p1")
    with pytest.raises(TimeoutError, match="still running"):
        handle.wait(timeout=0.05, poll_s=0.01)


def test_list_follows_cursors(api: Api, client: Client) -> None:
    """list() yields every item across pages, passing filters and the cursor along."""
    api.on(
        "GET",
        "/v1/predictions",
        httpx.Response(200, json={"data": [prediction("a"), prediction("b")], "next_cursor": "c1"}),
        httpx.Response(200, json={"data": [prediction("c")], "next_cursor": "c2"}),
        httpx.Response(200, json={"data": [], "next_cursor": None}),
    )
    ids = [p.id for p in client.list(target="echo", status="queued", limit=2)]
    assert ids == ["a", "b", "c"]
    params = [dict(r.url.params) for r in api.requests]
    assert params[0] == {"target": "echo", "status": "queued", "limit": "2"}
    assert [p.get("cursor") for p in params] == [None, "c1", "c2"]


def test_output_inline_and_by_url(api: Api, client: Client) -> None:
    """output() returns inline JSON, or fetches output_url: JSON parsed, other bytes raw."""
    done = prediction(status="succeeded", output={"label": 3})
    api.on("POST", "/v1/predictions", httpx.Response(200, json=done))
    assert client.predict("digits", {"a": 1}).output() == {"label": 3}

    big = prediction(status="succeeded", output_url="http://store.test/o/p1?sig=x")
    api.on("GET", "/v1/predictions/p1", httpx.Response(200, json=big))
    png = httpx.Response(200, content=b"\x89PNG...", headers={"Content-Type": "image/png"})
    api.on("GET", "/o/p1", png)
    assert client.handle("p1").output() == b"\x89PNG..."
    assert api.requests[-1].url.host == "store.test"


def test_failed_prediction_output_raises_its_error(api: Api, client: Client) -> None:
    """Asking a failed prediction for output raises its error code."""
    failed = prediction(
        status="failed", error={"code": "model_error", "message": "boom", "detail": {}}
    )
    api.on("GET", "/v1/predictions/p1", httpx.Response(200, json=failed))
    with pytest.raises(FreightClientError) as caught:
        client.handle("p1").output()
    assert (caught.value.code, caught.value.message) == ("model_error", "boom")


def test_download_streams_to_disk(api: Api, client: Client, tmp_path: Path) -> None:
    """download() writes the output_url body to the path, leaving no partial file."""
    big = prediction(status="succeeded", output_url="/v1/objects/p1-out")
    api.on("GET", "/v1/predictions/p1", httpx.Response(200, json=big))
    body = bytes(range(256)) * 1000
    api.on("GET", "/v1/objects/p1-out", httpx.Response(200, content=body))
    target = tmp_path / "out.bin"
    assert client.handle("p1").download(target) == target
    assert target.read_bytes() == body
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_download_progress_ends_at_the_size(api: Api, tmp_path: Path) -> None:
    """download_progress(received, total) is called as the body lands, ending complete."""
    big = prediction(status="succeeded", output_url="/v1/objects/p1-out")
    api.on("GET", "/v1/predictions/p1", httpx.Response(200, json=big))
    body = b"y" * 2_500_000
    api.on("GET", "/v1/objects/p1-out", httpx.Response(200, content=body))
    seen: list[tuple[int, int]] = []
    with Client(
        "http://freight.test",
        transport=httpx.MockTransport(api),
        download_progress=lambda received, total: seen.append((received, total)),
    ) as client:
        client.handle("p1").download(tmp_path / "out.bin")
    assert seen and seen[-1] == (len(body), len(body))
    assert (tmp_path / "out.bin").read_bytes() == body


def test_run_returns_output_or_follows_a_202(api: Api, client: Client) -> None:
    """run() returns a 200 body (JSON or bytes); on 202 it waits for the prediction."""
    path = "/v1/models/echo/predict"
    api.on(
        "POST",
        path,
        httpx.Response(200, json={"x": 1}, headers={"X-Freight-Prediction-Id": "p0"}),
        httpx.Response(200, content=b"raw", headers={"Content-Type": "image/png"}),
        httpx.Response(202, json=prediction(status="running")),
    )
    api.on(
        "GET",
        "/v1/predictions/p1",
        httpx.Response(200, json=prediction(status="succeeded", output=[7])),
    )
    assert client.run("echo", {"x": 1}, timeout=5) == {"x": 1}
    assert api.requests[0].url.params["timeout"] == "5"
    assert client.run("echo", data=b"img", content_type="image/png") == b"raw"
    assert api.requests[1].headers["Content-Type"] == "image/png"
    assert client.run("echo", {"x": 1}) == [7]


def test_run_failure_is_424_with_model_error(api: Api, client: Client) -> None:
    """A failed real-time prediction raises with the model's error code."""
    api.on("POST", "/v1/models/echo/predict", error(424, "model_error"))
    with pytest.raises(FreightClientError) as caught:
        client.run("echo", {})
    assert (caught.value.status, caught.value.code) == (424, "model_error")


def test_models_and_cancel(api: Api, client: Client) -> None:
    """models() parses the listing; cancel() posts to the cancel route."""
    listing = {
        "data": [
            {
                "name": "echo",
                "input_kind": "json",
                "batching": {"max_size": 64, "max_wait_ms": 0},
                "replicas": {"min": 2, "max": 2, "running": 2},
                "backlog": {"queued": 3, "running": 1},
            }
        ]
    }
    api.on("GET", "/v1/models", httpx.Response(200, json=listing))
    api.on(
        "POST", "/v1/predictions/p1/cancel", httpx.Response(200, json=prediction(status="canceled"))
    )
    (model,) = client.models()
    assert isinstance(model, ModelInfo)
    assert (model.name, model.backlog.queued) == ("echo", 3)
    assert model.replicas is not None and model.replicas.running == 2
    assert client.cancel("p1").status == "canceled"


async def test_async_client_upload_wait_output_list(api: Api, tmp_path: Path) -> None:
    """AsyncClient runs the same flows: file upload, wait, output, pagination."""
    path = tmp_path / "img.png"
    path.write_bytes(b"\x89PNG" * 40_000)
    api.on("POST", "/v1/predictions", _awaiting())
    api.on("PUT", "/v1/uploads/p1", httpx.Response(200, json=prediction()))
    api.on(
        "GET",
        "/v1/predictions/p1",
        httpx.Response(200, json=prediction(status="running")),
        httpx.Response(200, json=prediction(status="succeeded", output={"label": 1})),
    )
    api.on(
        "GET",
        "/v1/predictions",
        httpx.Response(200, json={"data": [prediction("a")], "next_cursor": None}),
    )
    async with AsyncClient("http://freight.test", transport=httpx.MockTransport(api)) as client:
        handle = await client.predict("digits", file=path)
        assert (await handle.wait(timeout=10, poll_s=0)).status == "succeeded"
        assert await handle.output() == {"label": 1}
        assert [p.id async for p in client.list()] == ["a"]
    put = api.requests[1]
    assert put.headers["Content-Type"] == "image/png"
    assert put.headers["Content-Length"] == str(path.stat().st_size)
    assert put.content == path.read_bytes()


async def test_async_download_and_error(api: Api, tmp_path: Path) -> None:
    """AsyncClient streams downloads to disk and raises the same errors."""
    big = prediction(status="succeeded", output_url="/v1/objects/p1-out")
    api.on("GET", "/v1/predictions/p1", httpx.Response(200, json=big))
    api.on("GET", "/v1/objects/p1-out", httpx.Response(200, content=b"z" * 100_000))
    api.on("GET", "/v1/predictions/gone", error(404, "not_found"))
    async with AsyncClient("http://freight.test", transport=httpx.MockTransport(api)) as client:
        handle = await client.handle("p1")
        await handle.download(tmp_path / "o.bin")
        with pytest.raises(FreightClientError, match="not_found"):
            await client.get("gone")
    assert (tmp_path / "o.bin").read_bytes() == b"z" * 100_000


PIPELINE = {
    "name": "claim",
    "timeout_s": None,
    "output": {"d": "$steps.damage.output"},
    "steps": [
        {
            "name": "damage",
            "target": "classifier",
            "kind": "model",
            "needs": [],
            "input": "$input",
            "when": None,
            "for_each": "$input.photos",
            "max_concurrency": 2,
            "optional": False,
            "timeout_s": 5,
            "max_attempts": 1,
        }
    ],
    "graph": "graph TD\n",
}


def test_pipelines_and_pipeline_parse_the_declarations(api: Api, client: Client) -> None:
    """pipelines() and pipeline(name) return PipelineInfo with steps and graph."""
    api.on("GET", "/v1/pipelines", httpx.Response(200, json={"data": [PIPELINE]}))
    api.on("GET", "/v1/pipelines/claim", httpx.Response(200, json=PIPELINE))
    (listed,) = client.pipelines()
    one = client.pipeline("claim")
    assert isinstance(one, PipelineInfo) and listed == one
    (damage,) = one.steps
    assert (damage.target, damage.for_each, damage.max_concurrency) == (
        "classifier",
        "$input.photos",
        2,
    )
    assert one.graph == "graph TD\n" and one.output == {"d": "$steps.damage.output"}


def test_a_bad_pipeline_listing_is_an_invalid_response(api: Api, client: Client) -> None:
    """A listing without data is invalid_response, not a KeyError."""
    api.on("GET", "/v1/pipelines", httpx.Response(200, json={"items": []}))
    with pytest.raises(FreightClientError) as caught:
        client.pipelines()
    assert caught.value.code == "invalid_response"


def test_run_pipeline_posts_json_to_the_pipeline_route(api: Api, client: Client) -> None:
    """run_pipeline() posts to /v1/pipelines/NAME/predict and follows a 202."""
    path = "/v1/pipelines/claim/predict"
    api.on(
        "POST",
        path,
        httpx.Response(200, json={"total": 1}),
        httpx.Response(202, json=prediction(status="running", kind="pipeline")),
    )
    api.on(
        "GET",
        "/v1/predictions/p1",
        httpx.Response(200, json=prediction(status="succeeded", output=2)),
    )
    assert client.run_pipeline("claim", {"photos": []}, timeout=3) == {"total": 1}
    sent = api.requests[0]
    assert json.loads(sent.content) == {"photos": []} and sent.url.params["timeout"] == "3"
    assert client.run_pipeline("claim", {}) == 2


def test_run_pipeline_failure_raises_the_runs_error(api: Api, client: Client) -> None:
    """A failed run (424) raises with the run's error code."""
    api.on("POST", "/v1/pipelines/claim/predict", error(424, "input_error"))
    with pytest.raises(FreightClientError) as caught:
        client.run_pipeline("claim", {})
    assert (caught.value.status, caught.value.code) == (424, "input_error")


def test_prediction_parses_steps_run_id_and_step() -> None:
    """A run's steps map parses into StepInfo (items for for_each); steps name their run."""
    body = prediction(
        status="succeeded",
        kind="pipeline",
        steps={
            "each": {
                "status": "succeeded",
                "prediction_id": "s1",
                "target": "m",
                "kind": "for_each",
                "attempts": 0,
                "created_at": "2025-01-01T00:00:00Z",
                "started_at": None,
                "finished_at": None,
                "metrics": {"queue_ms": None, "run_ms": None},
                "output": [1, 2],
                "output_url": None,
                "error": None,
                "items": [{"index": 0, "prediction_id": "e0", "status": "skipped", "error": None}],
            }
        },
    )
    run = Prediction.model_validate(body)
    assert run.steps is not None
    each = run.steps["each"]
    assert isinstance(each, StepInfo) and each.output == [1, 2]
    assert each.items is not None and each.items[0].prediction_id == "e0"
    step = Prediction.model_validate(prediction(run_id="r1", step="each", item_index=0))
    assert (step.run_id, step.step, step.item_index, step.steps) == ("r1", "each", 0, None)
    assert Prediction.model_validate(prediction(status="skipped")).terminal


async def test_async_client_pipelines(api: Api) -> None:
    """AsyncClient has the pipeline methods too."""
    api.on("GET", "/v1/pipelines", httpx.Response(200, json={"data": [PIPELINE]}))
    api.on("GET", "/v1/pipelines/claim", httpx.Response(200, json=PIPELINE))
    api.on("POST", "/v1/pipelines/claim/predict", httpx.Response(200, json=[1]))
    async with AsyncClient("http://freight.test", transport=httpx.MockTransport(api)) as client:
        assert [p.name for p in await client.pipelines()] == ["claim"]
        assert (await client.pipeline("claim")).steps[0].name == "damage"
        assert await client.run_pipeline("claim", {"photos": [1]}) == [1]


def test_the_async_transports_answers_name_their_request_when_asked() -> None:
    """The aiohttp transport's answers carry their request only when something asks
    (an error's message): a body that is not JSON names the method and path; a good
    one parses, and its request is still there for whoever reads it."""
    from freight.client._aiohttp import _Response
    from freight.client._models import FreightClientError
    from freight.client._protocol import json_body

    url = "http://127.0.0.1:1/v1/predictions/p1?wait=5"
    bad = _Response(200, content=b"<html>proxy error</html>", asked=("GET", url))
    with pytest.raises(FreightClientError) as caught:
        json_body(bad)
    assert caught.value.code == "invalid_response"
    assert "GET /v1/predictions/p1" in caught.value.message
    good = _Response(202, content=b'{"id": "p1", "n": [1, 2]}', asked=("POST", url))
    assert json_body(good) == {"id": "p1", "n": [1, 2]}
    assert (good.request.method, str(good.request.url)) == ("POST", url)
