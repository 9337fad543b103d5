"""CloudEvents envelopes: each attribute, and a round trip through the package's parser."""

from __future__ import annotations

import json

from freight.notify.envelope import (
    CONTENT_TYPE,
    default_source,
    from_cloudevent,
    to_cloudevent,
)
from freight.notify.event import Event

EVENT = Event(
    id="01a232fa-f313-72e0-a1f7-2e8efd522606",
    type="prediction.completed",
    timestamp=1_700_000_000.25,
    prediction_id="01a232fa-0000-7000-8000-000000000001",
    target="tabular",
    status="failed",
    data={"id": "01a232fa-0000-7000-8000-000000000001", "status": "failed", "output": None},
)


def test_structured_json_has_every_attribute() -> None:
    """id, type, source, time (RFC 3339, Z), subject, datacontenttype, data, specversion."""
    doc = json.loads(to_cloudevent(EVENT, "freight://api.example.com"))
    assert doc["specversion"] == "1.0"
    assert doc["id"] == EVENT.id
    assert doc["type"] == "dev.freight.prediction.completed"
    assert doc["source"] == "freight://api.example.com"
    assert doc["time"] == "2023-11-14T22:13:20.250000Z"
    assert doc["subject"] == EVENT.prediction_id
    assert doc["datacontenttype"] == "application/json"
    assert doc["data"] == EVENT.data
    assert (doc["freighttarget"], doc["freightstatus"]) == ("tabular", "failed")


def test_the_package_parses_it_back() -> None:
    """The cloudevents package reads the document back to the same attributes and data."""
    parsed = from_cloudevent(to_cloudevent(EVENT, "freight://h"))
    assert parsed.get_id() == EVENT.id
    assert parsed.get_type() == "dev.freight.prediction.completed"
    assert parsed.get_subject() == EVENT.prediction_id
    assert parsed.get_time() is not None and parsed.get_time().timestamp() == EVENT.timestamp
    assert parsed.get_data() == EVENT.data
    assert CONTENT_TYPE == "application/cloudevents+json"


def test_default_source_is_the_public_host_or_this_machine() -> None:
    """``freight://<host>`` from the public URL (credentials dropped), else the hostname."""
    assert default_source("https://ops:pw@freight.example.com:8443/x") == (
        "freight://freight.example.com:8443"
    )
    assert default_source("").startswith("freight://") and len(default_source("")) > 10
