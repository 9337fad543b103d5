"""SageMaker's async notification JSON (``format: sagemaker``), from the event a sink
gets: completed and failed invocations, nothing for a start, a plain prediction too."""

from __future__ import annotations

from typing import Any

import orjson

from freight.notify.envelope import message
from freight.notify.event import Event
from freight.notify.sagemaker import notification
from freight.notify.sinks.webhook import webhook_body

FIELDS = {
    "endpoint_name": "echo",
    "inference_id": "inf-1",
    "content_type": "application/json",
    "input_location": "s3://b/tenants/t/in.json",
    "output_location": "s3://b/tenants/t/sagemaker/async-outputs/p.out",
    "failure_location": "s3://b/tenants/t/sagemaker/async-failures/p-error.out",
}


def event(status: str, **data: Any) -> Event:
    view = {
        "id": "p",
        "target": "echo",
        "status": status,
        "created_at": "2026-12-07T10:00:00.123456+00:00",
        "finished_at": "2026-12-07T10:00:01.5+00:00",
        "output_content_type": "application/json",
        "metadata": {"sagemaker": FIELDS},
        "error": None,
    } | data
    return Event.for_prediction("p:completed:1", view, timestamp=0.0)


def test_a_completed_invocation() -> None:
    assert notification(event("succeeded")) == {
        "awsRegion": "us-east-1",
        "eventTime": "2026-12-07T10:00:01.500Z",
        "receivedTime": "2026-12-07T10:00:00.123Z",
        "invocationStatus": "Completed",
        "requestParameters": {
            "contentType": "application/json",
            "endpointName": "echo",
            "inputLocation": "s3://b/tenants/t/in.json",
        },
        "responseParameters": {
            "contentType": "application/json",
            "outputLocation": FIELDS["output_location"],
        },
        "inferenceId": "inf-1",
        "eventVersion": "1.0",
        "eventSource": "aws:sagemaker",
        "eventName": "InferenceResult",
    }


def test_a_failed_invocation_and_what_has_none() -> None:
    failed = notification(
        event("failed", error={"code": "timeout", "message": "too slow", "detail": {}})
    )
    assert failed is not None
    assert failed["invocationStatus"] == "Failed"
    assert failed["failureReason"] == "timeout: too slow"
    assert failed["responseParameters"] == {
        "contentType": "application/json",
        "failureLocation": FIELDS["failure_location"],
    }
    started = Event.for_prediction(
        "p:started:1", {"id": "p", "target": "echo", "status": "running"}, timestamp=0.0
    )
    assert notification(started) is None
    assert webhook_body(started, "sagemaker") is None
    assert message(started, "freight://h", "sagemaker") is None
    plain = notification(event("succeeded", metadata={}, output_url="https://x/o", input_uri=None))
    assert plain is not None and plain["inferenceId"] == "p"
    assert plain["responseParameters"]["outputLocation"] == "https://x/o"


def test_sinks_send_it_as_their_body() -> None:
    done = event("succeeded")
    body = webhook_body(done, "sagemaker")
    assert body is not None and orjson.loads(body)["inferenceId"] == "inf-1"
    encoded = message(done, "freight://h", "sagemaker")
    assert encoded is not None and encoded[1] == "application/json"
    assert orjson.loads(encoded[0]) == notification(done)
    cloud = message(done, "freight://h")
    assert cloud is not None and cloud[1] == "application/cloudevents+json"
