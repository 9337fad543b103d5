"""The flow freight exists for, end to end, as a generated matrix on both shapes.

Every cell creates a prediction (or a batch job) with a webhook, gives it its
input, lets it run, and reads the result every way a caller can: the prediction
object (``GET``), ``/output``, a download of ``output_url`` (and of the ``url``
of every object reference inside an output), and the ``completed`` webhook,
whose Standard Webhooks signature a real receiver on loopback verifies.

Dimensions: the input (inline JSON, a JSON upload to the presigned
``upload_url``, a bytes upload, an ``input_uri`` already in the store) x the
target (a model, a pipeline whose template reads ``$input.rows``, a pipeline
nesting it, a batch job over it) x the output (small, or larger than the inline
limit). The project is tests/composition_project/; one server per shape serves
the whole module. Cells that make no sense are skipped with their reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from psycopg import sql
from standardwebhooks import Webhook

from freight.storage import open_storage
from tests.fixtures.postgres import _admin, _drop, pg_url
from tests.fixtures.s3 import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, MotoServer
from tests.fixtures.server import FAST, Server, wait_until
from tests.integration.helpers import create, error_code, wait_done
from tests.integration.test_notifications import secret_of

PROJECT = Path(__file__).resolve().parent.parent / "composition_project"
#: outputs over this many bytes are kept as objects (a "large" output here)
INLINE_MAX = 2048
#: the most JSON a body (or a pipeline's input kept inline) may be
MAX_JSON = 64 * 1024
ENV = {
    **FAST,
    "FREIGHT_WEBHOOK_ALLOW_PRIVATE": "true",  # the receiver is on loopback
    "FREIGHT_DELIVERY_BACKOFF_S": "0.05",
    "FREIGHT_DELIVERY_BACKOFF_MAX_S": "0.2",
    "FREIGHT_INLINE_OUTPUT_MAX_BYTES": str(INLINE_MAX),
    "FREIGHT_MAX_JSON_BYTES": str(MAX_JSON),
}
JSON = "application/json"
#: one iris flower of each class, and its label
SAMPLES = [([5.1, 3.5, 1.4, 0.2], "setosa"), ([7.0, 3.2, 4.7, 1.4], "versicolor"),
           ([6.3, 3.3, 6.0, 2.5], "virginica")]  # fmt: skip
#: repeats of the samples: 100 give ~3.3 KB of labels, over INLINE_MAX
REPEATS = {"small": 1, "large": 100}

INPUTS = ("inline", "upload_json", "upload_bytes", "uri")
TARGETS = ("model", "mapped", "nested", "batch")
OUTPUTS = ("small", "large")
EXCLUDED = {
    ("inline", "batch"): "a batch job reads files, never an inline value",
    ("upload_bytes", "mapped"): "bytes have no $input.rows to read (refused: see the 415 test)",
    ("upload_bytes", "nested"): "bytes have no $input.rows to read (refused: see the 415 test)",
    ("upload_bytes", "batch"): "a CSV record is an object of columns, not the {rows} mapped reads",
}
TARGET_NAMES = {"model": "iris", "mapped": "mapped", "nested": "nested", "batch": "mapped"}


# -- the webhook receiver ------------------------------------------------------------


@dataclass
class Receiver:
    """Records every POST; answers 503 to ``started`` events on ``/late`` until
    ``release`` is set (a delivery retried until after the prediction finished)."""

    port: int = 0
    release: threading.Event = field(default_factory=threading.Event)
    received: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str = "hook") -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def answer(self, path: str, body: bytes) -> int:
        late = path == "/late" and json.loads(body)["type"].endswith(".started")
        return 503 if late and not self.release.is_set() else 200

    def event(self, secret: str, type_: str, subject: str) -> dict[str, Any] | None:
        """The accepted event of that type about that prediction or job, verified."""
        with self.lock:
            got = list(self.received)
        for _, headers, body in got:
            if headers["x-answered"] != "200":
                continue
            event: dict[str, Any] = json.loads(body)
            if event["type"] == type_ and event["data"]["id"] == subject:
                Webhook(secret).verify(body, headers)  # raises on a bad signature
                return event
        return None

    def event_tried(self, subject: str) -> bool:
        """Whether an event about that prediction was refused at least once."""
        with self.lock:
            got = list(self.received)
        return any(
            h["x-answered"] != "200" and json.loads(b)["data"]["id"] == subject for _, h, b in got
        )

    def wait_event(self, secret: str, type_: str, subject: str) -> dict[str, Any]:
        found: dict[str, Any] = wait_until(lambda: self.event(secret, type_, subject))
        return found


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            answer = state.answer(self.path, body)
            headers = {k.lower(): v for k, v in self.headers.items()}
            with state.lock:
                state.received.append((self.path, headers | {"x-answered": str(answer)}, body))
            self.send_response(answer)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = http.server_address[1]
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    yield state
    http.shutdown()
    http.server_close()


# -- one server per shape --------------------------------------------------------------


@dataclass
class Stack:
    """A running server of one shape, its signing secret, its object store's URL."""

    shape: str
    server: Server
    secret: str
    storage_url: str
    receiver: Receiver

    def client(self) -> httpx.Client:
        return self.server.client()

    def put_object(self, key: str, data: bytes, content_type: str) -> None:
        """Write an object straight into the server's store (an ``input_uri``)."""

        async def put() -> None:
            await open_storage(self.storage_url).put(key, data, content_type=content_type)

        asyncio.run(put())

    def keys(self, prefix: str) -> list[str]:
        async def keys() -> list[str]:
            return [info.key async for info in open_storage(self.storage_url).list(prefix)]

        return asyncio.run(keys())


