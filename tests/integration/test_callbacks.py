"""Callback steps (``kind: callback``) against a real server, on both shapes.

A run of ``review`` (tests/callback_project/) reaches its ``approve`` step and waits,
holding nothing, for an outside answer to the URLs it published (in GET of the run
and in its ``step.waiting`` webhook event); the answers go through the SDK, the CLI
and plain HTTP. The server is SIGKILLed (every process of it) while the run waits,
and the URL given before the kill finishes the run after the restart. No answer's
token appears in any log line.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from freight.client import Client, FreightClientError
from tests.acceptance.conftest import run_cli
from tests.fixtures.server import ModuleServers, Server, wait_until
from tests.integration.helpers import create, error_code, wait_done
from tests.integration.test_notifications import FAST_DELIVERY, Receiver, receiver, secret_of

PROJECT = Path(__file__).resolve().parent.parent / "callback_project"
SECRET = {"FREIGHT_SECRET_KEY": "c" * 32}  # one key for every process of a cluster
__all__ = ["receiver"]  # the webhook receiver fixture, shared with the notification tests


def _start(make_server: Callable[..., Server], shape: dict[str, str], **env: str) -> list[Server]:
    """The server: one process embedded; an API and a worker in the cluster shape (the
    API, which answers, first)."""
    if shape["FREIGHT_SHAPE"] == "embedded":  # its key generated, kept in its state_dir
        return [make_server(project=PROJECT, **env)]
    api = make_server(project=PROJECT, command="api", **SECRET, **env)
    # the worker's step.waiting events name the API (its public URL), as deployed
    worker = make_server(
        project=PROJECT, command="worker", FREIGHT_PUBLIC_URL=api.url, **SECRET, **env
    )
    return [api, worker]


@pytest.fixture
def api(module_servers: ModuleServers) -> Server:
    """The module's API of each shape (with its worker in the cluster shape), shared by
    the tests that only make runs of their own and answer them."""
    started: list[Server] = module_servers.once(
        "callbacks", lambda: _start(module_servers, module_servers.shape)
    )
    return started[0]


def _waiting(client: httpx.Client, run_id: str, attempt: int = 1) -> dict[str, Any]:
    """The run's approve step once it waits (its callback: step, input, URLs)."""

    def found() -> dict[str, Any] | None:
        step = client.get(f"/v1/predictions/{run_id}").json()["steps"]["approve"]
        shown = step.get("callback")
        return step if shown and shown["attempt"] == attempt else None

    step: dict[str, Any] = wait_until(found, 60)
    return step


def _at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def test_an_answered_success_finishes_the_run(api: Server) -> None:
    """The step waits with its rendered input, the reason ``awaiting_callback``, and its
    three URLs; the SDK answers with the success URL; the next step runs on it."""
    with api.client() as http:
        run_id = create(http, "review", {"value": 1, "reviewer": "ana"})["id"]
        step = _waiting(http, run_id)
    shown = step["callback"]
    assert (step["status"], step["waiting_reason"]) == ("running", "awaiting_callback")
    assert shown["input"] == {"draft": 2, "reviewer": "ana"}
    assert sorted(shown["urls"]) == ["failure", "heartbeat", "success"]
    assert shown["urls"]["success"].startswith(api.url + "/v1/callbacks/")
    with Client(api.url) as client:
        answered = client.callback_success(shown["urls"]["success"], {"ok": True})
        assert answered.status == "succeeded"
        done = client.get(run_id)
    with api.client() as http:
        done_body = wait_done(http, run_id)
    assert done_body["status"] == "succeeded", done_body
    assert done_body["output"] == {"approval": {"ok": True}, "published": 3}
    assert done.steps is not None and done.steps["approve"].callback is None


def test_a_failure_fails_the_run_with_callback_failed(api: Server) -> None:
    with api.client() as http:
        run_id = create(http, "review", {"value": 1, "reviewer": "ana"})["id"]
        urls = _waiting(http, run_id)["callback"]["urls"]
        failed = http.post(urls["failure"], json={"error": "Rejected", "cause": "too vague"})
        assert failed.status_code == 200, failed.text
        assert failed.json()["status"] == "failed"
        done = wait_done(http, run_id)
    assert done["status"] == "failed"
    assert done["error"]["code"] == "callback_failed"
    assert "Rejected" in done["error"]["message"] and "too vague" in done["error"]["message"]


def test_a_heartbeat_then_the_cli_answers(api: Server) -> None:
    """A heartbeat moves the deadline on (a later one); then ``freight callback
    succeed`` with the token alone answers on the server it is pointed at."""
    with api.client() as http:
        run_id = create(http, "review", {"value": 5, "reviewer": "bo"})["id"]
        shown = _waiting(http, run_id)["callback"]
        beat = http.post(shown["urls"]["heartbeat"])
        assert beat.status_code == 200, beat.text
        assert _at(beat.json()["deadline"]) > _at(shown["deadline"])
        assert beat.json()["status"] == "running"
    token = shown["urls"]["success"].split("/v1/callbacks/")[1].split("/")[0]
    result = run_cli("--url", api.url, "callback", "succeed", token, '{"ok": false}')
    assert result.returncode == 0, result.stderr
    assert "succeeded" in result.stdout
    assert token not in result.stdout + result.stderr
    with api.client() as http:
        done = wait_done(http, run_id)
    assert done["status"] == "succeeded"
    assert done["output"] == {"approval": {"ok": False}, "published": None}
    assert done["steps"]["publish"]["status"] == "skipped"


