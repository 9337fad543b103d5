"""The operator console at /ui, in a real browser (chromium driven by Playwright), on
both shapes: ``freight serve`` on SQLite, and ``freight api`` + ``freight worker`` on
PostgreSQL + an S3 server. One server per shape for the whole module; each test has
its own browser context, and every request its pages made stayed on the host."""

from __future__ import annotations

import os
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest
from psycopg import sql

from tests.fixtures.browser import shoot
from tests.fixtures.postgres import _admin, _drop, pg_url
from tests.fixtures.s3 import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, MotoServer
from tests.fixtures.server import FAST, FREIGHT, Server, free_port, wait_until
from tests.integration.helpers import wait_done

PROJECT = Path(__file__).resolve().parent.parent / "console_project"
expect: Any = pytest.importorskip("playwright.sync_api").expect


@dataclass
class Console:
    shape: str
    api: Server
    tmp: Path
    admin: str  # tenant ops, admin scope
    acme: str  # tenant acme: predict, read, batch
    other: str  # tenant other: predict, read

    @property
    def url(self) -> str:
        return self.api.url

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, timeout=30, headers={"Authorization": f"Bearer {token}"}
        )

    def create(self, target: str, input: Any, token: str | None = None, **body: Any) -> str:
        with self.client(token or self.acme) as client:
            response = client.post(
                "/v1/predictions", json={"target": target, "input": input, **body}
            )
            assert response.status_code == 202, response.text
            created: str = response.json()["id"]
            return created


def _env(tmp: Path) -> dict[str, str]:
    return {
        **os.environ,
        **FAST,
        "FREIGHT_STATE_DIR": str(tmp / "state"),
        "FREIGHT_SECRET_KEY": "s" * 32,
        "FREIGHT_KEY_CACHE_S": "0.2",
        "FREIGHT_WEBHOOK_ALLOW_PRIVATE": "true",
        "FREIGHT_DELIVERY_BACKOFF_S": "0.05",
        "FREIGHT_DELIVERY_BACKOFF_MAX_S": "0.1",
        "FREIGHT_DELIVERY_MAX_AGE_S": "0.5",
    }


def _cluster_env(env: dict[str, str], request: pytest.FixtureRequest) -> Iterator[None]:
    template: str = request.getfixturevalue("_postgres_template")
    moto: MotoServer = request.getfixturevalue("moto_server")
    name = f"freight_console_{uuid.uuid4().hex[:8]}"
    with _admin() as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )
    bucket = f"freight-console-{uuid.uuid4().hex[:12]}"
    moto.client().create_bucket(Bucket=bucket)  # type: ignore[attr-defined]
    query = (
        f"endpoint={moto.endpoint}&region={REGION}&access_key_id={ACCESS_KEY_ID}"
        f"&secret_access_key={SECRET_ACCESS_KEY}"
    )
    env["FREIGHT_DATABASE_URL"] = pg_url(name)
    env["FREIGHT_STORAGE_URL"] = f"s3://{bucket}?{query}"
    try:
        yield
    finally:
        _drop(name)


@pytest.fixture(scope="module", params=["embedded", "cluster"])
def console(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Console]:
    """A server of each shape serving the console project, with three keys."""
    tmp = tmp_path_factory.mktemp(f"console-{request.param}")
    env = _env(tmp)
    cleanup = _cluster_env(env, request) if request.param == "cluster" else iter([None])
    next(cleanup)
    worker = None
    api = Server(env=env, cwd=tmp, project=PROJECT, command="serve")
    try:
        if request.param == "cluster":
            api.command = "api"
            worker = subprocess.Popen(
                [*FREIGHT, "worker", str(PROJECT)],
                env=env,
                cwd=tmp,
                stdout=(tmp / "worker.log").open("wb"),
                stderr=subprocess.STDOUT,
            )
        api.start()
        if worker is not None:
            wait_until(lambda: "freight: worker " in (tmp / "worker.log").read_text(), 60)
        yield _keys(request.param, api, tmp)
    finally:
        api.stop(kill=True)
        if worker is not None:
            worker.kill()
            worker.wait(30)
        next(cleanup, None)


