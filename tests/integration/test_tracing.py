"""Traces and JSON logs of real servers: spans exported over OTLP/HTTP to a receiver
in the test process, their parent links, a webhook's ``traceparent``, and log lines
that parse as JSON and name the prediction and its trace."""

from __future__ import annotations

import functools
import json
import os
import secrets
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.otlp import Receiver, Span, tracing_env
from tests.fixtures.server import FAST, FREIGHT, PROJECT, Server, wait_until
from tests.integration.helpers import wait_done

PIPELINES = Path(__file__).resolve().parent.parent / "pipeline_project"
WORKER_SPANS = ("freight.input_fetch", "freight.model_call", "freight.output_store")


class Hooks:
    """A webhook receiver on loopback: the headers of each POST."""

    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", "0")))
                hooks.headers.append({k.lower(): v for k, v in self.headers.items()})
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/hook"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()


@pytest.fixture
def hooks() -> Iterator[Hooks]:
    hooks = Hooks()
    yield hooks
    hooks.http.shutdown()
    hooks.http.server_close()


def _client_traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def _one(spans: list[Span], name: str) -> Span:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]


def _model_trace(otlp: Receiver, trace_id: str, client_span: str, service: str) -> list[Span]:
    """The spans of one traced model prediction, checked link by link."""
    names = ("POST /v1/predictions", "freight.queue_wait", "freight.predict", *WORKER_SPANS)
    spans = wait_until(
        lambda: (
            (s := otlp.of_trace(trace_id)) and all(n in {x.name for x in s} for n in names) and s
        ),
        timeout_s=30,
    )
    request = _one(spans, "POST /v1/predictions")
    assert request.parent_id == client_span and request.attributes["http.route"]
    assert _one(spans, "freight.queue_wait").parent_id == request.span_id
    predict = _one(spans, "freight.predict")
    assert predict.parent_id == request.span_id and predict.service == service
    for name in WORKER_SPANS:
        assert _one(spans, name).parent_id == predict.span_id
    assert _one(spans, "freight.model_call").attributes["freight.batch_size"] >= 1
    return list(spans)


def test_a_model_prediction_is_one_trace_and_its_webhook_carries_it(
    make_server: Callable[..., Server], otlp: Receiver, hooks: Hooks
) -> None:
    """A create with a client traceparent: the request span is the client span's child;
    queue wait and predict (input fetch, model call, output store under it) the
    request's; the delivery too, and the webhook's traceparent names that span. JSON
    log lines parse and carry the prediction's and trace's ids."""
    server = make_server(
        models=["Echo"],
        FREIGHT_LOG_FORMAT="json",
        FREIGHT_LOG_LEVEL="debug",
        FREIGHT_WEBHOOK_ALLOW_PRIVATE="1",
        **tracing_env(otlp),
    )
    traceparent, trace_id, client_span = _client_traceparent()
    with server.client() as client:
        response = client.post(
            "/v1/predictions",
            json={"target": "echo", "input": {"x": 1}, "webhook": {"url": hooks.url}},
            headers={"traceparent": traceparent},
        )
        assert response.status_code == 202, response.text
        prediction_id = response.json()["id"]
        wait_done(client, prediction_id)
    spans = _model_trace(otlp, trace_id, client_span, "freight-serve")
    request = _one(spans, "POST /v1/predictions")
    deliveries = wait_until(
        lambda: [s for s in otlp.of_trace(trace_id) if s.name == "freight.deliver"]
    )
    assert {d.parent_id for d in deliveries} == {request.span_id}
    sent = wait_until(lambda: [h["traceparent"] for h in hooks.headers if "traceparent" in h])
    assert {tp.split("-")[1] for tp in sent} == {trace_id}
    assert {tp.split("-")[2] for tp in sent} <= {d.span_id for d in deliveries}
    lines = [json.loads(line) for line in server.logs().splitlines() if line.startswith("{")]
    assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    mine = [line for line in lines if line.get("prediction_id") == prediction_id]
    assert any(line.get("trace_id") == trace_id and line.get("span_id") for line in mine), mine