@contextlib.contextmanager
def _database(template: str) -> Iterator[str]:
    """A fresh PostgreSQL database for this module (a copy of the migrated template)."""
    name = f"freight_comp_{uuid.uuid4().hex[:8]}"
    with _admin() as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )
    try:
        yield pg_url(name)
    finally:
        _drop(name)


def _bucket(moto: MotoServer) -> str:
    bucket = f"freight-comp-{uuid.uuid4().hex[:12]}"
    moto.client().create_bucket(Bucket=bucket)  # type: ignore[attr-defined]
    query = urlencode(
        {
            "endpoint": moto.endpoint,
            "region": REGION,
            "access_key_id": ACCESS_KEY_ID,
            "secret_access_key": SECRET_ACCESS_KEY,
        }
    )
    return f"s3://{bucket}?{query}"


@pytest.fixture(scope="module", params=["embedded", "cluster"])
def stack(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    receiver: Receiver,
) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp(f"composition-{request.param}")
    env = {**os.environ, **ENV, "FREIGHT_STATE_DIR": str(tmp / "state")}
    env.pop("FREIGHT_DATABASE_URL", None)
    env.pop("FREIGHT_STORAGE_URL", None)
    storage_url = (tmp / "state" / "objects").resolve().as_uri()
    with contextlib.ExitStack() as cleanup:
        if request.param == "cluster":
            template = request.getfixturevalue("_postgres_template")
            env["FREIGHT_DATABASE_URL"] = cleanup.enter_context(_database(template))
            storage_url = env["FREIGHT_STORAGE_URL"] = _bucket(
                request.getfixturevalue("moto_server")
            )
        server = Server(env=env, cwd=tmp, project=PROJECT).start()
        cleanup.callback(server.stop, kill=True)
        secret = secret_of(env, PROJECT)
        yield Stack(request.param, server, secret, storage_url, receiver)


# -- the cells -------------------------------------------------------------------------


def rows_for(output: str, reverse: bool = False) -> list[list[float]]:
    samples = [row for row, _ in SAMPLES] * REPEATS[output]
    return samples[::-1] if reverse else samples


def labels_of(rows: list[list[float]]) -> list[str]:
    by_row = {tuple(row): name for row, name in SAMPLES}
    return [by_row[tuple(row)] for row in rows]


def expected(target: str, rows: list[list[float]]) -> Any:
    labels = labels_of(rows)
    if target == "nested":
        return {"classes": {"labels": labels}, "count": len(labels)}
    return {"labels": labels}


def csv_of(rows: list[list[float]]) -> bytes:
    return "".join(",".join(map(str, row)) + "\n" for row in rows).encode()


def fetch(url: str) -> bytes:
    assert url.startswith("http"), f"not an absolute URL: {url}"
    response = httpx.get(url, timeout=30)
    assert response.status_code == 200, response.text
    return response.content