def _keys(shape: str, api: Server, tmp: Path) -> Console:
    def make(client: httpx.Client, tenant: str, *scopes: str) -> str:
        response = client.post("/v1/keys", json={"tenant": tenant, "scopes": list(scopes)})
        assert response.status_code == 201, response.text
        token: str = response.json()["token"]
        return token

    with httpx.Client(base_url=api.url, timeout=30) as anonymous:  # loopback, no key yet
        admin = make(anonymous, "ops", "admin")
    with httpx.Client(
        base_url=api.url, timeout=30, headers={"Authorization": f"Bearer {admin}"}
    ) as ops:
        acme = make(ops, "acme", "predict", "read", "batch")
        other = make(ops, "other", "predict", "read")
    return Console(shape, api, tmp, admin, acme, other)


def sign_in(page: Any, console: Console, token: str, path: str = "/ui") -> None:
    page.goto(console.url + path)
    expect(page).to_have_url(f"{console.url}/ui/signin?next={quote(path)}")
    page.fill("input[name=key]", token)
    page.click("button[type=submit]")
    expect(page).to_have_url(console.url + path)


# -- sessions -------------------------------------------------------------------------


def test_a_page_without_a_session_goes_to_sign_in(page: Any, console: Console) -> None:
    """Every page redirects to sign-in without a session; a wrong key is refused there."""
    for path in ("/ui", "/ui/predictions", "/ui/deliveries", "/ui/batch", "/ui/usage"):
        page.goto(console.url + path)
        expect(page).to_have_url(f"{console.url}/ui/signin?next={quote(path)}")
    page.fill("input[name=key]", "frk_aaaaaaaaaaaa_" + "x" * 43)
    page.click("button[type=submit]")
    expect(page.locator("p.error")).to_contain_text("invalid_credentials")
    shoot(page, "signin") if console.shape == "embedded" else None


def test_sign_in_sets_an_http_only_strict_cookie_without_the_key(
    page: Any, console: Console
) -> None:
    """The session cookie is HttpOnly and SameSite=Strict, holds no key, and no page
    script or URL ever sees the key; the overview lists every model and pipeline, with
    the replicas of every worker on both shapes."""
    sign_in(page, console, console.acme)
    for name in ("echo", "boom", "gate", "big", "flow"):
        expect(page.locator(f"tr[data-target={name}]")).to_be_visible()
    (cookie,) = page.context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui"
    assert console.acme not in cookie["value"]
    assert page.evaluate("document.cookie") == ""
    assert console.acme not in page.content()
    # the replicas of whichever process runs them: the API of the cluster shape reads
    # its workers' census (a report every census_interval_s)
    replicas = page.locator("tr[data-target=echo] td.replicas")

    def echo_ready() -> bool:
        page.reload()
        return replicas.inner_text().strip().startswith("1 ·")

    wait_until(echo_ready, timeout_s=30, interval_s=0.5)
    if console.shape == "embedded":
        shoot(page, "overview")


def test_state_changes_need_the_csrf_token_and_the_origin(page: Any, console: Console) -> None:
    """A form posted without the session's CSRF token, or from another origin, is 403
    ``csrf_failed``; nothing is canceled."""
    held = console.create("big", {"n": 1})
    sign_in(page, console, console.acme)
    cancel = f"{console.url}/ui/predictions/{held}/cancel"
    token = page.locator("meta[name=csrf-token]").get_attribute("content")
    no_token = page.request.post(cancel, form={"csrf": "nope"}, headers={"Origin": console.url})
    assert no_token.status == 403 and "csrf_failed" in no_token.text()
    foreign = page.request.post(
        cancel, form={"csrf": token}, headers={"Origin": "https://evil.example"}
    )
    assert foreign.status == 403 and "csrf_failed" in foreign.text()
    with console.client(console.acme) as client:
        assert client.get(f"/v1/predictions/{held}").json()["status"] == "queued"


