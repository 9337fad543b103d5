"""Per-prediction logs end to end, on both shapes (``freight serve`` on SQLite; ``freight
api`` + ``freight worker`` on PostgreSQL and S3): the lines of a batch reach every
prediction of that batch and no other, the load's lines the first batch's, marked;
the bound holds; a line can be read while its prediction still runs, and is streamed
live as a ``log`` event of its event stream (resumed without losses nor repeats);
the purge takes the logs with the prediction."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

import freight
from freight.access import new_key
from freight.client import LogEvent
from freight.client._events import SseParser
from freight.logs import LogLine
from freight.store import logs as store_logs
from freight.store import open_store
from tests.fixtures.server import FREIGHT, Server, wait_until
from tests.integration.helpers import create, status_of, wait_done

PRINTER = json.dumps(["printing:Printer"])


def start(make_server: Callable[..., Server], shape: dict[str, str], **env: str) -> Server:
    """The API of the shape: ``serve`` embedded; ``api`` beside a ``worker`` in a cluster."""
    if shape["FREIGHT_SHAPE"] == "cluster":
        make_server(command="worker", FREIGHT_MODELS=PRINTER, **env)
        return make_server(command="api", FREIGHT_MODELS=PRINTER, **env)
    return make_server(FREIGHT_MODELS=PRINTER, **env)


def tenant_keys(server: Server, admin: str) -> dict[str, str]:
    """A key of tenant ``acme`` and one of tenant ``other``, both predict and read."""
    headers = {"Authorization": f"Bearer {admin}"}
    tokens = {}
    with httpx.Client(base_url=server.url, timeout=30, headers=headers) as client:
        for tenant in ("acme", "other"):
            made = client.post("/v1/keys", json={"tenant": tenant, "scopes": ["predict", "read"]})
            assert made.status_code == 201, made.text
            tokens[tenant] = made.json()["token"]
    return tokens


Event = tuple[str, str, dict[str, Any]]


def read_events(lines: Iterator[str], until: Callable[[Event], bool] | None = None) -> list[Event]:
    """The events of a stream's lines as ``(id, type, data)``, up to ``until`` (the rest
    left in ``lines``) or the end."""
    parser, found = SseParser(), []
    for line in lines:
        raw = parser.feed(line)
        if raw is not None:
            found.append((raw.id or "", raw.type, json.loads(raw.data)))
            if until is not None and until(found[-1]):
                break
    return found


def texts(client: httpx.Client, prediction_id: str, **params: Any) -> list[str]:
    response = client.get(f"/v1/predictions/{prediction_id}/logs", params=params)
    assert response.status_code == 200, response.text
    return [f"{line['phase']}:{line['stream']}:{line['text']}" for line in response.json()["data"]]


def test_each_prediction_gets_its_batchs_lines_and_none_of_another(
    make_server: Callable[..., Server], shape: dict[str, str], tmp_path: Path
) -> None:
    """The first batch (one prediction, held on a gate) gets the load's lines, marked
    ``load``; a burst queued meanwhile runs as one batch whose every prediction gets the
    lines printed for every input of that batch (stdout, stderr and logging), and none
    of the first batch's."""
    server = start(make_server, shape)
    with server.client() as client:
        first = create(client, "printer", {"tag": "a", "gate": str(tmp_path)})["id"]
        wait_until(lambda: status_of(client, first) == "running")
        burst = [create(client, "printer", {"tag": t})["id"] for t in ("b", "c")]
        (tmp_path / "open").touch()
        done = [wait_done(client, i) for i in [first, *burst]]
        assert [d["status"] for d in done] == ["succeeded"] * 3
        first_lines = texts(client, first)
        burst_lines = [texts(client, i) for i in burst]
    assert "load:stdout:loading the printer" in first_lines
    assert "load:log:printer loaded" in first_lines
    assert first_lines[-4:] == [
        "predict:stdout:batch of [a]",
        "predict:stdout:out a",
        "predict:stderr:err a",
        "predict:log:log a",
    ]
    assert burst_lines[0] == burst_lines[1]  # the one batch's lines, each prediction's
    assert burst_lines[0] == [
        "predict:stdout:batch of [b,c]",
        "predict:stdout:out b",
        "predict:stderr:err b",
        "predict:log:log b",
        "predict:stdout:out c",
        "predict:stderr:err c",
        "predict:log:log c",
    ]


