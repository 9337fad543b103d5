"""Events, outcomes and subscriptions: the values the sinks and the outbox share."""

from __future__ import annotations

import orjson
import pytest

from freight.api.render import prediction_dict
from freight.notify.event import (
    COMPLETED,
    EVENT_NAMES,
    STARTED,
    Event,
    Outcome,
    event_type,
)
from freight.notify.sinks.base import Subscription, describe, redact
from freight.prediction import Prediction, Status


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("running", STARTED),
        ("succeeded", COMPLETED),
        ("failed", COMPLETED),
        ("canceled", COMPLETED),
        ("expired", COMPLETED),
        ("skipped", COMPLETED),
        ("queued", None),
        ("pending", None),
        ("awaiting_input", None),
        ("no-such-status", None),
    ],
)
def test_event_type_of_each_status(status: str, expected: str | None) -> None:
    """running starts; every terminal status completes; the rest emit nothing."""
    assert event_type(status) == expected


def test_every_status_is_covered() -> None:
    """No status is forgotten: each maps to started, completed or nothing on purpose."""
    silent = {Status.PENDING, Status.AWAITING_INPUT, Status.QUEUED}
    assert {s for s in Status if event_type(s) is None} == silent
    assert EVENT_NAMES == ("started", "completed", "waiting")  # waiting: a callback step's


def test_for_prediction_reads_the_rendered_object_and_drops_fragments() -> None:
    """An event built from ``prediction_dict`` holds plain JSON (no orjson Fragment)."""
    p = Prediction(
        id="p-1",
        target="tabular",
        status=Status.SUCCEEDED,
        created_at=1.0,
        finished_at=2.0,
        output_json='{"rows": 5}',
    )
    event = Event.for_prediction("evt-1", prediction_dict(p), timestamp=2.0)
    assert (event.type, event.prediction_id, event.target, event.status, event.name) == (
        COMPLETED,
        "p-1",
        "tabular",
        "succeeded",
        "completed",
    )
    assert event.data["output"] == {"rows": 5}
    assert orjson.loads(orjson.dumps(event.data)) == event.data
    hash(event)  # usable as a key although data is a dict


def test_for_prediction_refuses_a_silent_status() -> None:
    """A prediction that is only queued has no event to make."""
    data = {"id": "p", "target": "t", "status": "queued"}
    with pytest.raises(ValueError, match="emits no event"):
        Event.for_prediction("e", data, timestamp=0.0)


def test_outcome_helpers() -> None:
    """ok is delivered; failed retries; gone stops (and does not retry)."""
    assert Outcome.ok(204) == Outcome(True, 204, None, False)
    failed = Outcome.failed("HTTP 500", 500)
    assert not failed.delivered and failed.retry and failed.status_code == 500
    gone = Outcome.gone()
    assert gone.stop and not gone.retry and gone.status_code == 410


def test_subscriptions_filter_by_event_and_target() -> None:
    """None means all; otherwise an event must match both the names and the targets."""
    everything = Subscription.of()
    assert everything.matches(STARTED, "x") and everything.matches(COMPLETED, "y")
    narrow = Subscription.of(["completed"], ["tabular"])
    assert narrow.matches(COMPLETED, "tabular")
    assert not narrow.matches(STARTED, "tabular")
    assert not narrow.matches(COMPLETED, "echo")


def test_error_text_is_redacted() -> None:
    """Secrets, and the password inside a URL, are blanked in error text."""
    url = "amqp://freight:p%40ss-W0rd@10.0.0.1:5672/"
    exc = ConnectionError(f"cannot connect to {url} (user freight, password p@ss-W0rd)")
    text = describe(exc, [url])
    assert "p@ss-W0rd" not in text and "p%40ss-W0rd" not in text and "ConnectionError" in text
    assert redact("token abc123 here", ["abc123", None, ""]) == "token *** here"