def test_a_pipeline_run_is_one_trace_with_a_span_per_step(
    make_server: Callable[..., Server], otlp: Receiver
) -> None:
    """A run of the diamond pipeline: every step's span is in the request's trace, a
    child of the request span."""
    server = make_server(project=PIPELINES, **tracing_env(otlp))
    traceparent, trace_id, client_span = _client_traceparent()
    with server.client() as client:
        response = client.post(
            "/v1/pipelines/diamond/predict", json={"x": 2}, headers={"traceparent": traceparent}
        )
        assert response.status_code == 200, response.text
    steps = wait_until(
        lambda: (
            len(s := [x for x in otlp.of_trace(trace_id) if x.name == "freight.step"]) == 4 and s
        )
    )
    assert {s.attributes["freight.step"] for s in steps} == {"a", "b", "c", "d"}
    assert len({s.attributes["freight.run_id"] for s in steps}) == 1
    route = "POST /v1/pipelines/{name}/predict"
    wait_until(lambda: otlp.named(route))  # ended once the answer is sent
    request = _one(otlp.of_trace(trace_id), route)
    assert request.parent_id == client_span
    assert {s.parent_id for s in steps} == {request.span_id}

    def phases_under(step_id: str) -> bool:
        names = {s.name for s in otlp.of_trace(trace_id) if s.parent_id == step_id}
        return names >= set(WORKER_SPANS)

    for step in steps:  # each step's own phases hang under it
        wait_until(functools.partial(phases_under, step.span_id))


def test_tracing_off_exports_nothing(make_server: Callable[..., Server], otlp: Receiver) -> None:
    """Without the OTEL_* variables nothing is exported, and a client's traceparent is
    not stored (no span is built to continue it)."""
    server = make_server(models=["Echo"])
    traceparent, _, _ = _client_traceparent()
    with server.client() as client:
        response = client.post(
            "/v1/models/echo/predict", json={"x": 1}, headers={"traceparent": traceparent}
        )
        assert response.status_code == 200
    with server.client() as client:  # a later request: the first's spans would be out
        assert client.get("/healthz").status_code == 200
    assert otlp.spans == []


@pytest.mark.slow
def test_the_cluster_shape_continues_the_trace_in_the_worker(
    postgres_url: str, s3_url: str, tmp_path: Path, otlp: Receiver
) -> None:
    """`freight api` + `freight worker`: the worker's spans (service freight-worker) are
    children of the API's request span (service freight-api), through the row."""
    env = {
        **os.environ,
        **FAST,
        **tracing_env(otlp),
        "FREIGHT_DATABASE_URL": postgres_url,
        "FREIGHT_STORAGE_URL": s3_url,
        "FREIGHT_STATE_DIR": str(tmp_path / "state"),
        "FREIGHT_MODELS": '["models:Echo"]',
        "FREIGHT_SECRET_KEY": "k" * 32,
        "FREIGHT_LOG_FORMAT": "json",
    }
    worker_log = tmp_path / "worker.log"
    worker = subprocess.Popen(
        [*FREIGHT, "worker", str(PROJECT)],
        env=env,
        cwd=tmp_path,
        stdout=worker_log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    api = Server(env=env, cwd=tmp_path, project=PROJECT, command="api")
    try:
        api.start()
        wait_until(lambda: "freight: worker " in worker_log.read_text(), timeout_s=60)
        traceparent, trace_id, client_span = _client_traceparent()
        with api.client() as client:
            response = client.post(
                "/v1/predictions",
                json={"target": "echo", "input": {"x": 1}},
                headers={"traceparent": traceparent},
            )
            assert response.status_code == 202, response.text
            wait_done(client, response.json()["id"])
        spans = _model_trace(otlp, trace_id, client_span, "freight-worker")
        assert _one(spans, "POST /v1/predictions").service == "freight-api"
    finally:
        api.stop(kill=True)
        worker.terminate()
        worker.wait(30)
