"""``client.stream`` and ``events(chunks=True)`` against a scripted API: the chunks
as the model yielded them (text, JSON, bytes), a dropped real-time stream resumed on
the prediction's event stream after the last id as it came, a failure raised after
the chunks before it, a stream that ends before naming its prediction given up."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from freight.client import AsyncClient, ChunkEvent, Client, FreightClientError, _events
from tests.unit.fake_api import Api

PREDICT = "/v1/models/teller/predict"
EVENTS = "/v1/predictions/p1/events"


def prediction(status: str, **fields: Any) -> dict[str, Any]:
    return {"id": "p1", "target": "teller", "kind": "model", "status": status, **fields}


def chunk(seq: int, kind: str, data: Any) -> dict[str, Any]:
    return {"prediction_id": "p1", "seq": seq, "at": 1.0, "attempt": 1, "kind": kind, "data": data}


def stream(*events: tuple[str, str, dict[str, Any]]) -> httpx.Response:
    text = "".join(f"event: {k}\ndata: {json.dumps(d)}\nid: {i}\n\n" for i, k, d in events)
    return httpx.Response(200, headers={"Content-Type": "text/event-stream"}, content=text)


FIRST = [
    ("1", "queued", prediction("queued")),
    ("2", "running", prediction("running")),
    ("2-0-1", "chunk", chunk(1, "text", "one ")),
]
REST = [
    ("2-0-2", "chunk", chunk(2, "json", {"n": 2})),
    ("2-0-3", "chunk", chunk(3, "bytes", base64.b64encode(b"\x00\x01").decode())),
    ("3-0-3", "succeeded", prediction("succeeded")),
]


@pytest.fixture
def api() -> Api:
    return Api()


@pytest.fixture
def client(api: Api) -> Iterator[Client]:
    with Client("http://freight.test", transport=httpx.MockTransport(api)) as c:
        yield c


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_events, "RECONNECT_PAUSE_S", 0.0)


def test_a_dropped_stream_resumes_on_the_event_stream(api: Api, client: Client) -> None:
    """The real-time POST streams the first chunk, then drops; the follower resumes on
    ``/events?chunks=true`` after ``2-0-1``; the chunks come as the model yielded them."""
    api.on("POST", PREDICT, stream(*FIRST))
    api.on("GET", EVENTS, stream(*REST))
    assert list(client.stream("teller", {"n": 3})) == ["one ", {"n": 2}, b"\x00\x01"]
    posted, resumed = api.requests
    assert posted.headers["Accept"] == "text/event-stream"
    assert json.loads(posted.content) == {"n": 3}
    assert resumed.headers["Last-Event-ID"] == "2-0-1"
    assert resumed.url.params["chunks"] == "true"


def test_bytes_go_up_with_their_content_type(api: Api, client: Client) -> None:
    api.on("POST", PREDICT, stream(*FIRST, *REST))
    assert len(list(client.stream("teller", data=b"raw", content_type="audio/wav"))) == 3
    assert api.requests[0].content == b"raw"
    assert api.requests[0].headers["Content-Type"] == "audio/wav"


def test_a_failure_is_raised_after_the_chunks_before_it(api: Api, client: Client) -> None:
    error = {"code": "model_error", "message": "ValueError: no", "detail": {}}
    api.on("POST", PREDICT, stream(*FIRST, ("3-0-1", "failed", prediction("failed", error=error))))
    got: list[Any] = []
    with pytest.raises(FreightClientError) as raised:
        for value in client.stream("teller", {}):
            got.append(value)
    assert got == ["one "]
    assert (raised.value.status, raised.value.code) == (424, "model_error")


def test_a_stream_that_names_no_prediction_is_given_up(api: Api, client: Client) -> None:
    """Dropped before its first event, a real-time stream cannot be resumed (nor sent
    again: it may have created its prediction)."""
    api.on("POST", PREDICT, stream())
    with pytest.raises(FreightClientError) as raised:
        list(client.stream("teller", {}))
    assert raised.value.code == "stream_ended"
    assert [r.method for r in api.requests] == ["POST"]


def test_events_with_chunks_yields_chunk_events(api: Api, client: Client) -> None:
    api.on("GET", EVENTS, stream(*FIRST, *REST))
    chunks = [e for e in client.events("p1", chunks=True) if isinstance(e, ChunkEvent)]
    assert [(e.cursor, e.chunk.value) for e in chunks] == [
        ("2-0-1", "one "),
        ("2-0-2", {"n": 2}),
        ("2-0-3", b"\x00\x01"),
    ]
    api.requests.clear()
    plain = [e.type for e in client.events("p1")]  # not asked for: skipped
    assert plain == ["queued", "running", "succeeded"]
    assert "chunks" not in api.requests[0].url.params


async def test_the_async_client_streams_too(api: Api) -> None:
    api.on("POST", PREDICT, stream(*FIRST))
    api.on("GET", EVENTS, stream(*REST))
    async with AsyncClient("http://freight.test", transport=httpx.MockTransport(api)) as client:
        got = [value async for value in client.stream("teller", {"n": 3})]
    assert got == ["one ", {"n": 2}, b"\x00\x01"]
