"""The prediction API end to end against a real server, on both deployment shapes.

``server`` here is the module's shared server (one per shape): each test makes and
reads its own predictions; those that configure a server start their own."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.fixtures.server import Server, wait_until
from tests.integration.helpers import create, error_code, status_of, wait_done

BLOB = "a" * 1000


@pytest.fixture
def server(shared_server: Server) -> Server:
    return shared_server


def test_async_prediction_succeeds_with_timings_and_stored_input(server: Server) -> None:
    """An async prediction returns 202, then succeeds with output, timings and stored I/O."""
    with server.client() as client:
        created = create(client, "echo", {"x": 1, "blob": BLOB}, metadata={"ref": "r1"})
        assert created["status"] in {"queued", "running", "succeeded"}
        assert created["urls"]["self"] == f"/v1/predictions/{created['id']}"
        done = wait_done(client, created["id"])
        assert done["status"] == "succeeded"
        assert done["output"] == {"x": 1, "blob": BLOB}
        assert done["input"] == {"x": 1, "blob": BLOB}
        assert done["attempts"] == 1
        assert done["metadata"] == {"ref": "r1"}
        for stamp in ("created_at", "queued_at", "started_at", "finished_at"):
            assert done[stamp] is not None
        assert done["metrics"]["queue_ms"] >= 0 and done["metrics"]["run_ms"] >= 0
        assert done["metrics"]["batch_size"] >= 1
        output = client.get(f"/v1/predictions/{created['id']}/output")
        assert output.status_code == 200 and output.json() == {"x": 1, "blob": BLOB}


def test_prefer_wait_returns_the_result_in_the_create_call(server: Server) -> None:
    """`Prefer: wait=N` makes the create call answer with the finished prediction."""
    with server.client() as client:
        response = client.post(
            "/v1/predictions",
            json={"target": "echo", "input": [1, 2]},
            headers={"Prefer": "wait=20"},
        )
        assert response.status_code == 200
        assert response.json()["status"] == "succeeded" and response.json()["output"] == [1, 2]


def test_realtime_json_and_bytes(server: Server) -> None:
    """Real-time predict returns the output inline, JSON or raw bytes with the prediction id."""
    with server.client() as client:
        response = client.post("/v1/models/echo/predict", json={"hello": "world"})
        assert response.status_code == 200
        assert response.json() == {"hello": "world"}
        prediction_id = response.headers["X-Freight-Prediction-Id"]
        assert status_of(client, prediction_id) == "succeeded"
        raw = client.post(
            "/v1/models/reverse/predict",
            content=b"abc\x00def",
            headers={"Content-Type": "application/octet-stream"},
        )
        assert raw.status_code == 200 and raw.content == b"fed\x00cba"


def test_realtime_past_deadline_answers_202_then_finishes(server: Server) -> None:
    """Past the real-time deadline the caller gets 202 and an id that completes later."""
    with server.client() as client:
        response = client.post(
            "/v1/models/nap/predict",
            params={"timeout": 0.2},
            json={"ms": 1500, "n": 7},
        )
        assert response.status_code == 202
        body = response.json()
        assert body["status"] in {"queued", "running"}
        done = wait_done(client, body["id"])
        assert done["status"] == "succeeded" and done["output"]["n"] == 7


def test_upload_flow_queues_on_upload(server: Server) -> None:
    """Without input the prediction awaits its upload; the presigned PUT queues it."""
    with server.client() as client:
        created = create(client, "reverse")
        assert created["status"] == "awaiting_input" and created["upload_url"]
        assert status_of(client, created["id"]) == "awaiting_input"
        put = httpx.put(
            created["upload_url"],
            content=b"12345",
            headers={"Content-Type": "application/octet-stream"},
        )
        assert put.status_code == 200, put.text
        assert put.json()["status"] in {"queued", "running", "succeeded"}
        done = wait_done(client, created["id"])
        assert done["status"] == "succeeded" and done["input_bytes"] == 5
        assert httpx.get(done["output_url"]).content == b"54321"
        again = httpx.put(created["upload_url"], content=b"x")
        assert again.status_code == 409 and error_code(again) == "invalid_state"


def test_tampered_or_unsigned_upload_url_is_refused(server: Server) -> None:
    """A tampered or unsigned upload URL gets 403 and the prediction keeps waiting."""
    with server.client() as client:
        created = create(client, "reverse")
        url = created["upload_url"]
        tampered = url.replace("sig=", "sig=0")
        response = httpx.put(tampered, content=b"x")
        assert response.status_code == 403 and error_code(response) == "bad_signature"
        unsigned = url.split("?")[0]
        response = httpx.put(unsigned, content=b"x")
        assert response.status_code == 403 and error_code(response) == "missing_signature"
        other = url.replace(created["id"], "0193b7c2-0000-7000-8000-000000000000")
        assert httpx.put(other, content=b"x").status_code == 403
        assert status_of(client, created["id"]) == "awaiting_input"


def test_expired_upload_url(make_server: Callable[..., Server]) -> None:
    """An upload URL past its expiry is refused with url_expired; the prediction expires."""
    server = make_server(models=["Reverse"], FREIGHT_UPLOAD_URL_EXPIRES_S="1")
    with server.client() as client:
        created = create(client, "reverse")
        wait_until(lambda: status_of(client, created["id"]) == "expired", timeout_s=15)
        response = httpx.put(created["upload_url"], content=b"x")
        assert response.status_code == 403 and error_code(response) == "url_expired"
        body = client.get(f"/v1/predictions/{created['id']}").json()
        assert body["error"]["code"] == "expired"


def test_large_outputs_are_served_by_url(server: Server) -> None:
    """Outputs over the inline limit come back as a presigned output_url."""
    big = [BLOB] * 300  # ~300 KB of JSON, over the 256 KiB inline limit
    with server.client() as client:
        done = wait_done(client, create(client, "echo", big)["id"])
        assert done["status"] == "succeeded"
        assert done["output"] is None and done["output_bytes"] > 256 * 1024
        assert httpx.get(done["output_url"]).json() == big


def test_list_filters_and_paginates(make_server: Callable[..., Server]) -> None:
    """Listing filters by target and status and pages with an opaque cursor."""
    server = make_server()  # counts the whole server's rows
    with server.client() as client:
        ids = [create(client, "echo", {"i": i})["id"] for i in range(5)]
        for prediction_id in ids:
            wait_done(client, prediction_id)
        create(client, "reverse")  # awaiting_input, another target
        seen: list[str] = []
        cursor = None
        while True:
            params = {"target": "echo", "status": "succeeded", "limit": 2}
            if cursor:
                params["cursor"] = cursor
            page = client.get("/v1/predictions", params=params).json()
            seen += [p["id"] for p in page["data"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert seen == list(reversed(ids))
        waiting = client.get("/v1/predictions", params={"status": "awaiting_input"}).json()
        assert [p["target"] for p in waiting["data"]] == ["reverse"]
        bad = client.get("/v1/predictions", params={"cursor": "not-a-cursor"})
        assert bad.status_code == 400 and error_code(bad) == "invalid_cursor"


def test_idempotency_key(make_server: Callable[..., Server]) -> None:
    """The same Idempotency-Key and body return the same prediction; another body is 409."""
    server = make_server()  # counts the whole server's rows
    with server.client() as client:
        headers = {"Idempotency-Key": "order-42"}
        body = {"target": "echo", "input": {"v": 1}}
        first = client.post("/v1/predictions", json=body, headers=headers)
        second = client.post("/v1/predictions", json=body, headers=headers)
        assert first.status_code == 202 and second.status_code in (200, 202)
        assert first.json()["id"] == second.json()["id"]
        conflict = client.post("/v1/predictions", json={**body, "input": {"v": 2}}, headers=headers)
        assert conflict.status_code == 409 and error_code(conflict) == "idempotency_conflict"
        listed = client.get("/v1/predictions", params={"target": "echo"}).json()["data"]
        assert len(listed) == 1


def test_create_and_long_poll_parameters_are_checked(server: Server) -> None:
    """The create route's Idempotency-Key (at most 255 characters) and the long-poll's
    ``wait`` (a number >= 0) are refused with a 422 naming the parameter; a key of 255
    is taken, and ``wait`` 0 reads at once."""
    with server.client() as client:
        body = {"target": "echo", "input": {"v": "keys"}}
        key = uuid.uuid4().hex.ljust(255, "k")
        long = client.post("/v1/predictions", json=body, headers={"Idempotency-Key": key + "k"})
        assert long.status_code == 422 and error_code(long) == "validation_error"
        (error,) = long.json()["error"]["detail"]["errors"]
        assert (error["loc"], error["type"]) == (["header", "idempotency-key"], "string_too_long")
        taken = client.post("/v1/predictions", json=body, headers={"Idempotency-Key": key})
        assert taken.status_code == 202
        url = f"/v1/predictions/{taken.json()['id']}"
        for wait, kind in (("abc", "float_parsing"), ("-1", "greater_than_equal"),
                           ("nan", "greater_than_equal"), ("", "float_parsing")):
            refused = client.get(url, params={"wait": wait})
            assert refused.status_code == 422, wait
            (error,) = refused.json()["error"]["detail"]["errors"]
            assert (error["loc"], error["type"]) == (["query", "wait"], kind), wait
        assert client.get(url, params={"wait": "0"}).status_code == 200
        assert wait_done(client, taken.json()["id"])["status"] == "succeeded"


def test_model_error_fails_prediction_and_replica_keeps_serving(server: Server) -> None:
    """A model that raises fails the prediction with type and message; the next one works."""
    with server.client() as client:
        failed = wait_done(client, create(client, "boom", {"fail": True, "why": "bad"})["id"])
        assert failed["status"] == "failed"
        assert failed["error"]["code"] == "model_error"
        assert "ValueError" in failed["error"]["message"] and "bad" in failed["error"]["message"]
        assert failed["error"]["detail"]["type"] == "ValueError"
        ok = wait_done(client, create(client, "boom", {"fail": False})["id"])
        assert ok["status"] == "succeeded"
        realtime = client.post("/v1/models/boom/predict", json={"fail": True})
        assert realtime.status_code == 424 and error_code(realtime) == "model_error"


def test_timeout_stops_the_model(server: Server) -> None:
    """A model past its timeout is stopped and the prediction fails with `timeout`."""
    with server.client() as client:
        failed = wait_done(client, create(client, "slow", {"ms": 30_000})["id"])
        assert failed["status"] == "failed" and failed["error"]["code"] == "timeout"
        ok = wait_done(client, create(client, "slow", {"ms": 10})["id"])
        assert ok["status"] == "succeeded"


def test_cancel_queued_and_running(server: Server, tmp_path: Path) -> None:
    """Cancel works on a running prediction (its runner is killed) and on a queued one."""
    with server.client() as client:
        pidfile = tmp_path / "hold"
        running = create(client, "hold", {"pidfile": str(pidfile)})
        queued = create(client, "hold", {"pidfile": str(tmp_path / "other"), "ms": 0})
        wait_until(lambda: Path(f"{pidfile}.1").exists())
        assert status_of(client, running["id"]) == "running"
        assert status_of(client, queued["id"]) == "queued"
        response = client.post(f"/v1/predictions/{queued['id']}/cancel")
        assert response.status_code == 200 and response.json()["status"] == "canceled"
        response = client.post(f"/v1/predictions/{running['id']}/cancel")
        assert response.json()["status"] == "canceled"
        assert response.json()["error"]["code"] == "canceled"
        after = wait_done(
            client, create(client, "hold", {"pidfile": str(tmp_path / "n"), "ms": 0})["id"]
        )
        assert after["status"] == "succeeded"
        assert after["output"]["pid"] != int(Path(f"{pidfile}.1").read_text())
        assert status_of(client, running["id"]) == "canceled"
        again = client.post(f"/v1/predictions/{running['id']}/cancel")
        assert again.status_code == 200 and again.json()["status"] == "canceled"


def test_bad_requests_get_precise_errors_and_write_nothing(
    make_server: Callable[..., Server],
) -> None:
    """Malformed JSON, wrong content type, unknown model, invalid body: 4xx codes, no rows."""
    server = make_server()  # counts the whole server's rows
    with server.client() as client:
        cases = [
            (
                client.post(
                    "/v1/predictions",
                    content=b"{not json",
                    headers={"Content-Type": "application/json"},
                ),
                400,
                "invalid_json",
            ),
            (
                client.post(
                    "/v1/predictions",
                    content=b"target=echo",
                    headers={"Content-Type": "text/plain"},
                ),
                415,
                "unsupported_media_type",
            ),
            (
                client.post("/v1/predictions", json={"target": "nope", "input": 1}),
                404,
                "unknown_target",
            ),
            (client.post("/v1/predictions", json={"input": 1}), 422, "validation_error"),
            (
                client.post("/v1/predictions", json={"target": "echo", "input": 1, "bogus": 2}),
                422,
                "validation_error",
            ),
            (
                client.post(
                    "/v1/predictions",
                    json={"target": "echo", "input": 1, "input_uri": "freight://x"},
                ),
                400,
                "ambiguous_input",
            ),
            (
                client.post("/v1/predictions", json={"target": "echo", "input_uri": "http://x/y"}),
                400,
                "unsupported_input_uri",
            ),
            (
                client.post(
                    "/v1/predictions",
                    json={"target": "echo", "input_uri": "freight://predictions/none"},
                ),
                404,
                "input_not_found",
            ),
            (
                client.post(
                    "/v1/models/echo/predict",
                    content=b"\x00\x01",
                    headers={"Content-Type": "application/octet-stream"},
                ),
                415,
                "unsupported_media_type",
            ),
            (client.post("/v1/models/nope/predict", json={}), 404, "unknown_target"),
            (
                client.get("/v1/predictions/0193b7c2-0000-7000-8000-000000000000"),
                404,
                "prediction_not_found",
            ),
            (
                client.post("/v1/predictions/0193b7c2-0000-7000-8000-000000000000/cancel"),
                404,
                "prediction_not_found",
            ),
        ]
        for response, status, code in cases:
            assert response.status_code == status, (code, response.text)
            assert error_code(response) == code
            assert response.json()["error"]["message"]
        assert client.get("/v1/predictions").json()["data"] == []


def test_oversize_payloads_are_refused(make_server: Callable[..., Server]) -> None:
    """Bodies over the configured limits get 413 and leave nothing behind."""
    server = make_server(
        models=["Echo", "Reverse"], FREIGHT_MAX_JSON_BYTES="1000", FREIGHT_MAX_PAYLOAD_BYTES="2000"
    )
    with server.client() as client:
        response = client.post("/v1/predictions", json={"target": "echo", "input": "x" * 2000})
        assert response.status_code == 413 and error_code(response) == "payload_too_large"
        raw = client.post(
            "/v1/models/reverse/predict",
            content=b"y" * 5000,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert raw.status_code == 413 and error_code(raw) == "payload_too_large"

        def chunks() -> object:
            for _ in range(5):
                yield b"z" * 1000

        created = create(client, "reverse")
        streamed = httpx.put(created["upload_url"], content=chunks())  # type: ignore[arg-type]
        assert streamed.status_code == 413
        assert status_of(client, created["id"]) == "awaiting_input"
        listed = client.get("/v1/predictions").json()["data"]
        assert [p["id"] for p in listed] == [created["id"]]


def test_queue_bound_answers_429_with_retry_after(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    """Past max_queued_per_model, creating answers 429 with Retry-After."""
    server = make_server(models=["Hold"], FREIGHT_MAX_QUEUED_PER_MODEL="2")
    with server.client() as client:
        pidfile = tmp_path / "p"
        create(client, "hold", {"pidfile": str(pidfile)})
        wait_until(lambda: Path(f"{pidfile}.1").exists())
        statuses = []
        for i in range(6):
            response = client.post(
                "/v1/predictions", json={"target": "hold", "input": {"pidfile": f"{pidfile}{i}"}}
            )
            statuses.append(response.status_code)
            if response.status_code == 429:
                assert int(response.headers["Retry-After"]) >= 1
                assert error_code(response) == "queue_full"
        assert statuses[0] == 202 and 429 in statuses
        assert statuses.count(202) <= 2  # never more queued than the bound


def test_models_health_and_docs(server: Server) -> None:
    """/v1/models lists replicas and backlog; probes and OpenAPI docs answer."""
    with server.client() as client:
        models = {m["name"]: m for m in client.get("/v1/models").json()["data"]}
        assert {"echo", "boom", "hold", "slow", "nap", "passthrough", "reverse"} <= set(models)
        assert models["echo"]["replicas"]["running"] == 2
        assert models["echo"]["batching"]["max_size"] == 16
        assert models["passthrough"]["input_kind"] == "payload"
        assert "queued" in models["echo"]["backlog"]
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").status_code == 200
        assert client.get("/docs").status_code == 200
        paths = client.get("/openapi.json").json()["paths"]
        assert "/v1/predictions" in paths and "/v1/models/{name}/predict" in paths


def test_input_by_uri_reads_a_stored_object(server: Server) -> None:
    """input_uri names an object of freight's store (freight://key, or the store's own
    s3:// / file:// URI) and the prediction reads it in place."""
    with server.client() as client:
        first = create(client, "reverse")
        put = httpx.put(
            first["upload_url"],
            content=b"hello",
            headers={"Content-Type": "application/octet-stream"},
        )
        assert put.status_code == 200
        uri = put.json()["input_uri"]
        assert uri.startswith(f"freight://inputs/{first['id']}")
        key = uri.removeprefix("freight://")
        storage_url = server.env.get("FREIGHT_STORAGE_URL")
        if storage_url:  # s3://bucket?endpoint=... -> s3://bucket/key
            native = storage_url.split("?")[0].rstrip("/") + "/" + key
        else:
            native = (Path(server.env["FREIGHT_STATE_DIR"]) / "objects" / key).resolve().as_uri()
        for uri in (f"freight://{key}", native):
            created = create(
                client, "reverse", input_uri=uri, input_content_type="application/octet-stream"
            )
            done = wait_done(client, created["id"])
            assert done["status"] == "succeeded", done
            assert client.get(f"/v1/predictions/{created['id']}/output").content == b"olleh"
        elsewhere = client.post(
            "/v1/predictions", json={"target": "reverse", "input_uri": "s3://some-other-bucket/x"}
        )
        assert elsewhere.status_code == 400 and error_code(elsewhere) == "unsupported_input_uri"


