"""HTTP steps (``kind: http``) on every store backend: the agent's caller
(``agent/http_steps.py``) claims the step's row, calls a real server on loopback and
completes the row; the run advances in that completion's transaction.

Model steps are run by the fake worker of the run tests (claim, complete); the http
steps by the real :class:`HttpCaller`, with its guarded client, against a
``ThreadingHTTPServer`` on 127.0.0.1 (allowed by ``allow_private``, as
``webhook_allow_private`` allows it on a server).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from freight.agent.http_steps import TARGET, HttpCaller
from freight.agent.persist import Persist
from freight.config import Settings
from freight.events import CompletionHub, WorkSignal
from freight.prediction import Prediction, Status, attempts_of
from freight.project import load_pipelines
from freight.service import PredictionService
from freight.storage.memory import MemoryStorage
from freight.store import Store
from tests.contract.test_store_runs import outcome, spec_of, start, store

__all__ = ["store"]  # the store fixture, shared with the run tests
SECRET = "s3cr3t-token-value"
MODELS = {"double": lambda x: x * 2, "inc": lambda x: x + 1}
PIPELINES = {
    "call": {
        "steps": {
            "a": {"model": "double", "input": "$input.x"},
            "post": {
                "kind": "http",
                "url": "$input.url",
                "headers": {
                    "Authorization": {"env": "HTTP_STEP_TOKEN", "prefix": "Bearer "},
                    "X-Team": "ml",
                },
                "input": {"value": "$steps.a.output"},
            },
            "after": {"model": "inc", "input": "$steps.post.output.n"},
        },
        "output": {"after": "$steps.after.output", "echo": "$steps.post.output"},
    },
    "flaky": {
        "steps": {
            "post": {
                "kind": "http",
                "url": "$input.url",
                "retry": {"on": ["http_error"], "max_attempts": 3, "interval_s": 0.01},
            }
        },
        "output": "$steps.post.output",
    },
    "fan": {
        "steps": {
            "each": {
                "kind": "http",
                "url": "$input.url",
                "for_each": "$input.values",
                "input": {"value": "$item"},
                "max_concurrency": 2,
            }
        },
        "output": "$steps.each.output[*].n",
    },
    "strict": {
        "steps": {"post": {"kind": "http", "method": "GET", "url": "$input.url"}},
        "output": "$steps.post.output",
    },
}


@dataclass
class Receiver:
    """What the loopback server got; ``/echo`` answers ``{"n": value + 1, "auth": …}``,
    ``/fail/K/…`` 503 to its first K calls, then ``{"ok": true}``; ``/text`` plain text."""

    port: int = 0
    got: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
        with self.lock:
            self.got.append((method, path, headers, body))
            self.calls[path] += 1
            calls = self.calls[path]
        if path == "/echo":
            value = json.loads(body)["value"]
            return 200, "application/json", {"n": value + 1, "auth": headers.get("authorization")}
        if path.startswith("/fail/"):
            if calls <= int(path.split("/")[2]):
                return 503, "text/plain", "busy, try later"
            return 200, "application/json", {"ok": True}
        return 200, "text/plain", "plain words"


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, kind, value = state.answer(self.command, self.path, headers, body)
            data = value.encode() if isinstance(value, str) else json.dumps(value).encode()
            self.send_response(status)
            self.send_header("content-type", kind)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _any

        def log_message(self, *args: Any) -> None:
            pass

    http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = http.server_address[1]
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    yield state
    http.shutdown()
    http.server_close()


@pytest.fixture
def service(tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch) -> PredictionService:
    for name in list(os.environ):
        if name.startswith("FREIGHT_"):
            monkeypatch.delenv(name)
    (tmp_path / "freight.yaml").write_text(yaml.safe_dump({"pipelines": PIPELINES}))
    settings = Settings(project_dir=tmp_path, state_dir=tmp_path / "state")
    models = {name: spec_of(name) for name in MODELS}
    return PredictionService(
        settings,
        models,
        store,
        MemoryStorage(),
        signal=WorkSignal(),
        hub=CompletionHub(),
        pipelines=load_pipelines(tmp_path, models, settings),
    )


@pytest.fixture
async def caller(store: Store) -> AsyncIterator[HttpCaller]:
    """The agent's caller, its secret in its environment, private addresses allowed."""
    async with _caller(store, environ={"HTTP_STEP_TOKEN": SECRET}) as running:
        yield running


