"""The clients' event streams, deliveries and webhook options against a scripted API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from freight.client import AsyncClient, Client, FreightClientError, StreamEvent, _events
from freight.client._events import SseParser
from tests.unit.fake_api import Api, error

EVENTS = "/v1/predictions/p1/events"


def prediction(status: str = "queued", **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"id": "p1", "target": "echo", "kind": "model", "status": status}
    return body | fields


def sse(*events: tuple[int, str, dict[str, Any]], ping: bool = True) -> bytes:
    """An event-stream body: a keep-alive comment, then each event."""
    text = ": ping\n\n" if ping else ""
    for event_id, kind, data in events:
        text += f"event: {kind}\ndata: {json.dumps(data)}\nid: {event_id}\n\n"
    return text.encode()


def stream(*events: tuple[int, str, dict[str, Any]], ping: bool = True) -> httpx.Response:
    headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    return httpx.Response(200, headers=headers, content=sse(*events, ping=ping))


LIFE = [
    (1, "queued", prediction("queued")),
    (2, "running", prediction("running")),
    (3, "succeeded", prediction("succeeded", output={"y": 1})),
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
    """Reconnects in a row pause; here they need not."""
    monkeypatch.setattr(_events, "RECONNECT_PAUSE_S", 0.0)


def test_the_parser_follows_the_event_stream_format() -> None:
    """Comments are skipped, data lines join with newlines, CRLF and colon-without-space
    are read, the id persists, an event without data is not dispatched."""
    parser = SseParser()
    lines = [": ping", "", "event:a", "data: one\r\n", "data:two", "id: 7", "", "event: b", ""]
    got = [event for line in lines if (event := parser.feed(line)) is not None]
    assert [(e.id, e.type, e.data) for e in got] == [("7", "a", "one\ntwo")]
    later = [parser.feed(line) for line in ["data: x", "\n"]]
    assert later[-1] is not None and (later[-1].id, later[-1].type) == ("7", "message")


def test_events_yield_each_event_and_stop_at_the_final_one(api: Api, client: Client) -> None:
    """events() yields StreamEvents with int ids and prediction objects, ending at the end."""
    api.on("GET", EVENTS, stream(*LIFE))
    got = list(client.events("p1"))
    assert [(e.id, e.type, e.prediction.status) for e in got] == [
        (1, "queued", "queued"),
        (2, "running", "running"),
        (3, "succeeded", "succeeded"),
    ]
    assert isinstance(got[0], StreamEvent) and got[-1].final and not got[1].final
    assert api.requests[0].headers["Accept"] == "text/event-stream"
    assert "Last-Event-ID" not in api.requests[0].headers


def test_a_stream_that_ends_early_is_resumed_after_the_last_id(api: Api, client: Client) -> None:
    """The server closing before the final event means reconnect with Last-Event-ID."""
    api.on("GET", EVENTS, stream(*LIFE[:2]), stream(LIFE[2]))
    assert [e.id for e in client.events("p1")] == [1, 2, 3]
    assert [r.headers.get("Last-Event-ID") for r in api.requests] == [None, "2"]


def test_a_dropped_connection_is_resumed(api: Api, client: Client) -> None:
    """No answer at all (connection refused) is retried, resuming where it was."""

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    api.on("GET", EVENTS, stream(LIFE[0]), refuse, stream(*LIFE[1:]))
    assert [e.type for e in client.events("p1")] == ["queued", "running", "succeeded"]
    assert [r.headers.get("Last-Event-ID") for r in api.requests] == [None, "1", "1"]


def test_after_resumes_from_the_first_connection(api: Api, client: Client) -> None:
    """events(after=N) asks for what came after event N."""
    api.on("GET", EVENTS, stream(LIFE[2]))
    assert [e.id for e in client.events("p1", after=2)] == [3]
    assert api.requests[0].headers["Last-Event-ID"] == "2"


def test_a_stream_that_keeps_ending_empty_is_given_up(api: Api, client: Client) -> None:
    """Connections that bring nothing, three in a row, raise stream_ended."""
    api.on("GET", EVENTS, stream(ping=False))
    with pytest.raises(FreightClientError) as caught:
        list(client.events("p1"))
    assert caught.value.code == "stream_ended"
    assert len(api.requests) == 3


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        (error(404, "prediction_not_found"), "prediction_not_found"),
        (httpx.Response(200, json=prediction()), "invalid_response"),
        (
            httpx.Response(
                200, headers={"Content-Type": "text/event-stream"}, content=b"id: x\ndata: {}\n\n"
            ),
            "invalid_response",
        ),
    ],
    ids=["unknown", "not-a-stream", "bad-event"],
)
def test_errors_that_a_reconnect_cannot_fix_are_raised(
    api: Api, client: Client, answer: httpx.Response, code: str
) -> None:
    """A 4xx, or an answer that is not a freight stream, raises at once."""
    api.on("GET", EVENTS, answer)
    with pytest.raises(FreightClientError) as caught:
        list(client.events("p1"))
    assert caught.value.code == code
    assert len(api.requests) == 1


def test_a_reconnect_waits_out_the_servers_retry_after() -> None:
    """A server refusing a stream (503 too_many_streams, Retry-After: 2) is asked again
    no sooner than it said, and never past the caller's deadline."""
    busy = FreightClientError(503, "too_many_streams", "full", retry_after_s=2.0)
    follower = _events.Follower("p1", None, None)
    follower.call()
    assert follower.ended(busy) == 2.0
    later = FreightClientError(503, "too_many_streams", "full", retry_after_s=600.0)
    hurried = _events.Follower("p1", None, 30.0)
    hurried.call()
    assert 0.0 < hurried.ended(later) <= 30.0