def test_a_revoked_key_ends_its_session(page: Any, console: Console) -> None:
    """Revoking the key sends its open session back to sign-in (within key_cache_s)."""
    with console.client(console.admin) as ops:
        made = ops.post("/v1/keys", json={"tenant": "acme", "scopes": ["read"]}).json()
    sign_in(page, console, made["token"])
    with console.client(console.admin) as ops:
        assert ops.post(f"/v1/keys/{made['id']}/revoke").status_code == 200

    def signed_out() -> bool:
        page.goto(console.url + "/ui/predictions")
        return "/ui/signin" in page.url

    wait_until(signed_out, timeout_s=30, interval_s=0.1)


# -- predictions ----------------------------------------------------------------------


def test_a_failed_prediction_shows_its_traceback_and_is_retried(
    page: Any, console: Console
) -> None:
    """Found by id: its timeline, the model's traceback, its input; Retry makes a new
    prediction of the same target and input."""
    failed = console.create("boom", {"why": "console"})
    with console.client(console.acme) as client:
        wait_done(client, failed)
    sign_in(page, console, console.acme, "/ui/predictions")
    page.fill("input[name=id]", failed)
    page.click("form.find button")
    expect(page.locator("#status")).to_have_text("failed")
    expect(page.locator("pre.traceback")).to_contain_text("ValueError: boom")
    expect(page.locator("ol.timeline")).to_contain_text("claimed and started")
    expect(page.locator("pre.preview").first).to_contain_text('"why": "console"')
    if console.shape == "embedded":
        shoot(page, "prediction")
    page.click("text=Retry")
    expect(page.locator("p.notice")).to_contain_text(f"retry of {failed}")
    assert failed not in urlsplit(page.url).path
    expect(page.locator("pre.preview").first).to_contain_text('"why": "console"')


def test_cancel_a_queued_prediction(page: Any, console: Console) -> None:
    """A prediction no node can run stays queued; Cancel cancels it."""
    held = console.create("big", {"n": 2})
    sign_in(page, console, console.acme, f"/ui/predictions/{held}")
    expect(page.locator("#status")).to_have_text("queued")
    page.click("button.danger")
    expect(page.locator("#status")).to_have_text("canceled")
    page.goto(console.url + "/ui/predictions?status=canceled&target=big")
    expect(page.locator(f"tr[data-id='{held}']")).to_be_visible()
    if console.shape == "embedded":
        shoot(page, "predictions")


def test_a_canceled_run_is_redriven_from_its_page(page: Any, console: Console) -> None:
    """A run canceled while its first step ran shows Redrive; redriven, it is counted
    on its page and runs to the end once its gates are open."""
    first, second = (
        console.tmp / f"first-{uuid.uuid4().hex}",
        console.tmp / f"second-{uuid.uuid4().hex}",
    )
    run = console.create("flow", {"first": str(first), "second": str(second), "value": 3})
    with console.client(console.acme) as client:
        canceled = client.post(f"/v1/predictions/{run}/cancel")
        assert canceled.status_code == 200, canceled.text
    sign_in(page, console, console.acme, f"/ui/predictions/{run}")
    expect(page.locator("#status")).to_have_text("canceled")
    first.touch()
    second.touch()
    page.click("text=Redrive")
    expect(page.locator("p.notice")).to_contain_text("redriven (1 in all)")
    expect(page.locator("#redrives")).to_contain_text("redriven 1")
    expect(page.locator("#status")).to_have_text("succeeded")


