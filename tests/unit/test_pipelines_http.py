"""HTTP steps (``kind: http``), the pure parts: what ``freight check`` finds, the spec
and row an http step makes, and what an answer makes of the step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from freight.agent.http_steps import warn_missing_secrets
from freight.errors import PipelineDefinitionError
from freight.pipelines import Pipeline, Step, check_pipelines, mermaid, parse_pipelines
from freight.pipelines.http import (
    DEFAULT_TIMEOUT_S,
    REDACTED,
    Header,
    Request,
    StepFailure,
    answer_of,
    redact,
    request_fields,
    resolve_headers,
)
from freight.pipelines.plan import StepState, StepStatus, plan
from freight.server import check

MODELS = {"m"}


def _faults(step: dict[str, Any]) -> list[PipelineDefinitionError]:
    return check_pipelines({"p": {"steps": {"call": step}}}, targets=MODELS)


def _http_faults(step: dict[str, Any]) -> list[str]:
    return [f.message for f in _faults(step) if f.detail.get("fault") == "http"]


def test_a_valid_http_step_has_no_fault() -> None:
    step = {
        "kind": "http",
        "method": "put",
        "url": "https://api.example.com/v1/items",
        "headers": {"Authorization": {"env": "API_TOKEN", "prefix": "Bearer "}, "X-Team": "ml"},
        "input": {"value": "$input.x"},
        "timeout_s": 5,
        "retry": {"on": ["http_error", "timeout"]},
    }
    assert _faults(step) == []


@pytest.mark.parametrize(
    ("step", "fault"),
    [
        ({"kind": "http"}, "an http step needs url:"),
        ({"kind": "http", "url": 3}, "url must be a URL or a $reference, got 3"),
        ({"kind": "http", "url": "ftp://x/y"}, "url must be http:// or https://, not 'ftp'"),
        ({"kind": "http", "url": "https:///x"}, "url has no host"),
        ({"kind": "http", "url": "https://a b/"}, "url contains whitespace or control characters"),
        (
            {"kind": "http", "url": "https://x/", "method": "FETCH"},
            "method must be one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, got 'FETCH'",
        ),
        (
            {"kind": "http", "url": "https://x/", "headers": {"Host": "y"}},
            "headers: Host is set by the connection, not declared",
        ),
        (
            {"kind": "http", "url": "https://x/", "headers": {"A": {"env": "1X"}}},
            "headers: A: env must name an environment variable, got '1X'",
        ),
        (
            {"kind": "http", "url": "https://x/", "headers": {"A": {"env": "T", "from": "x"}}},
            "headers: A: unknown key(s) from (env, prefix)",
        ),
        (
            {"kind": "http", "url": "https://x/", "headers": {"A": 3}},
            "headers: A: a value is a string or {env: NAME, prefix: …}, got int",
        ),
        (
            {"kind": "http", "url": "https://x/", "headers": {"A": "a\r\nB: c"}},
            "headers: A: a value holds no line break",
        ),
        ({"model": "m", "url": "https://x/"}, "url applies only to a kind: http step"),
    ],
)
def test_each_fault_of_an_http_step_is_named(step: dict[str, Any], fault: str) -> None:
    assert _http_faults(step) == [f"pipeline 'p', step 'call': {fault}"]


def test_a_url_reference_is_checked_like_a_template() -> None:
    faults = _faults({"kind": "http", "url": "$steps.nowhere.output"})
    assert [f.detail["fault"] for f in faults] == ["unknown_step"]
    assert "url: '$steps.nowhere.output'" in faults[0].message


def test_the_spec_renders_url_and_body_together_and_the_url_adds_needs() -> None:
    spec = parse_pipelines(
        {
            "p": {
                "steps": {
                    "a": {"model": "m"},
                    "call": {
                        "kind": "http",
                        "url": "$steps.a.output | join('', ['https://api.example.com/', id])",
                        "headers": {"Authorization": {"env": "TOKEN", "prefix": "Bearer "}},
                    },
                    "after": {"model": "m", "input": "$steps.call.output"},
                }
            }
        },
        targets=MODELS,
    )["p"]
    call = spec.steps["call"]
    assert (call.kind, call.target, call.needs) == ("http", ":http", frozenset({"a"}))
    assert call.timeout_s == DEFAULT_TIMEOUT_S and call.input is None  # no input: no body
    states = {"a": StepState(StepStatus.SUCCEEDED, output={"id": "7"})}
    start = plan(spec, {}, states).start[0]
    assert start.input == {"url": "https://api.example.com/7", "body": None}
    assert call.http is not None
    definition, body = request_fields(call.http, start.input)
    request = Request.loads(definition)
    assert (request.method, request.url, body) == ("POST", "https://api.example.com/7", None)
    assert request.headers == (Header("Authorization", env="TOKEN", prefix="Bearer "),)
    assert "TOKEN" in definition  # the variable's name; never a value


def test_retry_of_an_http_step_covers_http_errors_by_default() -> None:
    raw = {"steps": {"call": {"kind": "http", "url": "https://x/", "retry": {}}}}
    retry = parse_pipelines({"p": raw}, targets=MODELS)["p"].steps["call"].retry
    assert retry is not None and retry.on == {"http_error", "timeout"}


def test_mermaid_draws_an_http_step_as_a_parallelogram_naming_its_call() -> None:
    raw = {"steps": {"call": {"kind": "http", "method": "get", "url": "https://x.test/a"}}}
    graph = mermaid(parse_pipelines({"p": raw}, targets=MODELS)["p"])
    assert '    s0[/"call<br/>http: GET https://x.test/a"/]' in graph


def test_headers_resolve_from_the_environment_and_a_missing_one_is_named() -> None:
    headers = (Header("Authorization", env="TOKEN", prefix="Bearer "), Header("X-A", value="b"))
    sent, secrets = resolve_headers(headers, {"TOKEN": "s3cr3t-value"})
    assert sent == {"Authorization": "Bearer s3cr3t-value", "X-A": "b"}
    assert secrets == ["s3cr3t-value"]
    with pytest.raises(StepFailure) as failed:
        resolve_headers(headers, {})
    assert failed.value.code == "missing_secret"
    assert "TOKEN" in failed.value.message and failed.value.detail["env"] == "TOKEN"


def test_redact_strikes_secrets_out_of_strings_and_keys() -> None:
    value = {"echo": ["Bearer s3cr3t", 1], "s3cr3t": None}
    assert redact(value, ["s3cr3t"]) == {"echo": [f"Bearer {REDACTED}", 1], REDACTED: None}


def test_answers_become_outputs_by_their_content_type() -> None:
    def answer(status: int, kind: str | None, body: bytes) -> Any:
        return answer_of(status, kind, body, host="h", secrets=["s3cr3t"])

    assert answer(200, "application/json", b'{"a": "s3cr3t"}').value == {"a": REDACTED}
    assert answer(201, "application/problem+json", b"[1]").value == [1]
    assert answer(200, "text/plain; charset=utf-8", b"hello").value == "hello"
    assert answer(200, None, b"plain").value == "plain"
    assert answer(204, None, b"").value is None
    stored = answer(200, "image/png", b"\x89PNG")
    assert (stored.data, stored.content_type) == (b"\x89PNG", "image/png")


def test_a_failed_answer_fails_the_step_with_its_status_and_first_bytes() -> None:
    with pytest.raises(StepFailure) as failed:
        answer_of(503, "text/plain", b"busy: s3cr3t" + b"x" * 5000, host="h", secrets=["s3cr3t"])
    assert (failed.value.code, failed.value.message) == ("http_error", "h answered HTTP 503")
    assert failed.value.detail["status"] == 503
    assert failed.value.detail["response"].startswith(f"busy: {REDACTED}")
    assert len(failed.value.detail["response"]) == 1024
    with pytest.raises(StepFailure, match="redirects are not followed"):
        answer_of(302, None, b"", host="h", secrets=[])
    with pytest.raises(StepFailure) as bad:
        answer_of(200, "application/json", b"{nope", host="h", secrets=[])
    assert bad.value.code == "output_error"


def test_the_request_keeps_no_secret() -> None:
    request = Request("POST", "https://x/", (Header("A", env="TOKEN"), Header("B", value="v")))
    assert orjson.loads(request.dumps()) == {
        "method": "POST",
        "url": "https://x/",
        "headers": [{"name": "A", "env": "TOKEN", "prefix": ""}, {"name": "B", "value": "v"}],
    }
    assert Request.loads(request.dumps()) == request


def test_freight_check_names_every_fault_of_an_http_step(tmp_path: Path) -> None:
    (tmp_path / "freight.yaml").write_text(
        "pipelines:\n"
        "  p:\n"
        "    steps:\n"
        "      call:\n"
        "        kind: http\n"
        "        method: FETCH\n"
        "        url: ftp://files.example.com/x\n"
        "        headers: {Authorization: {env: API-TOKEN}}\n"
    )
    assert check(tmp_path) == [
        f"pipeline 'p', step 'call': {fault}"
        for fault in (
            "url must be http:// or https://, not 'ftp'",
            "method must be one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, got 'FETCH'",
            "headers: Authorization: env must name an environment variable, got 'API-TOKEN'",
        )
    ]


def test_a_python_declared_http_step_is_the_yaml_one() -> None:
    step = Step(
        kind="http",
        url="$input.url",
        headers={"Authorization": {"env": "TOKEN", "prefix": "Bearer "}},
        input={"a": "$input.a"},
    )
    spec = parse_pipelines({"p": Pipeline("p", steps={"call": step})}, targets=MODELS)["p"]
    call = spec.steps["call"]
    assert call.http is not None and call.http.url == "$input.url"
    assert call.http.headers == (Header("Authorization", env="TOKEN", prefix="Bearer "),)


def test_a_worker_names_each_header_variable_its_environment_lacks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    headers = {"A": {"env": "SET_HERE"}, "B": {"env": "NOT_SET_HERE"}, "C": "literal"}
    raw = {"steps": {"call": {"kind": "http", "url": "https://x/", "headers": headers}}}
    specs = parse_pipelines({"p": raw}, targets=MODELS).values()
    with caplog.at_level("WARNING", logger="freight.http_steps"):
        assert warn_missing_secrets(specs, {"SET_HERE": "x"}) == ["NOT_SET_HERE"]
    assert "NOT_SET_HERE is not set in this worker's environment" in caplog.text