def test_a_deadline_passed_mid_stream_raises_timeout(api: Api, client: Client) -> None:
    """Past ``timeout`` the follower raises TimeoutError, however the stream goes on."""
    api.on("GET", EVENTS, stream(*LIFE[:2]))
    with pytest.raises(TimeoutError, match=r"p1 still .* after 0 s"):
        list(client.events("p1", timeout=0))


def test_wait_long_polls_and_opens_no_stream(api: Api, client: Client) -> None:
    """handle.wait() on a live prediction is held by the server (GET ?wait=) until it
    ends: one request, no event stream to set up (cheaper for the server in a burst)."""
    api.on(
        "GET",
        "/v1/predictions/p1",
        httpx.Response(200, json=prediction()),
        httpx.Response(200, json=prediction("succeeded", output={"y": 1})),
    )
    handle = client.handle("p1")
    done = handle.wait(timeout=30)
    assert (done.status, done.output, handle.output()) == ("succeeded", {"y": 1}, {"y": 1})
    assert api.paths() == ["/v1/predictions/p1"] * 2
    assert float(api.requests[-1].url.params["wait"]) > 0


def test_wait_on_a_finished_prediction_is_one_get(api: Api, client: Client) -> None:
    """A prediction already terminal is answered by the first GET."""
    api.on("GET", "/v1/predictions/p1", httpx.Response(200, json=prediction("succeeded")))
    assert client.wait("p1", timeout=30).status == "succeeded"
    assert api.paths() == ["/v1/predictions/p1"]


def test_wait_raises_an_unknown_prediction(api: Api, client: Client) -> None:
    """prediction_not_found is the answer, not a reason to poll or stream."""
    api.on("GET", "/v1/predictions/p1", error(404, "prediction_not_found"))
    with pytest.raises(FreightClientError) as caught:
        client.wait("p1")
    assert caught.value.code == "prediction_not_found"
    assert api.paths() == ["/v1/predictions/p1"]


def test_deliveries_parse_times_and_tries(api: Api, client: Client) -> None:
    """deliveries() returns each delivery with ISO times parsed and its tries."""
    body = {
        "data": [
            {
                "sink": "webhook https://hooks.test/in",
                "event_id": "p1:completed:1",
                "event": "completed",
                "status": "pending",
                "attempts": 1,
                "last_code": 503,
                "last_error": None,
                "next_at": "2025-01-01T00:00:05+00:00",
                "finished_at": None,
                "created_at": "2025-01-01T00:00:00+00:00",
                "tries": [
                    {
                        "attempt": 1,
                        "at": "2025-01-01T00:00:01+00:00",
                        "status_code": 503,
                        "error": None,
                        "next_at": "2025-01-01T00:00:05+00:00",
                    }
                ],
            }
        ]
    }
    api.on("GET", "/v1/predictions/p1/deliveries", httpx.Response(200, json=body))
    (only,) = client.deliveries("p1")
    assert (only.sink, only.event, only.status, only.last_code) == (
        "webhook https://hooks.test/in",
        "completed",
        "pending",
        503,
    )
    assert only.next_at is not None and only.next_at.second == 5
    assert [t.status_code for t in only.tries] == [503]


DELIVERY_ID = "p1:completed:1#0"
REDELIVER = "/v1/deliveries/p1:completed:1#0/redeliver"


