"""The SageMaker runtime API with boto3's own ``sagemaker-runtime`` client, on both shapes.

A real server of tests/interop_project, with an operator key (FREIGHT_ADMIN_KEY) so that
every call must authenticate; SigV4 pairs made through ``POST /v1/keys`` and ``freight
keys create --sigv4``. The client is boto3 unchanged (``endpoint_url`` only): botocore
signs, serialises and parses, and raises its own exception classes. The async results
are read where the 202 says: with boto3's S3 client from the cluster shape's S3 (moto),
from the directory of the embedded shape. A webhook sink of ``format: sagemaker``
receives SageMaker's notification JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import boto3
import httpx
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

from freight.access import new_key
from tests.fixtures.server import ModuleServers, Server, wait_until

PROJECT = Path(__file__).resolve().parents[1] / "interop_project"
MODELS = ["Echo", "Shout", "Fail", "Sleepy"]
REGION = "eu-west-1"  # any region: the signature's scope is the client's


@dataclass
class Hooks:
    """A webhook receiver on loopback: the SageMaker notifications it got."""

    port: int = 0
    bodies: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/sns"

    def about(self, inference_id: str) -> dict[str, Any] | None:
        with self.lock:
            return next((b for b in self.bodies if b.get("inferenceId") == inference_id), None)


@pytest.fixture(scope="module")
def hooks(module_servers: ModuleServers) -> Iterator[Hooks]:
    """A receiver per shape (each shape's server notifies its own: ids repeat)."""
    state = Hooks()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            with state.lock:
                state.bodies.append(json.loads(body))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@dataclass
class Freight:
    server: Server
    admin: str  # the operator's bearer key

    def ops(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.server.url, headers={"authorization": f"Bearer {self.admin}"}, timeout=30
        )

    def pair(self, tenant: str = "acme", **body: Any) -> tuple[str, str]:
        with self.ops() as ops:
            made = ops.post("/v1/keys", json={"tenant": tenant, "sigv4": True, **body})
        assert made.status_code == 201, made.text
        shown = made.json()
        assert shown["kind"] == "sigv4" and "token" not in shown
        return shown["access_key_id"], shown["secret_access_key"]

    def bearer(self, tenant: str = "acme") -> str:
        with self.ops() as ops:
            made = ops.post("/v1/keys", json={"tenant": tenant})
        token: str = made.json()["token"]
        return token

    def runtime(self, key_id: str, secret: str, **config: Any) -> Any:
        return boto3.client(
            "sagemaker-runtime",
            endpoint_url=self.server.url,
            region_name=REGION,
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
            config=Config(retries={"max_attempts": 1}, **config),
        )


@pytest.fixture(scope="module")
def freight(module_servers: ModuleServers, hooks: Hooks) -> Freight:
    """One server of each shape for the module (each test its own keys and ids)."""
    admin = new_key().token
    return module_servers.once("sagemaker", lambda: _started(module_servers, hooks, admin))


def _started(make_server: Callable[..., Server], hooks: Hooks, admin: str) -> Freight:
    server = make_server(
        project=PROJECT,
        models=MODELS,
        FREIGHT_ADMIN_KEY=admin,
        FREIGHT_TEST_SNS_URL=hooks.url,
        FREIGHT_WEBHOOK_ALLOW_PRIVATE="true",  # the receiver is on loopback
        FREIGHT_DELIVERY_BACKOFF_S="0.05",
        FREIGHT_DELIVERY_BACKOFF_MAX_S="0.2",
    )
    return Freight(server, admin)


def prediction(freight: Freight, bearer: str, prediction_id: str) -> dict[str, Any]:
    with httpx.Client(base_url=freight.server.url, timeout=30) as client:
        got = client.get(
            f"/v1/predictions/{prediction_id}", headers={"authorization": f"Bearer {bearer}"}
        )
    assert got.status_code == 200, got.text
    body: dict[str, Any] = got.json()
    return body


def test_invoke_endpoint_answers_models_and_pipelines(freight: Freight) -> None:
    """A JSON model, a bytes model and a pipeline answer through invoke_endpoint, signed
    with a pair of the API; InferenceId and CustomAttributes are kept on the prediction,
    which the same tenant's bearer key reads."""
    runtime = freight.runtime(*freight.pair())
    answer = runtime.invoke_endpoint(
        EndpointName="echo",
        Body=json.dumps({"x": [1, 2, 3]}),
        ContentType="application/json",
        Accept="application/json",
        CustomAttributes="trace=abc, c=1",
        InferenceId="inference-1",
    )
    assert answer["ContentType"] == "application/json"
    assert json.loads(answer["Body"].read()) == {"x": [1, 2, 3]}
    assert answer["InvokedProductionVariant"] == "AllTraffic"
    prediction_id = answer["ResponseMetadata"]["HTTPHeaders"]["x-freight-prediction-id"]
    shown = prediction(freight, freight.bearer(), prediction_id)
    assert shown["metadata"]["sagemaker"] == {
        "inference_id": "inference-1",
        "custom_attributes": "trace=abc, c=1",
        "accept": "application/json",
    }

    raw = runtime.invoke_endpoint(EndpointName="shout", Body=b"quiet \x00 bytes")
    assert raw["ContentType"] == "application/octet-stream"
    assert raw["Body"].read() == b"QUIET \x00 BYTES"

    run = runtime.invoke_endpoint(
        EndpointName="echo-twice", Body=b'{"n": 7}', ContentType="application/json"
    )
    assert json.loads(run["Body"].read()) == {"n": 7}


def test_errors_are_botocores_own_classes(freight: Freight) -> None:
    """A failed prediction is ModelError (424, its OriginalStatusCode and
    OriginalMessage); a bad request is ValidationError; a key limited to another model
    is refused; each carries x-amzn-errortype and freight's own code."""
    runtime = freight.runtime(*freight.pair())
    with pytest.raises(runtime.exceptions.ModelError) as failed:
        runtime.invoke_endpoint(
            EndpointName="fail", Body=b'{"x": 3}', ContentType="application/json"
        )
    answer = failed.value.response
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert answer["OriginalStatusCode"] == 500
    assert answer["OriginalMessage"] == "ValueError: cannot score 3"
    assert answer["ResponseMetadata"]["HTTPHeaders"]["x-freight-error-code"] == "model_error"

    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"EndpointName": "nope", "Body": b"{}"}, 400, "unknown_target"),
        (
            {"EndpointName": "echo", "Body": b"plain", "ContentType": "text/plain"},
            415,
            "unsupported_media_type",
        ),
        (
            {"EndpointName": "echo", "Body": b"{not json", "ContentType": "application/json"},
            400,
            "invalid_json",
        ),
        (
            {
                "EndpointName": "echo",
                "Body": b"{}",
                "ContentType": "application/json",
                "TargetModel": "other.tar.gz",
            },
            400,
            "invalid_request",
        ),
    ]
    for call, status, code in cases:
        with pytest.raises(runtime.exceptions.ValidationError) as refused:
            runtime.invoke_endpoint(**call)
        meta = refused.value.response["ResponseMetadata"]
        assert (meta["HTTPStatusCode"], meta["HTTPHeaders"]["x-freight-error-code"]) == (
            status,
            code,
        ), call
        assert refused.value.response["Error"]["Message"]

    with pytest.raises(runtime.exceptions.ValidationError) as bounded:
        runtime.invoke_endpoint_async(
            EndpointName="echo", Body=b"{}", ContentType="application/json", RequestTTLSeconds=99999
        )
    assert "RequestTTLSeconds" in bounded.value.response["Error"]["Message"]

    limited = freight.runtime(*freight.pair(models=["shout"]))
    with pytest.raises(ClientError) as denied:
        limited.invoke_endpoint(EndpointName="echo", Body=b"{}", ContentType="application/json")
    assert denied.value.response["Error"]["Code"] == "AccessDeniedException"
    assert denied.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_sigv4_is_verified(freight: Freight) -> None:
    """A good signature is taken; a wrong secret, an unknown or revoked access key, and
    no signature at all are refused with AWS's own error codes (403); the pair of
    `freight keys create --sigv4` works like one of the API."""
    key_id, secret = freight.pair()
    call = {"EndpointName": "echo", "Body": b"{}", "ContentType": "application/json"}
    assert freight.runtime(key_id, secret).invoke_endpoint(**call)["Body"].read() == b"{}"

    refusals = [
        (
            freight.runtime(key_id, secret[:-1] + ("A" if secret[-1] != "A" else "B")),
            "InvalidSignatureException",
            "invalid_signature",
        ),
        (
            freight.runtime("FRK" + "Z" * 17, secret),
            "UnrecognizedClientException",
            "unknown_access_key",
        ),
        (
            freight.runtime(key_id, secret, signature_version=UNSIGNED),
            "MissingAuthenticationTokenException",
            "missing_credentials",
        ),
    ]
    for runtime, aws_code, code in refusals:
        with pytest.raises(ClientError) as refused:
            runtime.invoke_endpoint(**call)
        answer = refused.value.response
        assert answer["Error"]["Code"] == aws_code
        assert answer["ResponseMetadata"]["HTTPStatusCode"] == 403
        assert answer["ResponseMetadata"]["HTTPHeaders"]["x-freight-error-code"] == code

    with freight.ops() as ops:
        assert ops.post(f"/v1/keys/{key_id}/revoke").status_code == 200
    revoked = freight.runtime(key_id, secret)

    def refused_as_unknown() -> bool:  # every process drops a revoked key within key_cache_s
        try:
            revoked.invoke_endpoint(**call)
        except ClientError as exc:
            return exc.response["Error"]["Code"] == "UnrecognizedClientException"
        return False

    wait_until(refused_as_unknown, timeout_s=15)

    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "freight.cli",
            "keys",
            "create",
            "--sigv4",
            "--tenant",
            "beta",
            str(PROJECT),
        ],
        env=freight.server.env,
        cwd=freight.server.cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    cli_id, cli_secret = made.stdout.split()
    assert cli_secret not in made.stderr
    answer = freight.runtime(cli_id, cli_secret).invoke_endpoint(**call)
    assert answer["Body"].read() == b"{}"
    with freight.ops() as ops:
        listed = {k["id"]: k for k in ops.get("/v1/keys").json()["data"]}
    assert listed[cli_id]["kind"] == "sigv4" and listed[cli_id]["tenant"] == "beta"
    assert "secret_access_key" not in listed[cli_id]


