"""What several routes read from a request the same way: pagination cursors, the
long poll (``Prefer: wait=N``, ``?wait=N``) and the real-time routes' webhook
query parameters — each beside the OpenAPI text that declares exactly what the
server takes, so the document and the checks cannot drift apart.

Routes share request handling through this module (and ``render``, ``bodies``)
only: no route module imports another (``tests/unit/test_layers.py`` checks it).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Any

import orjson
from fastapi import Header, Query
from fastapi.exceptions import RequestValidationError
from starlette.requests import Request

from freight.api.schemas import (
    WEBHOOK_EVENTS,
    WEBHOOK_URL_MAX,
    WEBHOOK_URL_PATTERN,
    WebhookIn,
    check_webhook_events,
)
from freight.errors import InvalidRequestError, TooManyStreamsError
from freight.subscriptions import Webhook

# -- pagination cursors --------------------------------------------------------------

#: a cursor is the base64url text of ``{"after":"<id>"}`` as orjson writes it: 10 + 36
#: + 2 = 48 bytes, so exactly 64 characters and no padding
CURSOR_LENGTH = 64
CURSOR_PATTERN = rf"^[A-Za-z0-9_-]{{{CURSOR_LENGTH}}}$"
_CURSOR = re.compile(CURSOR_PATTERN)
_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")



def _cursor_schema(schema: dict[str, Any]) -> None:
    """Document the shape :func:`decode_cursor` takes on the parameter's string branch
    (declared, not enforced by FastAPI: anything else is a 400 ``invalid_cursor``)."""
    for branch in schema.get("anyOf", [schema]):
        if branch.get("type") == "string":
            branch.update(pattern=CURSOR_PATTERN, minLength=CURSOR_LENGTH, maxLength=CURSOR_LENGTH)


#: the ``cursor`` query parameter of a list route
CursorQuery = Annotated[
    str | None,
    Query(description="`next_cursor` of the previous page", json_schema_extra=_cursor_schema),
]


def decode_cursor(cursor: str | None) -> str | None:
    """The id a page starts after (None: the first page); 400 ``invalid_cursor`` for a
    cursor freight did not issue."""
    if cursor is None:
        return None
    after: Any = None
    if _CURSOR.match(cursor):
        try:
            after = orjson.loads(base64.urlsafe_b64decode(cursor.encode()))["after"]
        except (binascii.Error, ValueError, TypeError, KeyError, orjson.JSONDecodeError):
            after = None
    if not isinstance(after, str) or not _ID.match(after):
        raise InvalidRequestError("the pagination cursor is not valid", code="invalid_cursor")
    return after


def encode_cursor(after: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"after": after})).decode()


def next_cursor(ids: list[str], more: bool) -> str | None:
    """The ``next_cursor`` of a page whose rows have ``ids``: None on the last page."""
    return encode_cursor(ids[-1]) if more and ids else None


# -- long polls ------------------------------------------------------------------------

_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait=(\d+(?:\.\d+)?)")

PreferHeader = Annotated[
    str | None,
    Header(
        description="`wait=N`: hold the answer up to N seconds (the server's `max_wait_s` "
        "at most) for the prediction to end; other preferences are ignored"
    ),
]
WaitQuery = Annotated[
    float | None,
    Query(ge=0, description="long-poll up to N s (the server's `max_wait_s` at most)"),
]


# -- the hottest routes' parameters, read by hand ----------------------------------
# FastAPI's declared Header/Query parameters cost ~20 µs a request (each looked up and
# validated through pydantic): on create and on the long-poll, the two requests of
# every prediction, they are read here with the same checks and the same 422s, and
# documented as FastAPI documented them (``openapi_extra``).

#: an ``Idempotency-Key`` is at most this long
IDEMPOTENCY_KEY_MAX = 255
_PREFER_TEXT = (
    "`wait=N`: hold the answer up to N seconds (the server's `max_wait_s` at most) for "
    "the prediction to end; other preferences are ignored"
)
_WAIT_TEXT = "long-poll up to N s (the server's `max_wait_s` at most)"
#: the create route's headers, as OpenAPI parameters
CREATE_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "idempotency-key",
        "in": "header",
        "required": False,
        "schema": {
            "anyOf": [{"type": "string", "maxLength": IDEMPOTENCY_KEY_MAX}, {"type": "null"}],
            "title": "Idempotency-Key",
        },
    },
    {
        "name": "prefer",
        "in": "header",
        "required": False,
        "schema": {
            "anyOf": [{"type": "string"}, {"type": "null"}],
            "description": _PREFER_TEXT,
            "title": "Prefer",
        },
        "description": _PREFER_TEXT,
    },
]
#: the long-poll's query parameter
WAIT_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "wait",
        "in": "query",
        "required": False,
        "schema": {
            "anyOf": [{"type": "number", "minimum": 0}, {"type": "null"}],
            "description": _WAIT_TEXT,
            "title": "Wait",
        },
        "description": _WAIT_TEXT,
    }
]


def idempotency_key(request: Request) -> str | None:
    """The ``Idempotency-Key`` header (422 past IDEMPOTENCY_KEY_MAX characters)."""
    value = request.headers.get("idempotency-key")
    if value is not None and len(value) > IDEMPOTENCY_KEY_MAX:
        raise RequestValidationError(
            [
                {
                    "type": "string_too_long",
                    "loc": ("header", "idempotency-key"),
                    "msg": f"String should have at most {IDEMPOTENCY_KEY_MAX} characters",
                    "input": value,
                    "ctx": {"max_length": IDEMPOTENCY_KEY_MAX},
                }
            ]
        )
    return value


def wait_query(request: Request) -> float | None:
    """The ``wait`` query parameter: a number >= 0 (422 otherwise), or None."""
    raw = request.query_params.get("wait")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise RequestValidationError(
            [
                {
                    "type": "float_parsing",
                    "loc": ("query", "wait"),
                    "msg": "Input should be a valid number, unable to parse string as a number",
                    "input": raw,
                }
            ]
        ) from None
    if not value >= 0:  # NaN included
        raise RequestValidationError(
            [
                {
                    "type": "greater_than_equal",
                    "loc": ("query", "wait"),
                    "msg": "Input should be greater than or equal to 0",
                    "input": raw,
                    "ctx": {"ge": 0},
                }
            ]
        )
    return value


def prefer_wait(prefer: str | None) -> float | None:
    """The seconds of ``Prefer: wait=N`` (RFC 7240), or None."""
    match = _PREFER_WAIT.search(prefer or "")
    return float(match.group(1)) if match else None


# -- webhooks --------------------------------------------------------------------------

_EVENT = "|".join(WEBHOOK_EVENTS)
#: ``webhook_events``: a comma-separated list of known events (spaces around each allowed)
WEBHOOK_EVENTS_PATTERN = rf"^ *({_EVENT}) *(, *({_EVENT}) *)*$"
_WEBHOOK_URL = re.compile(WEBHOOK_URL_PATTERN)
_WEBHOOK_EVENTS = re.compile(WEBHOOK_EVENTS_PATTERN)

#: the real-time routes' webhook parameters, for the OpenAPI document (they are read
#: from the query string by :func:`webhook_of`: a FastAPI dependency would cost a
#: dependency resolution on every real-time call, measured at ~7 % of B3)
WEBHOOK_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "webhook",
        "in": "query",
        "required": False,
        "description": "http(s) URL to POST this prediction's events to (signed, "
        "Standard Webhooks)",
        "schema": {
            "type": "string",
            "minLength": 1,
            "maxLength": WEBHOOK_URL_MAX,
            "pattern": WEBHOOK_URL_PATTERN,
        },
    },
    {
        "name": "webhook_events",
        "in": "query",
        "required": False,
        "description": "comma-separated events for `webhook` (which it needs): "
        f"{', '.join(WEBHOOK_EVENTS)} (default completed)",
        "schema": {"type": "string", "pattern": WEBHOOK_EVENTS_PATTERN},
    },
]


def webhook_of(request: Request) -> Webhook | None:
    """The real-time routes' webhook: their body is the input itself, so it comes as
    query parameters (``webhook=<url>&webhook_events=started,completed``)."""
    query = request.query_params
    if "webhook" not in query and "webhook_events" not in query:
        return None
    return webhook_query(query.get("webhook"), query.get("webhook_events"))


def webhook_query(webhook: str | None = None, webhook_events: str | None = None) -> Webhook | None:
    """Check the two parameters (422 ``validation_error`` naming the bad one)."""
    if webhook is None:
        if webhook_events is not None:
            raise _query_invalid("webhook_events", "webhook_events needs webhook", webhook_events)
        return None
    if not webhook or len(webhook) > WEBHOOK_URL_MAX or not _WEBHOOK_URL.search(webhook):
        raise _query_invalid(
            "webhook", f"an http(s) URL of at most {WEBHOOK_URL_MAX} characters", webhook
        )
    if webhook_events is None:
        return Webhook(webhook)
    names = [name.strip(" ") for name in webhook_events.split(",")]
    if not _WEBHOOK_EVENTS.match(webhook_events):
        try:
            check_webhook_events(names)  # names the unknown ones
        except ValueError as exc:
            raise _query_invalid("webhook_events", str(exc), webhook_events) from None
        message = f"a comma-separated list of {', '.join(WEBHOOK_EVENTS)}"
        raise _query_invalid("webhook_events", message, webhook_events)
    return Webhook(webhook, tuple(dict.fromkeys(names)))


def webhook_in(body: WebhookIn | None) -> Webhook | None:
    """A create body's ``webhook`` object (already validated by its model)."""
    return None if body is None else Webhook(body.url, tuple(dict.fromkeys(body.events)))


