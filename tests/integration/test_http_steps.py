"""HTTP steps (``kind: http``) through a real server, on both shapes, against a real
server on loopback (allowed by ``FREIGHT_WEBHOOK_ALLOW_PRIVATE``, as for webhooks):
the body rendered from earlier steps, a header's secret from the server's environment
(never in the run's GET, its events or the server's log), the output flowing to the
next step; non-2xx answers failing the step ``http_error`` and retried; loopback refused
without the setting (``url_refused``); a call whose server was SIGKILLed made again."""

from __future__ import annotations

import json
import signal
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.server import Server, wait_until
from tests.integration.helpers import create, wait_done

PROJECT = Path(__file__).resolve().parent.parent / "http_project"
SECRET = "s3cr3t-http-step-token"
ALLOWED = {"FREIGHT_WEBHOOK_ALLOW_PRIVATE": "true", "HTTP_STEP_TOKEN": SECRET}


@dataclass
class Receiver:
    """What the loopback server got. ``/echo/…`` answers ``{"n": value + 1, "auth": …}``;
    ``/fail/K/…`` 503 to its first K calls, then ``{"ok": true}``; ``/hold/…`` holds
    its first call until :attr:`release` is set, then answers ``{"held": true}``."""

    port: int = 0
    got: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def answer(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        with self.lock:
            self.got.append((path, headers, body))
            self.calls[path] += 1
            calls = self.calls[path]
        kind = path.split("/")[1]
        if kind == "echo":
            return 200, {"n": json.loads(body)["value"] + 1, "auth": headers.get("authorization")}
        if kind == "fail":
            return (503, {"busy": True}) if calls <= int(path.split("/")[2]) else (200, {"ok": 1})
        if kind == "hold":
            self.release.wait(120)
            return 200, {"held": True}
        return 404, {}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, value = state.answer(self.path, headers, body)
            data = json.dumps(value).encode()
            try:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                pass  # the caller was killed meanwhile

        do_GET = do_POST = _any

        def log_message(self, *args: Any) -> None:
            pass

    http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    http.daemon_threads = True
    state.port = http.server_address[1]
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    yield state
    state.release.set()
    http.shutdown()
    http.server_close()


def test_a_chain_of_calls_carries_its_outputs_and_never_shows_the_secret(
    make_server: Callable[..., Server], receiver: Receiver
) -> None:
    server = make_server(project=PROJECT, **ALLOWED)
    with server.client() as client:
        run = create(client, "chain", {"url": receiver.url("/echo/chain"), "value": 1})
        done = wait_done(client, run["id"])
        assert done["status"] == "succeeded", done
        assert done["output"] == {"n": 3, "first": {"n": 2, "auth": "Bearer [redacted]"}}
        first, second = receiver.got[0], receiver.got[1]
        assert json.loads(first[2]) == {"value": 1} and json.loads(second[2]) == {"value": 2}
        assert (first[1]["authorization"], first[1]["x-team"]) == (f"Bearer {SECRET}", "ml")
        assert "authorization" not in second[1]
        step = done["steps"]["first"]
        shown = [
            client.get(f"/v1/predictions/{run['id']}").text,
            client.get(f"/v1/predictions/{step['prediction_id']}").text,
            client.get(f"/v1/predictions/{run['id']}/events").text,
            client.get("/v1/pipelines/chain").text,
        ]
        assert client.get(f"/v1/predictions/{step['prediction_id']}").json()["input"] == {
            "value": 1
        }
    assert all(SECRET not in text for text in shown)
    assert "HTTP_STEP_TOKEN" in shown[3]  # the variable's name is the declaration
    assert SECRET not in server.logs()


def test_non_2xx_answers_fail_the_step_and_retry_runs_it_again(
    make_server: Callable[..., Server], receiver: Receiver
) -> None:
    server = make_server(project=PROJECT, **ALLOWED)
    with server.client() as client:
        flaky = create(client, "flaky", {"url": receiver.url("/fail/2/flaky")})
        once = create(client, "once", {"url": receiver.url("/fail/9/once")})
        done = wait_done(client, flaky["id"])
        assert (done["status"], done["output"]) == ("succeeded", {"ok": 1}), done
        step = client.get(f"/v1/predictions/{done['steps']['call']['prediction_id']}").json()
        assert step["attempts"] == 3
        assert [h["why"] for h in step["attempt_history"]] == ["http_error", "http_error"]
        failed = wait_done(client, once["id"])
        assert failed["status"] == "failed" and failed["error"]["code"] == "http_error"
        step = client.get(f"/v1/predictions/{failed['steps']['call']['prediction_id']}").json()
    assert step["error"]["code"] == "http_error"
    assert step["error"]["message"] == "127.0.0.1 answered HTTP 503"
    assert receiver.calls["/fail/2/flaky"] == 3 and receiver.calls["/fail/9/once"] == 1


@pytest.mark.parametrize("shape", ["embedded"], indirect=True)
def test_loopback_is_refused_without_the_setting(
    make_server: Callable[..., Server], receiver: Receiver
) -> None:
    server = make_server(project=PROJECT)
    with server.client() as client:
        run = create(client, "once", {"url": receiver.url("/echo/refused")})
        done = wait_done(client, run["id"])
        step = client.get(f"/v1/predictions/{done['steps']['call']['prediction_id']}").json()
    assert done["error"]["code"] == "url_refused"
    assert (step["error"]["code"], step["error"]["message"]) == (
        "url_refused",
        "the http step host 127.0.0.1 is a loopback address",
    )
    assert receiver.calls["/echo/refused"] == 0


@pytest.mark.slow
def test_a_call_cut_off_by_a_sigkill_is_made_again_by_the_next_server(
    make_server: Callable[..., Server], receiver: Receiver
) -> None:
    """Embedded: the restarted server requeues the orphan at start; cluster: a second
    server's reaper requeues it once the killed one's lease lapsed. Either way the call
    is made again and the run succeeds (an http step is called at least once)."""
    doomed = make_server(project=PROJECT, **ALLOWED)
    with doomed.client() as client:
        run = create(client, "once", {"url": receiver.url("/hold/killed")})
    wait_until(lambda: receiver.calls["/hold/killed"] == 1)
    doomed.signal(signal.SIGKILL)
    doomed.wait_exit()
    receiver.release.set()
    survivor = make_server(project=PROJECT, **ALLOWED)
    with survivor.client() as client:
        done = wait_done(client, run["id"], timeout_s=90)
        assert (done["status"], done["output"]) == ("succeeded", {"held": True}), done
        step = client.get(f"/v1/predictions/{done['steps']['call']['prediction_id']}").json()
    assert step["attempts"] == 2
    assert [h["why"] for h in step["attempt_history"]] in (["process_died"], ["lease_expired"])
    assert receiver.calls["/hold/killed"] == 2