@contextlib.asynccontextmanager
async def _caller(
    store: Store, *, environ: dict[str, str], allow_private: bool = True
) -> AsyncIterator[HttpCaller]:
    """A running caller, drained at the end."""
    http = HttpCaller(
        store,
        MemoryStorage(),
        Persist(store, CompletionHub().publish, lambda: False),
        signal=WorkSignal(),
        worker_id="caller",
        lease_s=30,
        poll_s=0.05,
        allow_private=allow_private,
        environ=environ,
    )
    task = asyncio.create_task(http.run())
    try:
        yield http
    finally:
        await http.drain(1.0)
        await asyncio.wait_for(task, 5)


async def _work(store: Store) -> None:
    """The model steps queued now, run as models would."""
    for target, model in MODELS.items():
        for row in await store.claim(target, 8, worker_id="w", lease_s=30, now=time.time()):
            await store.complete([outcome(row, model, time.time())])


async def _ended(service: PredictionService, store: Store, run: Prediction) -> Prediction:
    """Run model steps until the run ended (its http steps are the caller's), on a deadline."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        await _work(store)
        current = await service.get(run.id)
        if current.status.terminal:
            return current
        await asyncio.sleep(0.02)
    raise AssertionError(f"run {run.id} did not end: {await service.steps(run.id)}")


def _step(rows: list[Prediction], name: str) -> Prediction:
    return next(r for r in rows if r.step == name and r.item_index is None)


async def test_an_http_step_sends_its_body_and_secret_and_its_output_feeds_the_next(
    service: PredictionService, store: Store, receiver: Receiver, caller: HttpCaller
) -> None:
    run = await start(service, "call", {"x": 3, "url": receiver.url("/echo")})
    done = await _ended(service, store, run)
    assert done.status == Status.SUCCEEDED, done
    output = orjson.loads(done.output_json or "")
    assert output == {"after": 8, "echo": {"n": 7, "auth": "Bearer [redacted]"}}
    method, path, headers, _ = next(g for g in receiver.got if g[3] == b'{"value":6}')
    assert (method, path, headers["authorization"]) == ("POST", "/echo", f"Bearer {SECRET}")
    assert (headers["x-team"], headers["content-type"]) == ("ml", "application/json")
    rows = await service.steps(run.id)
    post = _step(rows, "post")
    assert (post.kind, post.target, post.status) == ("http", TARGET, Status.SUCCEEDED)
    assert orjson.loads(post.input_json or "") == {"value": 6}
    assert orjson.loads(post.definition or "")["url"] == receiver.url("/echo")
    every = [dataclasses.astuple(r) for r in [done, *rows]]
    assert SECRET not in repr(every)  # in no field of any row of the run


async def test_a_failed_call_fails_the_step_http_error_and_retry_runs_it_again(
    service: PredictionService, store: Store, receiver: Receiver, caller: HttpCaller
) -> None:
    flaky = await start(service, "flaky", {"url": receiver.url(f"/fail/2/{time.time()}")})
    done = await _ended(service, store, flaky)
    assert (done.status, orjson.loads(done.output_json or "")) == (Status.SUCCEEDED, {"ok": True})
    post = _step(await service.steps(flaky.id), "post")
    assert post.attempts == 3
    assert [a.why for a in attempts_of(post.attempt_history)] == ["http_error", "http_error"]

    strict = await start(service, "strict", {"url": receiver.url(f"/fail/9/{time.time()}")})
    failed = await _ended(service, store, strict)
    assert (failed.status, failed.error_code) == (Status.FAILED, "http_error")
    post = _step(await service.steps(strict.id), "post")
    assert (post.error_code, post.error_message) == ("http_error", "127.0.0.1 answered HTTP 503")
    detail = orjson.loads(post.error_detail or "")
    assert detail == {"status": 503, "response": "busy, try later"}


async def test_a_for_each_http_step_calls_once_per_element_in_order(
    service: PredictionService, store: Store, receiver: Receiver, caller: HttpCaller
) -> None:
    run = await start(service, "fan", {"url": receiver.url("/echo"), "values": [1, 2, 3, 4]})
    done = await _ended(service, store, run)
    assert done.status == Status.SUCCEEDED, [
        (r.step, r.item_index, r.status, r.error_code, r.error_message, r.input_json, r.definition)
        for r in [done, *await service.steps(run.id)]
    ]
    assert orjson.loads(done.output_json or "") == [2, 3, 4, 5]
    elements = [r for r in await service.steps(run.id) if r.item_index is not None]
    assert {(r.kind, r.target) for r in elements} == {("http", TARGET)}


async def test_a_text_answer_is_a_string_output(
    service: PredictionService, store: Store, receiver: Receiver, caller: HttpCaller
) -> None:
    run = await start(service, "strict", {"url": receiver.url("/text")})
    done = await _ended(service, store, run)
    assert (done.status, orjson.loads(done.output_json or "")) == (Status.SUCCEEDED, "plain words")


async def test_private_addresses_are_refused_unless_allowed_and_metadata_always(
    service: PredictionService, store: Store, receiver: Receiver
) -> None:
    async with _caller(store, environ={}, allow_private=False):
        run = await start(service, "strict", {"url": receiver.url("/text")})
        done = await _ended(service, store, run)
    post = _step(await service.steps(run.id), "post")
    assert (done.error_code, post.error_code) == ("url_refused", "url_refused")
    assert post.error_message == "the http step host 127.0.0.1 is a loopback address"
    async with _caller(store, environ={}, allow_private=True):
        run = await start(service, "strict", {"url": "http://169.254.169.254/latest/meta-data"})
        done = await _ended(service, store, run)
    post = _step(await service.steps(run.id), "post")
    assert post.error_code == "url_refused"
    assert post.error_message == "the http step host 169.254.169.254 is a cloud metadata address"


async def test_a_header_whose_variable_is_not_set_fails_the_step_naming_it(
    service: PredictionService, store: Store, receiver: Receiver
) -> None:
    async with _caller(store, environ={}):
        run = await start(service, "call", {"x": 1, "url": receiver.url("/echo")})
        done = await _ended(service, store, run)
    post = _step(await service.steps(run.id), "post")
    assert (done.error_code, post.error_code) == ("missing_secret", "missing_secret")
    assert "HTTP_STEP_TOKEN" in (post.error_message or "")


async def test_a_call_whose_caller_died_is_requeued_by_the_lease_sweep_and_made_again(
    service: PredictionService, store: Store, receiver: Receiver
) -> None:
    """A caller that claimed the row and died (its lease lapses): the reaper requeues
    the row, the attempt in its history, and a live caller makes the call."""
    run = await start(service, "strict", {"url": receiver.url("/text")})
    (held,) = await store.claim(TARGET, 8, worker_id="dead", lease_s=30, now=time.time())
    result = await store.reap(now=time.time() + 31, backoff_s=0)
    assert result.requeued == [held.id]
    async with _caller(store, environ={}):
        done = await _ended(service, store, run)
    assert (done.status, orjson.loads(done.output_json or "")) == (Status.SUCCEEDED, "plain words")
    post = _step(await service.steps(run.id), "post")
    assert post.attempts == 2
    assert [(a.worker, a.why) for a in attempts_of(post.attempt_history)] == [
        ("dead", "lease_expired")
    ]