def _query_invalid(name: str, message: str, value: str) -> RequestValidationError:
    """A 422 ``validation_error`` in the shape FastAPI gives a query parameter's."""
    return RequestValidationError(
        [{"loc": ("query", name), "msg": message, "type": "value_error", "input": value}]
    )




#: how long a refused stream is told to wait: streams end at a prediction's end or
#: after ``max_wait_s``, so slots free up every few seconds under load
STREAM_RETRY_AFTER_S = 2


class StreamSlots:
    """The event streams this process holds open (the API's and the console's alike),
    against ``max_event_streams``; one per app (one process, one event loop)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0

    def check(self) -> None:
        """503 ``too_many_streams`` (with Retry-After) when the bound is reached."""
        if self.open >= self.limit:
            raise TooManyStreamsError(
                f"this server already holds {self.limit} event streams; retry, or poll "
                "GET /v1/predictions/{id}?wait=N",
                retry_after_s=STREAM_RETRY_AFTER_S,
                limit=self.limit,
            )


def stream_slots(request: Request, limit: int) -> StreamSlots:
    """The app's slots, made on first use with ``limit``."""
    slots: StreamSlots | None = getattr(request.app.state, "event_streams", None)
    if slots is None:
        slots = request.app.state.event_streams = StreamSlots(limit)
    return slots

__all__ = [
    "CREATE_PARAMETERS",
    "CURSOR_PATTERN",
    "IDEMPOTENCY_KEY_MAX",
    "STREAM_RETRY_AFTER_S",
    "WAIT_PARAMETERS",
    "WEBHOOK_EVENTS_PATTERN",
    "WEBHOOK_PARAMETERS",
    "CursorQuery",
    "PreferHeader",
    "StreamSlots",
    "WaitQuery",
    "decode_cursor",
    "encode_cursor",
    "idempotency_key",
    "next_cursor",
    "prefer_wait",
    "stream_slots",
    "wait_query",
    "webhook_in",
    "webhook_of",
    "webhook_query",
]
