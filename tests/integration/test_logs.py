"""Per-prediction logs end to end, on both shapes (``freight serve`` on SQLite; ``freight
api`` + ``freight worker`` on PostgreSQL and S3): the lines of a batch reach every
prediction of that batch and no other, the load's lines the first batch's, marked;
the bound holds; a line can be read while its prediction still runs; the purge takes
the logs with the prediction."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from freight.access import new_key
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