def test_a_waiting_callback_step_is_approved_or_rejected_from_its_page(
    page: Any, console: Console
) -> None:
    """A callback step's page shows that it waits and the URLs that answer it; Approve
    answers with the JSON typed (an answer its schema refuses is shown, nothing
    changed), Reject fails the run with callback_failed, the reason its cause."""
    approved = console.create("review", {"doc": 1})
    with console.client(console.acme) as client:

        def ask_of(run: str) -> str | None:
            step = client.get(f"/v1/predictions/{run}").json()["steps"]["ask"]
            return step["prediction_id"] if step["callback"] else None

        ask = wait_until(lambda: ask_of(approved), 60)
    sign_in(page, console, console.acme, f"/ui/predictions/{ask}")
    expect(page.locator(".reason")).to_have_text("awaiting callback")
    expect(page.locator("#callback")).to_contain_text(f"{console.url}/v1/callbacks/")
    page.fill("#approve textarea", '{"nope": 1}')
    page.click("#approve button")
    expect(page.locator("h1 code")).to_have_text("answer_invalid")
    page.goto(f"{console.url}/ui/predictions/{ask}")
    page.fill("#approve textarea", '{"ok": true}')
    page.click("#approve button")  # (the page's own stream may reload it first)
    expect(page.locator("#status")).to_have_text("succeeded")
    page.goto(f"{console.url}/ui/predictions/{approved}")
    expect(page.locator("#status")).to_have_text("succeeded")

    rejected = console.create("review", {"doc": 2})
    with console.client(console.acme) as client:
        ask = wait_until(lambda: ask_of(rejected), 60)
    page.goto(f"{console.url}/ui/predictions/{ask}")
    page.fill("#reject input[name=cause]", "not good enough")
    page.click("#reject button")
    expect(page.locator("#status")).to_have_text("failed")
    with console.client(console.acme) as client:
        done = wait_done(client, rejected)
    assert done["error"]["code"] == "callback_failed"
    assert "not good enough" in done["error"]["message"]


def test_another_tenants_prediction_is_not_found(page: Any, console: Console) -> None:
    """A tenant's console never shows another tenant's prediction."""
    theirs = console.create("echo", {"secret": "acme"})
    sign_in(page, console, console.other, "/ui/predictions")
    expect(page.locator(f"tr[data-id='{theirs}']")).to_have_count(0)
    page.goto(f"{console.url}/ui/predictions/{theirs}")
    expect(page.locator("h1")).to_contain_text("404")
    expect(page.locator("h1 code")).to_have_text("prediction_not_found")
    assert "acme" not in page.locator("main").inner_text()


def test_a_runs_steps_change_state_live(page: Any, console: Console) -> None:
    """The run's DAG is drawn; its steps turn running, then succeeded, as they do (over
    SSE, without reloading the page), and the finished run shows its output."""
    first, second = (
        console.tmp / f"first-{uuid.uuid4().hex}",
        console.tmp / f"second-{uuid.uuid4().hex}",
    )
    run = console.create("flow", {"first": str(first), "second": str(second), "value": 7})
    sign_in(page, console, console.acme, f"/ui/predictions/{run}")
    expect(page.locator("g.node[data-step=start]")).to_have_class("node st-running")
    expect(page.locator("g.node[data-step=join]")).to_have_class("node st-pending")
    page.evaluate("window.loadedOnce = true")
    first.touch()
    expect(page.locator("g.node[data-step=left]")).to_have_class("node st-succeeded")
    expect(page.locator("g.node[data-step=join]")).to_have_class("node st-running")
    assert page.evaluate("window.loadedOnce === true")  # live: the same page, updated
    if console.shape == "embedded":
        shoot(page, "run")
    second.touch()
    expect(page.locator("#status")).to_have_text("succeeded")
    expect(page.locator("g.node[data-step=join]")).to_have_class("node st-succeeded")
    expect(page.locator("#output")).to_contain_text("7")


# -- deliveries, batch jobs, usage ----------------------------------------------------


