"""Streamed outputs end to end, on both shapes (``freight serve`` on SQLite; ``freight
api`` + ``freight worker`` on PostgreSQL and S3), with the generator models of
``tests/project/streaming.py``: the chunks of a queued prediction as ``chunk`` events,
in order and each once across a reconnect with ``Last-Event-ID``; a model that raises
mid-stream ends the stream with its error and fails the prediction; a cancel
mid-stream stops it; the real-time route streams as server-sent events and as bytes,
and waits for a model at zero replicas; the SDK (sync and async) and ``freight predict
--stream``. Held streams wait on a gate the test opens: what is seen before it opens is
seen because the model has not gone further, never because of timing."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import freight
from freight.client import ChunkEvent, FreightClientError
from freight.client._events import SseParser
from tests.fixtures.server import FREIGHT, Server, wait_until
from tests.integration.helpers import create, status_of, wait_done
from tests.project.streaming import fibonacci, told

MODELS = json.dumps(
    ["streaming:Teller", "streaming:Counter", "streaming:Sleeper", "streaming:Spiller"]
)
Event = tuple[str, str, dict[str, Any]]
OCTET = "application/octet-stream"


def start(make_server: Callable[..., Server], shape: dict[str, str]) -> Server:
    """The API of the shape: ``serve`` embedded; ``api`` beside a ``worker`` in a cluster."""
    if shape["FREIGHT_SHAPE"] == "cluster":
        make_server(command="worker", FREIGHT_MODELS=MODELS)
        return make_server(command="api", FREIGHT_MODELS=MODELS)
    return make_server(FREIGHT_MODELS=MODELS)


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


def chunks_of(events: list[Event]) -> list[dict[str, Any]]:
    return [data for _, kind, data in events if kind == "chunk"]


def nth_chunk(n: int) -> Callable[[Event], bool]:
    return lambda event: event[1] == "chunk" and event[2]["seq"] == n


def test_chunks_arrive_in_order_and_once_across_a_reconnect(
    make_server: Callable[..., Server], shape: dict[str, str], tmp_path: Path
) -> None:
    """A queued prediction held after its third chunk: its stream (``?chunks=true``)
    shows chunks 1-3 while it runs; a second connection with the Last-Event-ID of chunk
    2 gets chunk 3 and every later one, then ``succeeded``, none twice; the chunks'
    data end to end are the prediction's output; ``GET /chunks`` reads them back; a
    stream that did not ask for chunks has the rungs alone, with their old ids."""
    server = start(make_server, shape)
    n = 12
    with server.client() as client:
        held = create(client, "teller", {"n": n, "gate": str(tmp_path), "hold": 3})["id"]
        path = f"/v1/predictions/{held}/events"
        with client.stream("GET", path, params={"chunks": "true"}) as response:
            assert response.status_code == 200
            first = read_events(response.iter_lines(), until=nth_chunk(3))
        assert status_of(client, held) == "running"  # the chunks came while it ran
        second_id = next(i for i, kind, data in first if kind == "chunk" and data["seq"] == 2)
        resume = {"Last-Event-ID": second_id}
        with client.stream("GET", path, params={"chunks": "true"}, headers=resume) as response:
            lines = response.iter_lines()
            resumed = read_events(lines, until=nth_chunk(3))
            (tmp_path / "open").touch()
            resumed += read_events(lines)
        done = wait_done(client, held)
        page = client.get(f"/v1/predictions/{held}/chunks", params={"after": 10}).json()
        plain = client.get(path).text
    assert [kind for _, kind, _ in first] == ["queued", "running", "chunk", "chunk", "chunk"]
    assert [c["seq"] for c in chunks_of(resumed)] == list(range(3, n + 1))
    assert resumed[-1][1] == "succeeded" and resumed[-1][0] == f"3-0-{n}"
    seen = chunks_of(first)[:2] + chunks_of(resumed)
    assert [c["seq"] for c in seen] == list(range(1, n + 1))
    assert "".join(c["data"] for c in seen) == told(n) == done["output"]
    assert {(c["kind"], c["attempt"], c["prediction_id"]) for c in seen} == {("text", 1, held)}
    assert [i for i, kind, _ in resumed if kind == "chunk"] == [f"2-0-{k}" for k in range(3, n + 1)]
    assert [c["data"] for c in page["data"]] == [f"{x} " for x in fibonacci(n)[10:]]
    assert page["next_after"] == n
    assert [(i, k) for i, k, _ in read_events(iter(plain.splitlines()))] == [
        ("1", "queued"),
        ("2", "running"),
        ("3", "succeeded"),
    ]


def test_a_raise_mid_stream_ends_it_with_the_error_and_a_cancel_stops_it(
    make_server: Callable[..., Server], shape: dict[str, str], tmp_path: Path
) -> None:
    """A model raising before its fifth chunk: the stream shows the four chunks, then
    ``failed`` with the model's error; the prediction failed ``model_error``, its
    chunks kept. The real-time route: its bytes stop after those chunks, the transfer
    cut short; a failure before the first chunk is a 424 with the error. A held
    prediction canceled after its second chunk: its stream ends ``canceled`` with no
    chunk after the second, and the model streams the next prediction whole."""
    server = start(make_server, shape)
    with server.client() as client:
        failing = create(client, "teller", {"n": 9, "fail_at": 4})["id"]
        path = f"/v1/predictions/{failing}/events"
        with client.stream("GET", path, params={"chunks": "true"}) as response:
            failed = read_events(response.iter_lines())
        body = {"n": 9, "fail_at": 4}
        text = {"Accept": "text/plain"}
        cut = bytearray()
        predict = client.stream("POST", "/v1/models/teller/predict", json=body, headers=text)
        with pytest.raises(httpx.RemoteProtocolError), predict as r:
            assert r.status_code == 200
            for piece in r.iter_bytes():
                cut += piece
        early = client.post("/v1/models/teller/predict", json={"n": 3, "fail_at": 0}, headers=text)

        held = create(client, "teller", {"n": 9, "gate": str(tmp_path), "hold": 2})["id"]
        path = f"/v1/predictions/{held}/events"
        with client.stream("GET", path, params={"chunks": "true"}) as response:
            lines = response.iter_lines()
            before = read_events(lines, until=nth_chunk(2))
            assert client.post(f"/v1/predictions/{held}/cancel").status_code == 200
            after = read_events(lines)
        (tmp_path / "open").touch()  # nothing waits on it: the runner was killed
        whole = client.post("/v1/models/teller/predict", json={"n": 6}, headers=text)
        stored = client.get(f"/v1/predictions/{held}/chunks").json()["data"]
    assert [kind for _, kind, _ in failed] == ["queued", "running", *["chunk"] * 4, "failed"]
    assert "".join(c["data"] for c in chunks_of(failed)) == told(4)
    error = failed[-1][2]["error"]
    assert error["code"] == "model_error" and "told 4 words" in error["message"]
    assert bytes(cut) == told(4).encode()
    assert early.status_code == 424 and early.json()["error"]["code"] == "model_error"
    assert [c["seq"] for c in chunks_of(before)] == [1, 2]
    assert [kind for _, kind, _ in after] == ["canceled"]
    assert [c["seq"] for c in stored] == [1, 2]
    assert whole.status_code == 200 and whole.text == told(6)


def test_the_real_time_route_streams_and_waits_for_a_cold_model(
    make_server: Callable[..., Server], shape: dict[str, str], tmp_path: Path
) -> None:
    """``Accept: text/event-stream``: the prediction's events with its chunks, resumable
    on its event stream by their ids; a model at zero replicas (``sleeper``) is waited
    for, its stream whole; bytes stream back as bytes; the SDK's ``stream`` (sync and
    async) yields each chunk as the model yielded it (text, JSON, bytes) and raises the
    error of a failure after the chunks before it; ``freight predict --stream`` prints
    them."""
    server = start(make_server, shape)
    sse = {"Accept": "text/event-stream"}
    with server.client(timeout_s=120) as client:
        with client.stream("POST", "/v1/models/sleeper/predict", json={"n": 7}, headers=sse) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            cold = read_events(r.iter_lines())
        named = r.headers["x-freight-prediction-id"]
        replay = client.get(
            f"/v1/predictions/{named}/events",
            params={"chunks": "true"},
            headers={"Last-Event-ID": cold[3][0]},
        ).text
        spilled = client.post(
            "/v1/models/spiller/predict",
            content=b"0123456789",
            headers={"Content-Type": "application/octet-stream", "Accept": OCTET},
        )
        info = client.get("/v1/models/counter").json()
    assert cold[0][1] == "queued" and cold[-1][1] == "succeeded"
    assert "".join(c["data"] for c in chunks_of(cold)) == told(7) == cold[-1][2]["output"]
    assert [e[0] for e in read_events(iter(replay.splitlines()))] == [e[0] for e in cold[4:]]
    assert spilled.status_code == 200 and spilled.content == b"0123456789"
    assert (info["streams"], info["stream_output"]) == (True, "list")

    with freight.Client(server.url) as sdk:
        words = list(sdk.stream("teller", {"n": 8}))
        squares = list(sdk.stream("counter", {"n": 3}))
        pieces = list(sdk.stream("spiller", data=b"abcdefghij"))
        got: list[str] = []
        with pytest.raises(FreightClientError) as raised:
            for word in sdk.stream("teller", {"n": 8, "fail_at": 3}):
                got.append(word)
        held = sdk.predict("teller", {"n": 4, "gate": str(tmp_path), "hold": 1}).id
        wait_until(lambda: sdk.get(held).status == "running")
        (tmp_path / "open").touch()
        followed = [e for e in sdk.events(held, chunks=True) if isinstance(e, ChunkEvent)]
    assert words == [f"{x} " for x in fibonacci(8)]
    assert squares == [{"i": i, "square": i * i} for i in range(3)]
    assert pieces == [b"abcd", b"efgh", b"ij"]
    assert got == [f"{x} " for x in fibonacci(3)]
    assert (raised.value.status, raised.value.code) == (424, "model_error")
    assert [e.chunk.value for e in followed] == [f"{x} " for x in fibonacci(4)]

    async def stream_async() -> list[Any]:
        async with freight.AsyncClient(server.url) as sdk:
            return [chunk async for chunk in sdk.stream("teller", {"n": 5})]

    assert asyncio.run(stream_async()) == [f"{x} " for x in fibonacci(5)]
    env = {**server.env, "FREIGHT_URL": server.url}
    printed = subprocess.run(
        [*FREIGHT, "predict", "teller", "-i", '{"n": 9}', "--stream"],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.decode() == told(9)
    failing = subprocess.run(
        [*FREIGHT, "predict", "teller", "-i", '{"n": 9, "fail_at": 2}', "--stream"],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert failing.returncode != 0
    assert failing.stdout.decode() == told(2)
    assert b"model_error" in failing.stderr