def test_a_wait_nobody_answers_times_out(api: Server) -> None:
    with api.client() as http:
        run_id = create(http, "brief", {"q": "anyone?"})["id"]
        done = wait_done(http, run_id)
    assert (done["status"], done["error"]["code"]) == ("failed", "timeout")
    assert done["steps"]["ask"]["error"]["code"] == "timeout"


def test_wrong_reused_and_invalid_answers_are_refused(api: Server) -> None:
    """403 for a forged token; 400 for an answer that fails the schema (nothing changed:
    the right answer is taken after it); 409 for an answer given twice."""
    with api.client() as http:
        run_id = create(http, "review", {"value": 1, "reviewer": "ana"})["id"]
        urls = _waiting(http, run_id)["callback"]["urls"]
        token = urls["success"].split("/v1/callbacks/")[1].split("/")[0]
        forged = urls["success"].replace(token, token[:-4] + "AAAA")
        refused = http.post(forged, json={"ok": True})
        assert (refused.status_code, error_code(refused)) == (403, "invalid_callback_token")
        invalid = http.post(urls["success"], json={"ok": "yes"})
        assert (invalid.status_code, error_code(invalid)) == (400, "answer_invalid")
        assert "/ok" in invalid.json()["error"]["message"]
        assert http.post(urls["success"], json={"ok": True}).status_code == 200
        again = http.post(urls["success"], json={"ok": False})
        assert (again.status_code, error_code(again)) == (409, "callback_closed")
        late = http.post(urls["heartbeat"])
        assert (late.status_code, error_code(late)) == (409, "callback_closed")
        for answer in (refused, invalid, again, late):
            assert token not in answer.text
        assert wait_done(http, run_id)["status"] == "succeeded"


def test_the_webhook_gets_step_waiting_and_its_url_answers(
    make_server: Callable[..., Server], shape: dict[str, str], receiver: Receiver
) -> None:
    """A run's webhook subscribed to ``waiting`` gets ``step.waiting`` with the step,
    its input, its deadline and the absolute URLs; answering its success URL finishes
    the run, whose ``completed`` comes after."""
    servers = _start(make_server, shape, **FAST_DELIVERY)
    api = servers[0]
    with api.client() as http:
        hook = {"url": receiver.url, "events": ["waiting", "completed"]}
        run_id = create(http, "review", {"value": 1, "reviewer": "ana"}, webhook=hook)["id"]
    secret = secret_of(servers[0].env, PROJECT)

    def kinds() -> list[str]:
        return [event["type"] for event in receiver.accepted(secret)]

    wait_until(lambda: "step.waiting" in kinds(), 60)
    waiting = next(e for e in receiver.accepted(secret) if e["type"] == "step.waiting")
    announced = waiting["data"]["callback"]
    assert waiting["data"]["id"] == run_id
    assert (announced["step"], announced["input"]) == ("approve", {"draft": 2, "reviewer": "ana"})
    assert announced["deadline"] is not None
    with Client(api.url) as client:
        client.callback_success(announced["urls"]["success"], {"ok": True})
    wait_until(lambda: kinds() == ["step.waiting", "prediction.completed"], 60)


def test_a_waiting_run_survives_a_sigkill_of_every_process(
    make_server: Callable[..., Server], shape: dict[str, str]
) -> None:
    """Every freight process SIGKILLed while the run waits; after the restart the URL
    given before the kill answers, and the run finishes. Then no log line of any
    process holds the token (nor its signature)."""
    servers = _start(make_server, shape, FREIGHT_LOG_LEVEL="debug")
    with servers[0].client() as http:
        run_id = create(http, "review", {"value": 7, "reviewer": "cy"})["id"]
        before = _waiting(http, run_id)["callback"]
    for server in servers:
        server.signal(signal.SIGKILL)
        server.wait_exit()
    restarted = _start(make_server, shape, FREIGHT_LOG_LEVEL="debug")
    api = restarted[0]
    with api.client() as http:
        after = _waiting(http, run_id)["callback"]
        assert (
            after["urls"]["success"].split("/v1/callbacks/")[1]
            == (before["urls"]["success"].split("/v1/callbacks/")[1])
        )
        path = "/v1/callbacks/" + before["urls"]["success"].split("/v1/callbacks/")[1]
        answered = http.post(path, json={"ok": True, "note": "after the restart"})
        assert answered.status_code == 200, answered.text
        done = wait_done(http, run_id)
    assert done["status"] == "succeeded", done
    assert done["output"] == {"approval": {"ok": True, "note": "after the restart"}, "published": 9}
    token = path.split("/")[3]
    for server in servers + restarted:
        logs = server.logs()
        assert token not in logs and token.rpartition(".")[2] not in logs
        assert "/v1/callbacks/" not in logs


@pytest.mark.parametrize("shape", ["embedded"], indirect=True)
def test_the_sdk_refuses_what_names_no_callback(make_server: Callable[..., Server]) -> None:
    server = make_server(project=PROJECT)
    with Client(server.url) as client:
        with pytest.raises(FreightClientError) as refused:
            client.callback_heartbeat("x.1.2.nonsense")
        assert (refused.value.status, refused.value.code) == (403, "invalid_callback_token")
        with pytest.raises(ValueError):
            client.callback_heartbeat("https://elsewhere.test/not/a/callback")