class _Receiver(BaseHTTPRequestHandler):
    status = 500

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(type(self).status)
        self.end_headers()
        self.wfile.write(b"receiver says no")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, type[_Receiver]]]:
    handler = type("Receiver", (_Receiver,), {"status": 500})
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", handler
    server.shutdown()
    server.server_close()


def test_redeliver_a_dead_event(
    page: Any, console: Console, receiver: tuple[str, type[_Receiver]]
) -> None:
    """A notification its receiver refused until it died is listed across predictions,
    with its attempts (each with its latency and the receiver's answer); Redeliver sends
    it again, and it is delivered."""
    url, handler = receiver
    webhook = {"url": url, "events": ["completed"]}
    done = console.create("echo", {"hook": 1}, webhook=webhook)
    with console.client(console.acme) as client:

        def dead() -> bool:
            found = client.get(f"/v1/predictions/{done}/deliveries").json()["data"]
            return bool(found) and found[0]["status"] == "dead"

        wait_until(dead, timeout_s=60, interval_s=0.1)
        (first, *_) = client.get(f"/v1/predictions/{done}/deliveries").json()["data"][0]["tries"]
    # each attempt keeps how long it took and the start of the receiver's answer
    assert first["response"] == "receiver says no" and first["latency_ms"] > 0, first
    sign_in(page, console, console.acme, "/ui/deliveries")
    row = page.locator("tr.st-dead", has_text=done)
    expect(row).to_contain_text("HTTP 500")
    expect(row).to_contain_text("receiver says no")
    expect(row).to_contain_text(" ms")
    if console.shape == "embedded":
        shoot(page, "deliveries")
    handler.status = 200
    row.locator("button", has_text="Redeliver").click()
    expect(page.locator("p.notice")).to_contain_text("completed event sent again")
    with console.client(console.acme) as client:

        def delivered() -> bool:
            found = client.get(f"/v1/predictions/{done}/deliveries").json()["data"]
            return bool(found[0]["status"] == "delivered")

        wait_until(delivered, timeout_s=60, interval_s=0.1)
    page.goto(f"{console.url}/ui/predictions/{done}")
    expect(page.locator("table.deliveries")).to_contain_text("delivered")


def test_follow_a_batch_job_to_the_end(page: Any, console: Console) -> None:
    """A batch job's page follows it to the end: progress, records, its outputs."""
    with console.client(console.acme) as client:
        job = client.post(
            "/v1/batch-jobs", json={"target": "echo", "input": {"upload": ["rows.jsonl"]}}
        ).json()
        sign_in(page, console, console.acme, f"/ui/batch/{job['id']}")
        expect(page.locator("#status")).to_have_text("awaiting_input")
        rows = b"".join(b'{"i": %d}\n' % i for i in range(300))
        put = httpx.put(job["upload_urls"]["rows.jsonl"], content=rows, timeout=30)
        assert put.status_code == 200, put.text
    expect(page.locator("#status")).to_have_text("succeeded", timeout=60_000)
    expect(page.locator("#done")).to_contain_text("300")
    expect(page.locator("a.download", has_text="download")).to_have_count(1)
    if console.shape == "embedded":
        shoot(page, "batch")
    page.goto(console.url + "/ui/batch")
    expect(page.locator("main")).to_contain_text(job["id"])


def test_usage_and_the_admins_view(page: Any, console: Console) -> None:
    """Usage lists the tenant's own lines; an admin sees every tenant's."""
    done = console.create("echo", {"usage": 1})
    with console.client(console.acme) as client:
        wait_done(client, done)
    sign_in(page, console, console.acme, "/ui/usage")
    expect(page.locator("table.usage")).to_contain_text("acme")
    page.context.clear_cookies()
    sign_in(page, console, console.admin, "/ui/usage")
    expect(page.locator("table.usage")).to_contain_text("acme")
    expect(page.locator("input[name=tenant]")).to_be_visible()
    if console.shape == "embedded":
        shoot(page, "usage")