def test_the_bound_keeps_the_first_bytes_and_one_marker(
    make_server: Callable[..., Server], shape: dict[str, str]
) -> None:
    """A prediction printing past ``max_log_bytes`` keeps the lines that fit, then one
    marker line saying how many bytes were dropped; ``after`` pages on; ``Accept:
    text/plain`` gives the text."""
    server = start(make_server, shape, FREIGHT_MAX_LOG_BYTES="2000")
    with server.client() as client:
        spammer = create(client, "printer", {"tag": "s", "spam": 50})["id"]
        assert wait_done(client, spammer)["status"] == "succeeded"
        body = client.get(f"/v1/predictions/{spammer}/logs").json()
        text = client.get(f"/v1/predictions/{spammer}/logs", headers={"Accept": "text/plain"})
        page = client.get(f"/v1/predictions/{spammer}/logs", params={"after": 2, "limit": 1})
    lines = body["data"]
    kept = sum(len(line["text"].encode()) for line in lines if line["dropped"] is None)
    assert kept <= 2000
    marker = lines[-1]
    assert marker["dropped"] > 0 and str(marker["dropped"]) in marker["text"]
    assert [line["seq"] for line in lines] == list(range(1, len(lines) + 1))
    assert body["next_after"] == lines[-1]["seq"]
    assert text.headers["content-type"].startswith("text/plain")
    assert text.text.splitlines() == [line["text"] for line in lines]
    assert [line["seq"] for line in page.json()["data"]] == [3]


def test_follow_sees_a_line_before_the_prediction_ends(
    make_server: Callable[..., Server], shape: dict[str, str], tmp_path: Path
) -> None:
    """``freight logs ID --follow`` prints a line while the prediction still runs (held
    on a gate), then the rest, and exits once it ended; another tenant's key reads the
    prediction's logs as an unknown id's (404)."""
    admin = new_key().token
    server = start(make_server, shape, FREIGHT_ADMIN_KEY=admin)
    headers = {"Authorization": f"Bearer {admin}"}
    with httpx.Client(base_url=server.url, timeout=30, headers=headers) as client:
        tokens = {}
        for tenant in ("acme", "other"):
            made = client.post("/v1/keys", json={"tenant": tenant, "scopes": ["predict", "read"]})
            assert made.status_code == 201, made.text
            tokens[tenant] = made.json()["token"]
    acme = {"Authorization": f"Bearer {tokens['acme']}"}
    other = {"Authorization": f"Bearer {tokens['other']}"}
    with httpx.Client(base_url=server.url, timeout=30, headers=acme) as client:
        gated = create(client, "printer", {"tag": "f", "gate": str(tmp_path)})["id"]
        printed = tmp_path / "followed.txt"
        env = {**server.env, "FREIGHT_URL": server.url, "FREIGHT_API_KEY": tokens["acme"]}
        with printed.open("wb") as sink:
            follower = subprocess.Popen(
                [*FREIGHT, "logs", gated, "--follow"], env=env, stdout=sink, stderr=sink
            )
        try:
            wait_until(lambda: "err f" in printed.read_text(errors="replace"))
            assert status_of(client, gated) == "running"
            with httpx.Client(base_url=server.url, timeout=30, headers=other) as stranger:
                hidden = stranger.get(f"/v1/predictions/{gated}/logs")
            assert hidden.status_code == 404
            assert hidden.json()["error"]["code"] == "prediction_not_found"
            (tmp_path / "open").touch()
            assert follower.wait(60) == 0, printed.read_text()
        finally:
            follower.kill()
        assert wait_done(client, gated)["status"] == "succeeded"
    shown = printed.read_text().splitlines()
    assert shown[-4:] == ["batch of [f]", "out f", "err f", "log f"]


