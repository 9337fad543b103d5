"""freight.eventstream: AWS's event-stream framing, read back by botocore's own parser."""

from __future__ import annotations

import json

from botocore.eventstream import EventStreamBuffer

from freight.eventstream import event, exception, message


def parsed(data: bytes) -> list[tuple[dict[str, object], bytes]]:
    buffer = EventStreamBuffer()
    buffer.add_data(data)
    return [(m.headers, m.payload) for m in buffer]


def test_botocore_reads_payload_parts_and_an_exception_in_one_stream() -> None:
    """Messages end to end (CRCs and lengths checked by botocore): each part's bytes as
    sent, then the exception's headers and JSON."""
    stream = (
        event("PayloadPart", b"hello ")
        + event("PayloadPart", "wörld".encode())
        + exception("ModelStreamError", {"Message": "boom", "ErrorCode": "model_error"})
    )
    (h1, p1), (_, p2), (h3, p3) = parsed(stream)
    assert (h1[":event-type"], h1[":message-type"], p1) == ("PayloadPart", "event", b"hello ")
    assert p2 == "wörld".encode()
    assert (h3[":exception-type"], h3[":message-type"]) == ("ModelStreamError", "exception")
    assert json.loads(p3) == {"Message": "boom", "ErrorCode": "model_error"}


def test_an_empty_payload_and_no_headers_frame_too() -> None:
    assert parsed(message({}, b"")) == [({}, b"")]