def _read(location: str, s3: Any) -> bytes:
    """An async result, read where its location says: S3 (boto3), or a file."""
    parts = urlsplit(location)
    if parts.scheme == "s3":
        data: bytes = s3.get_object(Bucket=parts.netloc, Key=parts.path.lstrip("/"))["Body"].read()
        return data
    assert parts.scheme == "file"
    return Path(unquote(parts.path)).read_bytes()


def _exists(location: str, s3: Any) -> bool:
    try:
        _read(location, s3)
    except (FileNotFoundError, ClientError):
        return False
    return True


def _s3(shape: dict[str, str]) -> Any:
    """boto3's S3 client on the cluster shape's store (None on the embedded shape)."""
    url = shape.get("FREIGHT_STORAGE_URL")
    if not url:
        return None
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    return boto3.client(
        "s3",
        endpoint_url=query["endpoint"],
        region_name=query["region"],
        aws_access_key_id=query["access_key_id"],
        aws_secret_access_key=query["secret_access_key"],
    )


def test_async_results_land_where_the_answer_says(freight: Freight, hooks: Hooks) -> None:
    """invoke_endpoint_async answers 202 with InferenceId, OutputLocation and
    FailureLocation; the output (or the failure) appears there, read by the store's own
    client; the sink of format sagemaker sends SageMaker's notification JSON naming them.
    On S3 the input may be an InputLocation the same S3 client wrote."""
    runtime = freight.runtime(*freight.pair())
    shape = freight.server.env
    s3 = _s3(shape)
    bucket = urlsplit(shape["FREIGHT_STORAGE_URL"]).netloc if s3 else ""
    if s3 is not None:  # the tenant's own objects: under tenants/acme/
        s3.put_object(Bucket=bucket, Key="tenants/acme/in/1.json", Body=b'{"from": "s3"}')
        started = runtime.invoke_endpoint_async(
            EndpointName="echo",
            InputLocation=f"s3://{bucket}/tenants/acme/in/1.json",
            ContentType="application/json",
            InferenceId="from-s3",
        )
        assert started["InferenceId"] == "from-s3"
        wait_until(lambda: _exists(started["OutputLocation"], s3), timeout_s=30)
        assert json.loads(_read(started["OutputLocation"], s3)) == {"from": "s3"}
        with pytest.raises(runtime.exceptions.ValidationError):  # not in freight's bucket
            runtime.invoke_endpoint_async(
                EndpointName="echo",
                InputLocation="s3://elsewhere/x.json",
                ContentType="application/json",
            )

    ok = runtime.invoke_endpoint_async(
        EndpointName="echo",
        Body=b'{"inline": true}',
        ContentType="application/json",
        InferenceId="inline-1",
        S3OutputPathExtension="results/today",
    )
    assert ok["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert ok["OutputLocation"].endswith(
        "/tenants/acme/sagemaker/async-outputs/results/today/"
        + ok["ResponseMetadata"]["HTTPHeaders"]["x-freight-prediction-id"]
        + ".out"
    )
    failing = runtime.invoke_endpoint_async(
        EndpointName="fail", Body=b'{"x": 9}', ContentType="application/json"
    )
    slow = runtime.invoke_endpoint_async(
        EndpointName="sleepy",
        Body=b'{"s": 60}',
        ContentType="application/json",
        InvocationTimeoutSeconds=1,
    )
    wait_until(lambda: _exists(ok["OutputLocation"], s3), timeout_s=30)
    assert json.loads(_read(ok["OutputLocation"], s3)) == {"inline": True}
    assert not _exists(ok["FailureLocation"], s3)

    wait_until(lambda: _exists(failing["FailureLocation"], s3), timeout_s=30)
    failure = json.loads(_read(failing["FailureLocation"], s3))
    assert failure["error"]["code"] == "model_error"
    assert failure["error"]["message"] == "ValueError: cannot score 9"
    assert not _exists(failing["OutputLocation"], s3)
    wait_until(lambda: _exists(slow["FailureLocation"], s3), timeout_s=60)
    assert json.loads(_read(slow["FailureLocation"], s3))["error"]["code"] == "timeout"

    done = wait_until(lambda: hooks.about("inline-1"), timeout_s=30)
    assert done["invocationStatus"] == "Completed"
    assert done["eventSource"] == "aws:sagemaker" and done["eventName"] == "InferenceResult"
    assert done["requestParameters"]["endpointName"] == "echo"
    assert done["responseParameters"]["outputLocation"] == ok["OutputLocation"]
    assert done["eventTime"].endswith("Z") and done["receivedTime"].endswith("Z")
    bad = wait_until(lambda: hooks.about(failing["InferenceId"]), timeout_s=30)
    assert bad["invocationStatus"] == "Failed"
    assert bad["failureReason"] == "model_error: ValueError: cannot score 9"
    assert bad["responseParameters"]["failureLocation"] == failing["FailureLocation"]
