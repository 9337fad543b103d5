"""CloudEvents envelopes for the broker sinks (structured JSON mode).

A broker consumer gets one self-describing JSON document per event, whatever the
broker: ``id`` (the event id, for de-duplication), ``type``
(``dev.freight.prediction.completed``), ``source`` (``freight://<host>``),
``time``, ``subject`` (the prediction id) and ``data`` (the prediction object).
Built with the ``cloudevents`` 2.x core API (``cloudevents.core.v1.event`` and
its JSON format) rather than by hand, so the document follows the spec's
encoding rules (RFC 3339 times with ``Z``, ``specversion``, extension names).

Two extension attributes, ``freighttarget`` and ``freightstatus``, let a
consumer filter without parsing ``data``; ``traceparent`` (CloudEvents' distributed
tracing extension), while tracing is on, names the span that sent it.
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from typing import Final
from urllib.parse import urlsplit

import orjson
from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from freight.notify import sagemaker
from freight.notify.event import Event

CONTENT_TYPE: Final = JSONFormat.CONTENT_TYPE  # application/cloudevents+json
DATA_CONTENT_TYPE: Final = "application/json"
TYPE_PREFIX: Final = "dev.freight."
_FORMAT: Final = JSONFormat()


def default_source(public_url: str = "") -> str:
    """``freight://<host>``: the public URL's host when there is one, else this
    machine's name (a cluster's agents then differ, which is what ``source`` says)."""
    netloc = urlsplit(public_url).netloc.rpartition("@")[2] if public_url else ""
    return f"freight://{netloc or socket.gethostname()}"


def cloudevent(event: Event, source: str) -> CloudEvent:
    """The CloudEvent for an event (attributes validated by the package)."""
    attributes = {
        "id": event.id,
        "type": TYPE_PREFIX + event.type,
        "source": source,
        "time": datetime.fromtimestamp(event.timestamp, UTC),
        "subject": event.prediction_id,
        "datacontenttype": DATA_CONTENT_TYPE,
        "freighttarget": event.target,
        "freightstatus": event.status,
    }
    if event.traceparent:  # the distributed tracing extension
        attributes["traceparent"] = event.traceparent
    return CloudEvent(attributes, event.data)


def to_cloudevent(event: Event, source: str) -> bytes:
    """The structured-mode JSON document of an event, as the bytes a broker carries."""
    return _FORMAT.write(cloudevent(event, source))


def message(event: Event, source: str, format: str = "freight") -> tuple[bytes, str] | None:
    """A broker message's body and content type in a sink's ``format``: the CloudEvent
    (``freight``), or SageMaker's async notification JSON (``sagemaker``: None for an
    event SageMaker has none for, which the sink then skips)."""
    if format == sagemaker.FORMAT:
        document = sagemaker.notification(event)
        return None if document is None else (orjson.dumps(document), DATA_CONTENT_TYPE)
    return to_cloudevent(event, source), CONTENT_TYPE


def from_cloudevent(body: bytes | str) -> BaseCloudEvent:
    """Parse a structured-mode document back (consumers, tests)."""
    return _FORMAT.read(None, body)
