"""freight's API fuzzed from its own OpenAPI document, as an outside tool would.

The schemathesis CLI runs against a real embedded server: its examples,
coverage, fuzzing and stateful phases generate valid and invalid requests per
operation (and sequences of them), and every check that fits runs on every
response: no 5xx for any input, status codes, content types, headers and
bodies as documented, invalid data rejected, ``405`` answers with the right
``Allow``, a created prediction reachable at its links. Bounded by a number
of examples and seeded, so a failure reproduces (the output names
``st replay`` ids).

Every body field is fuzzed, the nested ones too (``webhook``, a batch job's
``input: {upload: [...]}``): the test reads the requests back from the run's HAR
record and checks that generated webhooks reached both the queue route (a body
object) and a real-time route (query parameters).

Left out, with the reason:
- ``positive_data_acceptance``: freight validates beyond JSON Schema (a model
  that takes JSON refuses other bodies with 415; ``input`` and ``input_uri``
  together are ``ambiguous_input``; a cursor must be one freight issued), so a
  schema-valid request may rightly get a documented 4xx.

Authentication is on: the run sends an admin key on every request, and its
``ignored_auth`` check sends each secured operation without it and with a wrong one,
expecting 401 (signed URLs are query parameters, not a security scheme).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.fixtures.server import FAST, PROJECT, Server

pytestmark = pytest.mark.xdist_group("fuzz")

EXAMPLES = os.environ.get("FREIGHT_FUZZ_EXAMPLES", "20")
EXCLUDED = "positive_data_acceptance"


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One embedded server for the module, serving a JSON model and a bytes model."""
    tmp = tmp_path_factory.mktemp("fuzz")
    env = {
        **os.environ,
        **FAST,
        "FREIGHT_STATE_DIR": str(tmp / "state"),
        "FREIGHT_MODELS": '["models:Echo", "models:Reverse"]',
        "FREIGHT_LOG_LEVEL": "warning",
        # long polls (?wait=, Prefer: wait=, ?timeout=) end at this cap: the fuzzer
        # asks for waits of 1e308 s and must not read that as a hung server
        "FREIGHT_MAX_WAIT_S": "2",
        # ignored_auth sends wrong credentials on purpose, many times a minute
        "FREIGHT_MAX_AUTH_FAILURES": "1000000",
    }
    env.pop("FREIGHT_DATABASE_URL", None)
    env.pop("FREIGHT_STORAGE_URL", None)
    server = Server(env=env, cwd=Path(tmp), project=PROJECT).start()
    created = httpx.post(
        f"{server.url}/v1/keys", json={"tenant": "fuzz", "scopes": ["admin"]}, timeout=30
    )
    assert created.status_code == 201, created.text
    server.env["FUZZ_KEY"] = created.json()["token"]
    yield server
    server.stop(kill=True)


def test_api_conforms_to_its_own_schema(fuzz_server: Server, tmp_path: Path) -> None:
    """Every generated request, valid or not, gets a documented, schema-conforming answer
    and never a 5xx; nothing reaches the server's catch-all error handler."""
    cli = Path(sys.executable).with_name("schemathesis")
    result = subprocess.run(
        [
            str(cli),
            "run",
            f"{fuzz_server.url}/openapi.json",
            "--checks",
            "all",
            "--exclude-checks",
            EXCLUDED,
            "--max-examples",
            EXAMPLES,
            "--seed",
            "1",
            "--workers",
            "1",
            "--request-timeout",
            "30",
            "--header",
            f"Authorization: Bearer {fuzz_server.env['FUZZ_KEY']}",
            "--report-dir",
            str(tmp_path),
            "--report",
            "har",
            "--report-har-path",
            str(tmp_path / "requests.har"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,  # schemathesis keeps its example database in ./.schemathesis
        env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false"},
    )
    assert result.returncode == 0, result.stdout[-12000:] + result.stderr[-2000:]
    assert "unexpected error" not in fuzz_server.logs()
    sent = requests_sent(tmp_path / "requests.har")
    bodies: dict[tuple[str, str], list[Any]] = {}
    for method, path, _, body in sent:
        bodies.setdefault((method, path), []).append(body)
    created = bodies.get(("POST", "/v1/predictions"), [])
    assert any(isinstance(b, dict) and isinstance(b.get("webhook"), dict) for b in created)
    jobs = bodies.get(("POST", "/v1/batch-jobs"), [])
    assert any(isinstance(b, dict) and isinstance(b.get("input"), dict) for b in jobs)
    assert any(
        path.endswith("/predict") and "webhook" in query for _, path, query, _ in sent
    ), "no real-time request carried a webhook"


def requests_sent(har: Path) -> list[tuple[str, str, dict[str, str], Any]]:
    """Each request of a HAR record as ``(method, path, query, JSON body or None)``."""
    entries = json.loads(har.read_text())["log"]["entries"]
    found: list[tuple[str, str, dict[str, str], Any]] = []
    for entry in entries:
        request = entry["request"]
        url = urlsplit(request["url"])
        query = {item["name"]: item["value"] for item in request.get("queryString", [])}
        text = (request.get("postData") or {}).get("text")
        try:
            body = json.loads(text) if text else None
        except ValueError:
            body = None
        found.append((request["method"], url.path, query, body))
    return found