def test_redeliver_quotes_the_id_and_returns_the_delivery(api: Api) -> None:
    """redeliver(id) POSTs the id quoted whole ('#' included) and returns the delivery;
    the server's 404 and 409 arrive as FreightClientError with their codes, sync and
    async alike."""
    body = {"id": DELIVERY_ID, "sink": "webhook https://h.test/in", "event_id": "p1:completed:1"}
    api.on(
        "POST",
        REDELIVER,
        httpx.Response(200, json=body | {"event": "completed", "status": "pending"}),
        error(404, "delivery_not_found"),
        error(409, "invalid_state"),
    )
    with Client("http://freight.test", transport=httpx.MockTransport(api)) as client:
        again = client.redeliver(DELIVERY_ID)
        assert (again.id, again.status, again.event_id) == (
            DELIVERY_ID,
            "pending",
            "p1:completed:1",
        )
        with pytest.raises(FreightClientError) as missing:
            client.redeliver(DELIVERY_ID)
    assert (missing.value.status, missing.value.code) == (404, "delivery_not_found")
    assert api.requests[0].url.raw_path == b"/v1/deliveries/p1%3Acompleted%3A1%230/redeliver"
    assert api.requests[0].method == "POST"


async def test_the_async_client_redelivers(api: Api) -> None:
    """AsyncClient.redeliver runs the same flow: a 409 is invalid_state."""
    api.on("POST", REDELIVER, error(409, "invalid_state"))
    async with AsyncClient("http://freight.test", transport=httpx.MockTransport(api)) as client:
        with pytest.raises(FreightClientError) as caught:
            await client.redeliver(DELIVERY_ID)
    assert (caught.value.status, caught.value.code) == (409, "invalid_state")


def test_a_prediction_carries_its_notifications_summary(api: Api, client: Client) -> None:
    """get() parses ``notifications`` (None where the server sends null or nothing)."""
    summary = {"state": "dead", "deliveries": 2, "delivered": 1, "dead": 1}
    api.on(
        "GET",
        "/v1/predictions/p1",
        httpx.Response(200, json=prediction("succeeded", notifications=summary)),
        httpx.Response(200, json=prediction("succeeded")),
    )
    got = client.get("p1").notifications
    assert got is not None and (got.state, got.dead, got.failing) == ("dead", 1, 0)
    assert client.get("p1").notifications is None


def test_webhook_goes_in_the_body_or_the_query(api: Api, client: Client) -> None:
    """predict() sends ``webhook: {url, events}``; run() and run_pipeline() query parameters."""
    api.on("POST", "/v1/predictions", httpx.Response(202, json=prediction()))
    api.on("POST", "/v1/models/echo/predict", httpx.Response(200, json={"y": 1}))
    api.on("POST", "/v1/pipelines/flow/predict", httpx.Response(200, json={"y": 2}))
    client.predict("echo", {"x": 1}, webhook="https://h.test/a", webhook_events=["started"])
    client.predict("echo", {"x": 1}, webhook="https://h.test/b")
    both = ["started", "completed"]
    client.run("echo", {"x": 1}, webhook="https://h.test/c", webhook_events=both)
    client.run_pipeline("flow", {"x": 1}, webhook="https://h.test/d")
    first, second, run, pipeline = api.requests
    assert json.loads(first.content)["webhook"] == {
        "url": "https://h.test/a",
        "events": ["started"],
    }
    assert json.loads(second.content)["webhook"] == {"url": "https://h.test/b"}
    assert dict(run.url.params) == {
        "webhook": "https://h.test/c",
        "webhook_events": "started,completed",
    }
    assert dict(pipeline.url.params) == {"webhook": "https://h.test/d"}
    with pytest.raises(ValueError, match="needs webhook"):
        client.predict("echo", {"x": 1}, webhook_events=["started"])


async def test_the_async_client_follows_resumes_and_waits(api: Api) -> None:
    """AsyncClient: the same events across a reconnect, and wait() long-polled."""
    api.on("GET", EVENTS, stream(*LIFE[:1]), stream(*LIFE[1:]), stream(*LIFE))
    api.on("GET", "/v1/predictions/p1", httpx.Response(200, json=LIFE[-1][2]))
    api.on("GET", "/v1/predictions/p1/deliveries", httpx.Response(200, json={"data": []}))
    async with AsyncClient("http://freight.test", transport=httpx.MockTransport(api)) as client:
        assert [e.id async for e in client.events("p1")] == [1, 2, 3]
        assert (await client.wait("p1", timeout=30)).output == {"y": 1}  # long-polled
        assert await client.deliveries("p1") == []
    assert [r.headers.get("Last-Event-ID") for r in api.requests[:2]] == [None, "1"]