def test_the_purge_takes_the_logs_with_the_prediction(
    make_server: Callable[..., Server], shape: dict[str, str]
) -> None:
    """Once retention deletes an ended prediction, its log lines are gone from the store."""
    server = start(
        make_server, shape, FREIGHT_RETENTION_S="0.5", FREIGHT_RETENTION_INTERVAL_S="0.2"
    )
    with server.client() as client:
        done = create(client, "printer", {"tag": "p"})["id"]
        wait_until(lambda: client.get(f"/v1/predictions/{done}").status_code == 404)
    assert asyncio.run(stored_lines(shape, done)) == []


def test_the_event_stream_carries_each_line_live_and_resumes_after_one(
    make_server: Callable[..., Server], shape: dict[str, str], tmp_path: Path
) -> None:
    """A held prediction's stream shows a ``log`` event while it still runs (the printer
    waits on a gate the test opens), then every line once, in seq order, before the
    ``succeeded`` event; a new connection with the Last-Event-ID of the first line gets
    the later lines and the end, none twice; without ``?logs=true`` the stream has the rungs alone
    with their old ids; the SDK yields the lines as LogEvents; another tenant's key
    cannot open the stream (404, as an unknown id)."""
    admin = new_key().token
    server = start(make_server, shape, FREIGHT_ADMIN_KEY=admin)
    tokens = tenant_keys(server, admin)
    acme = {"Authorization": f"Bearer {tokens['acme']}"}
    with httpx.Client(base_url=server.url, timeout=30, headers=acme) as client:
        gated = create(client, "printer", {"tag": "g", "gate": str(tmp_path)})["id"]
        path = f"/v1/predictions/{gated}/events"
        with client.stream("GET", path, params={"logs": "true"}) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            live = read_events(lines, until=lambda e: e[1] == "log")
            assert status_of(client, gated) == "running"  # the line came while it ran
            (tmp_path / "open").touch()
            live += read_events(lines)
        logged = texts(client, gated)
        first = next(e for e in live if e[1] == "log")
        resume = {"Last-Event-ID": first[0]}
        with client.stream("GET", path, params={"logs": "true"}, headers=resume) as response:
            resumed = read_events(response.iter_lines())
        plain = client.get(path).text  # lines only when asked for
        other = {"Authorization": f"Bearer {tokens['other']}"}
        with httpx.Client(base_url=server.url, timeout=30, headers=other) as stranger:
            hidden = stranger.get(path, headers={"Last-Event-ID": first[0]})
    kinds = [kind for _, kind, _ in live]
    assert kinds[:2] == ["queued", "running"] and kinds[-1] == "succeeded"
    assert set(kinds[2:-1]) == {"log"}
    shown = [f"{d['phase']}:{d['stream']}:{d['text']}" for _, k, d in live if k == "log"]
    assert shown == logged and "predict:stdout:out g" in shown
    seqs = [d["seq"] for _, k, d in live if k == "log"]
    assert seqs == list(range(1, len(logged) + 1))
    assert [i for i, _, _ in live] == ["1", "2", *(f"2-{n}" for n in seqs), f"3-{seqs[-1]}"]
    assert [(i, k) for i, k, _ in resumed] == [
        *((f"2-{n}", "log") for n in seqs[1:]),
        (f"3-{seqs[-1]}", "succeeded"),
    ]
    assert [(i, k) for i, k, _ in read_events(iter(plain.splitlines()))] == [
        ("1", "queued"),
        ("2", "running"),
        ("3", "succeeded"),
    ]
    assert hidden.status_code == 404
    assert hidden.json()["error"]["code"] == "prediction_not_found"
    with freight.Client(server.url, api_key=tokens["acme"]) as sdk:
        events = list(sdk.events(gated, logs=True))
    assert [e.line.text for e in events if isinstance(e, LogEvent)] == [
        line.split(":", 2)[2] for line in logged
    ]
    assert events[-1].final and events[-1].cursor == f"3-{seqs[-1]}"


async def stored_lines(env: dict[str, str], prediction_id: str) -> list[LogLine]:
    url = env.get("FREIGHT_DATABASE_URL") or (
        f"sqlite:///{(Path(env['FREIGHT_STATE_DIR']) / 'freight.db').resolve()}"
    )
    store = open_store(url)
    await store.open()
    try:
        return await store.execute(lambda: store_logs.read(prediction_id, 0, 100), write=False)
    finally:
        await store.close()