def _sample(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample in an exposition text (0 when absent)."""
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        metric, _, rest = head.partition("{")
        found = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        if metric == name and found == labels:
            return float(value)
    return 0.0


def test_metrics_count_predictions_and_expose_state(make_server: Callable[..., Server]) -> None:
    """/metrics counts created and finished predictions with their timings, and reports
    backlog and ready replicas."""
    server = make_server()  # counts the whole server's rows
    with server.client() as client:
        for i in range(3):
            wait_done(client, create(client, "echo", {"i": i})["id"])
        wait_done(client, create(client, "boom", {"fail": True})["id"])
        response = client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        text = response.text
        assert _sample(text, "freight_predictions_created_total", target="echo") == 3
        assert (
            _sample(
                text,
                "freight_predictions_finished_total",
                target="echo",
                status="succeeded",
                code="",
            )
            == 3
        )
        assert (
            _sample(
                text,
                "freight_predictions_finished_total",
                target="boom",
                status="failed",
                code="model_error",
            )
            == 1
        )
        assert _sample(text, "freight_prediction_queue_seconds_count", target="echo") == 3
        assert _sample(text, "freight_prediction_run_seconds_count", target="echo") == 3
        assert _sample(text, "freight_replicas_ready", model="echo") == 2
        create(client, "reverse")  # awaiting its upload: part of the backlog
        backlog = client.get("/metrics").text
        assert _sample(backlog, "freight_backlog", target="reverse") == 1