def references(value: Any) -> int:
    if isinstance(value, dict):
        return int("object" in value) + sum(references(v) for v in value.values())
    if isinstance(value, list):
        return sum(references(v) for v in value)
    return 0


def unref(value: Any) -> Any:
    """The value with each object reference replaced by its download (by its ``url``)."""
    if isinstance(value, dict) and "object" in value:
        assert value["object"].startswith("freight://")
        return json.loads(fetch(value["url"]))
    if isinstance(value, dict):
        return {k: unref(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unref(v) for v in value]
    return value


def resolved(view: dict[str, Any]) -> Any:
    """The whole output a prediction object gives: inline (references downloaded), or
    downloaded from ``output_url``."""
    if view["output"] is None:
        return json.loads(fetch(view["output_url"]))
    assert view["output_url"] is None
    return unref(view["output"])


def start(stack: Stack, client: httpx.Client, case: tuple[str, str, str]) -> str:
    """Create the cell's prediction and give it its input; its id."""
    kind, target, output = case
    rows, name = rows_for(output), TARGET_NAMES[target]
    webhook = {"url": stack.receiver.url(), "events": ["completed"]}
    body = {"rows": rows}
    if kind == "inline":
        return str(create(client, name, body, webhook=webhook)["id"])
    if kind == "uri":
        key = f"datasets/{uuid.uuid4().hex}.json"
        stack.put_object(key, json.dumps(body).encode(), JSON)
        return str(create(client, name, input_uri=f"freight://{key}", webhook=webhook)["id"])
    created = create(client, name, webhook=webhook)
    assert created["status"] == "awaiting_input"
    data, type_ = (json.dumps(body).encode(), JSON) if kind == "upload_json" else (
        csv_of(rows), "text/csv")  # fmt: skip
    put = httpx.put(created["upload_url"], content=data, headers={"content-type": type_})
    assert put.status_code == 200, put.text
    return str(created["id"])


def check_prediction(stack: Stack, case: tuple[str, str, str]) -> None:
    _, target, output = case
    want = expected(target, rows_for(output))
    with stack.client() as client:
        prediction_id = start(stack, client, case)
        done = wait_done(client, prediction_id)
        assert done["status"] == "succeeded", done
        # small: inline; large: an object (output_url), or inside the nested run's
        # inline output an object reference (with its url)
        assert (done["output"] is None) == (output == "large" and target != "nested"), done
        assert references(done["output"]) == (output == "large" and target == "nested")
        assert resolved(done) == want
        response = client.get(f"/v1/predictions/{prediction_id}/output")
        assert response.status_code == 200, response.text
        assert unref(response.json()) == want
    event = stack.receiver.wait_event(stack.secret, "prediction.completed", prediction_id)
    assert event["data"]["status"] == "succeeded"
    assert event["data"]["output_url"] == done["output_url"] or output == "large"
    assert resolved(event["data"]) == want


def read_jsonl(data: bytes) -> list[Any]:
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def check_batch(stack: Stack, case: tuple[str, str, str]) -> None:
    """A job over ``mapped``: one run per record, the outputs in record order."""
    kind, _, output = case
    records = [{"rows": rows_for(output)}, {"rows": rows_for(output, reverse=True)}]
    want = [expected("mapped", r["rows"]) for r in records]
    data = b"".join(json.dumps(r).encode() + b"\n" for r in records)
    body: dict[str, Any] = {
        "target": "mapped",
        "records_per_call": 1,
        "webhook": {"url": stack.receiver.url(), "events": ["completed"]},
    }
    with stack.client() as client:
        if kind == "uri":
            key = f"datasets/{uuid.uuid4().hex}.jsonl"
            stack.put_object(key, data, "application/jsonl")
            body["input"] = f"freight://{key}"
        else:
            body["input"] = {"upload": ["rows.jsonl"]}
        job = client.post("/v1/batch-jobs", json=body).json()
        if kind == "upload_json":
            put = httpx.put(job["upload_urls"]["rows.jsonl"], content=data)
            assert put.status_code == 200, put.text

        def ended() -> dict[str, Any] | None:
            got: dict[str, Any] = client.get(f"/v1/batch-jobs/{job['id']}").json()
            return got if got["status"] not in {"awaiting_input", "queued", "running"} else None

        job = wait_until(ended, 60)
    assert job["status"] == "succeeded", job
    assert read_jsonl(fetch(job["outputs"][0]["output_url"])) == want
    event = stack.receiver.wait_event(stack.secret, "batch_job.completed", job["id"])
    assert read_jsonl(fetch(event["data"]["outputs"][0]["output_url"])) == want


def _cells() -> Iterator[Any]:
    for case in itertools.product(INPUTS, TARGETS, OUTPUTS):
        reason = EXCLUDED.get(case[:2])
        marks = [pytest.mark.skip(reason=reason)] if reason else []
        yield pytest.param(case, id="-".join(case), marks=marks)


@pytest.mark.parametrize("case", list(_cells()))
def test_composition(stack: Stack, case: tuple[str, str, str]) -> None:
    """Each input x target x output cell succeeds, and its output reads the same through
    GET, /output, output_url (and reference urls) and the signed completed webhook."""
    if case[1] == "batch":
        check_batch(stack, case)
    else:
        check_prediction(stack, case)


# -- the defects, one test each (the matrix covers 1, 2, 3 and 4 as well) ---------------


def awaiting(client: httpx.Client, target: str) -> dict[str, Any]:
    created = create(client, target)
    assert created["status"] == "awaiting_input"
    return created


def put(url: str, data: bytes, content_type: str) -> httpx.Response:
    return httpx.put(url, content=data, headers={"content-type": content_type}, timeout=30)


def test_an_uploaded_input_reads_in_templates_as_an_inline_one(stack: Stack) -> None:
    """A JSON upload to a pipeline mapping $input.rows runs as the same body sent
    inline does, +json types included."""
    rows = rows_for("small")
    with stack.client() as client:
        inline = wait_done(client, create(client, "mapped", {"rows": rows})["id"])
        created = awaiting(client, "mapped")
        body = json.dumps({"rows": rows}).encode()
        assert put(created["upload_url"], body, "application/vnd.iris+json").status_code == 200
        uploaded = wait_done(client, created["id"])
    assert inline["status"] == uploaded["status"] == "succeeded", uploaded
    assert uploaded["output"] == inline["output"] == expected("mapped", rows)
    assert uploaded["steps"]["classify"]["status"] == "succeeded"


def test_an_invalid_json_upload_is_refused_and_leaves_nothing(stack: Stack) -> None:
    """Invalid JSON uploaded as JSON to a pipeline is 400 invalid_json: the prediction
    still awaits its input, the object is gone, and a good upload then runs."""
    with stack.client() as client:
        created = awaiting(client, "mapped")
        refused = put(created["upload_url"], b'{"rows": [[5.1, 3.5', JSON)
        assert refused.status_code == 400 and error_code(refused) == "invalid_json"
        again = client.get(f"/v1/predictions/{created['id']}").json()
        assert again["status"] == "awaiting_input" and again["input_uri"] is None
        assert stack.keys(f"inputs/{created['id']}") == []
        body = json.dumps({"rows": rows_for("small")}).encode()
        assert put(created["upload_url"], body, JSON).status_code == 200
        assert wait_done(client, created["id"])["status"] == "succeeded"


def test_an_input_templates_cannot_read_is_refused_up_front(stack: Stack) -> None:
    """Bytes, or JSON too large to keep inline, for a pipeline that reads into $input:
    415 and 413 json_input_too_large, by upload or input_uri, nothing left behind;
    a pipeline taking its input whole runs on bytes."""
    big = json.dumps({"rows": rows_for("small"), "pad": "x" * MAX_JSON}).encode()
    with stack.client() as client:
        created = awaiting(client, "mapped")
        refused = put(created["upload_url"], csv_of(rows_for("small")), "text/csv")
        assert refused.status_code == 415 and error_code(refused) == "unsupported_media_type"
        too_big = put(created["upload_url"], big, JSON)
        assert too_big.status_code == 413 and error_code(too_big) == "json_input_too_large"
        assert client.get(f"/v1/predictions/{created['id']}").json()["status"] == "awaiting_input"
        assert stack.keys(f"inputs/{created['id']}") == []
        key = f"datasets/{uuid.uuid4().hex}.json"
        stack.put_object(key, big, JSON)
        by_uri = client.post(
            "/v1/predictions", json={"target": "nested", "input_uri": f"freight://{key}"}
        )
        assert by_uri.status_code == 413 and error_code(by_uri) == "json_input_too_large"
        whole = awaiting(client, "whole")
        assert put(whole["upload_url"], csv_of(rows_for("small")), "text/csv").status_code == 200
        done = wait_done(client, whole["id"])
    assert done["status"] == "succeeded" and done["output"] == expected("mapped", rows_for("small"))


def test_output_of_a_succeeded_run_is_served(stack: Stack) -> None:
    """GET /output of a succeeded pipeline run answers its inline output as JSON."""
    rows = rows_for("small")
    with stack.client() as client:
        done = wait_done(client, create(client, "nested", {"rows": rows})["id"])
        response = client.get(f"/v1/predictions/{done['id']}/output")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == JSON
    assert response.json() == done["output"] == expected("nested", rows)


def test_realtime_runs_answer_large_outputs_whole_or_by_url(stack: Stack) -> None:
    """The real-time route answers a run whose output is one large object with its
    bytes, and one holding references with their download URLs."""
    rows = rows_for("large")
    with stack.client() as client:
        whole = client.post("/v1/pipelines/mapped/predict", json={"rows": rows})
        assert whole.status_code == 200, whole.text
        assert whole.json() == expected("mapped", rows)
        nested = client.post("/v1/pipelines/nested/predict", json={"rows": rows})
        assert nested.status_code == 200, nested.text
        body = nested.json()
        run = client.get(f"/v1/predictions/{nested.headers['X-Freight-Prediction-Id']}").json()
    assert body["count"] == len(rows) and references(body) == 1
    assert unref(body) == expected("nested", rows)
    inner = run["steps"]["inner"]
    assert inner["output"] is None and json.loads(fetch(inner["output_url"])) == {
        "labels": labels_of(rows)
    }


def test_the_completed_webhook_renders_as_get_does(stack: Stack) -> None:
    """A large output's completed event carries GET's presigned output_url (absolute,
    downloadable), and a run's event carries its steps map."""
    rows = rows_for("large")
    hook = {"url": stack.receiver.url(), "events": ["completed"]}
    with stack.client() as client:
        model = wait_done(client, create(client, "iris", {"rows": rows}, webhook=hook)["id"])
        run = wait_done(client, create(client, "nested", {"rows": rows}, webhook=hook)["id"])
    sent = stack.receiver.wait_event(stack.secret, "prediction.completed", model["id"])["data"]
    assert sent["output_url"] is not None and sent["output_url"].startswith("http")
    assert json.loads(fetch(sent["output_url"])) == expected("iris", rows)
    assert sent["urls"] == model["urls"]
    sent_run = stack.receiver.wait_event(stack.secret, "prediction.completed", run["id"])["data"]
    assert list(sent_run["steps"]) == list(run["steps"]) == ["inner", "count"]
    assert unref(sent_run["output"]) == expected("nested", rows)


def test_a_late_started_event_shows_the_prediction_as_it_started(stack: Stack) -> None:
    """A started event refused until the prediction finished is delivered as it was
    when it started: running, its attempt, no output, error or finish time."""
    stack.receiver.release.clear()
    hook = {"url": stack.receiver.url("late"), "events": ["started", "completed"]}
    with stack.client() as client:
        done = wait_done(
            client, create(client, "iris", {"rows": rows_for("small")}, webhook=hook)["id"]
        )
        run = wait_done(
            client, create(client, "mapped", {"rows": rows_for("small")}, webhook=hook)["id"]
        )
    wait_until(
        lambda: stack.receiver.event_tried(done["id"]) and stack.receiver.event_tried(run["id"])
    )
    stack.receiver.release.set()
    for finished in (done, run):
        sent = stack.receiver.wait_event(stack.secret, "prediction.started", finished["id"])["data"]
        assert finished["status"] == "succeeded"
        assert (sent["status"], sent["finished_at"], sent["output"], sent["error"]) == (
            "running",
            None,
            None,
            None,
        )
        assert sent["output_url"] is None and sent["metrics"]["run_ms"] is None
        assert (
            sent["attempts"] == finished["attempts"]
            and sent["started_at"] == finished["started_at"]
        )
        completed = stack.receiver.wait_event(stack.secret, "prediction.completed", finished["id"])
        assert completed["data"]["status"] == "succeeded"
