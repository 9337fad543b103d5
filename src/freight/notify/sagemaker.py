"""SageMaker's asynchronous-inference notification, as a sink's message (``format:
sagemaker``).

SageMaker publishes one JSON document per finished async invocation to its SNS
topics; a consumer that parses those keeps its parser when a sink of freight sends
the same document instead::

    {"awsRegion": "us-east-1", "eventTime": "…Z", "receivedTime": "…Z",
     "invocationStatus": "Completed" | "Failed",
     "failureReason": "…",                        # failed only
     "requestParameters": {"endpointName": …, "inputLocation": …, "contentType": …},
     "responseParameters": {"contentType": …, "outputLocation": …}   # or failureLocation
     "inferenceId": …, "eventVersion": "1.0", "eventSource": "aws:sagemaker",
     "eventName": "InferenceResult"}

Built from the prediction object an event carries (pure): its SageMaker fields
(``metadata.sagemaker``, where the API keeps an invocation's ``InferenceId`` and
input location, and where ``wiring.py`` adds the result's locations before a
send), its status, times and error. Only ``completed`` events have one (SageMaker
sends nothing when an invocation starts); a prediction that was not made through
the SageMaker API is described all the same, its id as the inference id.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from freight.notify.event import COMPLETED, Event

FORMAT: Final = "sagemaker"
#: what ``awsRegion`` says (freight has no region; a consumer may read the field)
DEFAULT_REGION: Final = "us-east-1"
_EXTRA: Final = "sagemaker"


def _time(iso: Any) -> str | None:
    """freight's ISO 8601 (``+00:00``) as AWS writes it: milliseconds and ``Z``."""
    if not isinstance(iso, str):
        return None
    moment = datetime.fromisoformat(iso)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _compact(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def notification(event: Event, region: str = DEFAULT_REGION) -> dict[str, Any] | None:
    """The SageMaker notification of an event (None: an event SageMaker has none for)."""
    if event.type != COMPLETED:
        return None
    data = event.data
    metadata = _mapping(data.get("metadata"))
    fields = _mapping(metadata.get(_EXTRA))
    succeeded = data.get("status") == "succeeded"
    error = _mapping(data.get("error"))
    document: dict[str, Any] = {
        "awsRegion": region,
        "eventTime": _time(data.get("finished_at")),
        "receivedTime": _time(data.get("created_at")),
        "invocationStatus": "Completed" if succeeded else "Failed",
    }
    if not succeeded:
        code = error.get("code") or data.get("status")
        document["failureReason"] = f"{code}: {error.get('message') or data.get('status')}"
    document["requestParameters"] = _compact(
        {
            "contentType": fields.get("content_type") or data.get("input_content_type"),
            "endpointName": fields.get("endpoint_name") or data.get("target"),
            "inputLocation": fields.get("input_location") or data.get("input_uri"),
        }
    )
    if succeeded:
        response = {
            "contentType": data.get("output_content_type"),
            "outputLocation": fields.get("output_location") or data.get("output_url"),
        }
    else:
        response = {
            "contentType": "application/json",
            "failureLocation": fields.get("failure_location"),
        }
    document["responseParameters"] = _compact(response)
    document["inferenceId"] = fields.get("inference_id") or data.get("id")
    document["eventVersion"] = "1.0"
    document["eventSource"] = "aws:sagemaker"
    document["eventName"] = "InferenceResult"
    return document


__all__ = ["DEFAULT_REGION", "FORMAT", "notification"]
