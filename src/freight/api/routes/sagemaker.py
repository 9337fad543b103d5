"""``/endpoints/{name}/…``: the SageMaker runtime API, for boto3's ``sagemaker-runtime``.

Point an unchanged client at freight (``boto3.client("sagemaker-runtime",
endpoint_url=FREIGHT, aws_access_key_id=…, aws_secret_access_key=…)`` with a pair of
``freight keys create --sigv4``): ``EndpointName`` names a model or a pipeline.

- ``POST /endpoints/{name}/invocations``: ``invoke_endpoint``, real time;
- ``POST /endpoints/{name}/async-invocations``: ``invoke_endpoint_async``: 202 with
  ``InferenceId``, ``OutputLocation`` and ``FailureLocation`` (URIs of freight's
  object store, where the result is written: :mod:`freight.sagemaker`);
- ``POST /endpoints/{name}/invocations-response-stream``:
  ``invoke_endpoint_with_response_stream``: a streaming model's chunks as
  ``PayloadPart`` events, each as it is yielded (:mod:`freight.streaming`).

Requests are SigV4-signed (checked by :func:`freight.api.deps.signed` against the
whole body); errors answer as SageMaker's (``x-amzn-errortype``, :func:`freight.api.
errors.sagemaker_error`), so botocore raises its own classes (``ModelError`` for a
failed prediction, ``ValidationError`` for a bad request). Each operation parses its
headers with :func:`_invocation` (what every invocation names), so each operation of
the API is one more route beside the others.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from freight import eventstream
from freight.api import deps, streamed
from freight.api.errors import dialect, sagemaker_error
from freight.api.render import json_response
from freight.errors import FreightError, InvalidRequestError
from freight.media import OCTET_STREAM
from freight.sagemaker import AsyncInvocation, Invocation
from freight.streaming import BYTES, JSON, TEXT, Chunk, as_bytes

# another protocol's API: documented by AWS (and docs/how-to/interop.md), not in freight's
router = APIRouter(route_class=dialect(sagemaker_error), include_in_schema=False)

#: SageMaker's own name for the one variant freight serves an endpoint with
VARIANT = "AllTraffic"
_PREFIX = "x-amzn-sagemaker-"
#: headers that choose something freight has no notion of: refused, not ignored
_UNSUPPORTED = ("target-model", "inference-component", "session-id")
_MAX_FIELD = 1024  # SageMaker's bound on each of these headers


def _header(request: Request, name: str) -> str | None:
    value = request.headers.get(name)
    if value is not None and len(value) > _MAX_FIELD:
        raise InvalidRequestError(
            f"{name} is longer than {_MAX_FIELD} characters", code="invalid_request", field=name
        )
    return value


def _seconds(request: Request, name: str) -> int | None:
    text = _header(request, _PREFIX + name)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise InvalidRequestError(
            f"{name} must be a whole number of seconds, not {text!r}",
            code="invalid_request",
            field=name,
        ) from None


def _invocation(request: Request, name: str, *, prefixed_types: bool) -> Invocation:
    """What every operation names: ``prefixed_types`` where the content type and accept
    come as ``X-Amzn-SageMaker-*`` headers (the async operation), not the plain ones."""
    for header in _UNSUPPORTED:
        if request.headers.get(_PREFIX + header):
            raise InvalidRequestError(
                f"X-Amzn-SageMaker-{header} is not supported: an endpoint is one model or "
                "pipeline of freight",
                code="invalid_request",
                field=header,
            )
    types = (
        (_PREFIX + "content-type", _PREFIX + "accept")
        if prefixed_types
        else (
            "content-type",
            "accept",
        )
    )
    return Invocation(
        endpoint=name,
        content_type=_header(request, types[0]),
        accept=_header(request, types[1]),
        custom_attributes=_header(request, _PREFIX + "custom-attributes"),
        inference_id=_header(request, _PREFIX + "inference-id"),
    )


@router.post("/endpoints/{name}/invocations")
async def invoke_endpoint(request: Request, who: deps.SignedPredictor, name: str) -> Response:
    """``invoke_endpoint``: the output of the model (or pipeline) as its body, with its
    content type; a failed prediction answers ``ModelError`` (424)."""
    call = _invocation(request, name, prefixed_types=False)
    row = await deps.sagemaker(request).invoke(who, call, request.state.body)
    headers = {"x-Amzn-Invoked-Production-Variant": VARIANT, "X-Freight-Prediction-Id": row.id}
    if row.output_json is not None:
        return Response(row.output_json.encode(), media_type="application/json", headers=headers)
    output = deps.service(request).open_output(row)
    if output.size is not None:
        headers["Content-Length"] = str(output.size)
    return StreamingResponse(
        output.chunks, media_type=output.content_type or OCTET_STREAM, headers=headers
    )


@router.post("/endpoints/{name}/async-invocations", status_code=202)
async def invoke_endpoint_async(request: Request, who: deps.SignedPredictor, name: str) -> Response:
    """``invoke_endpoint_async``: queued; the answer says where its output (or its
    failure) will be written. Its input is ``InputLocation`` (an object of freight's
    store) or the body."""
    body: bytes = request.state.body
    call = AsyncInvocation(
        invocation=_invocation(request, name, prefixed_types=True),
        input_location=_header(request, _PREFIX + "inputlocation"),
        body=body or None,
        request_ttl_s=_seconds(request, "requestttlseconds"),
        invocation_timeout_s=_seconds(request, "invocationtimeoutseconds"),
        output_path_extension=_header(request, _PREFIX + "s3outputpathextension"),
        filename=_header(request, _PREFIX + "filename"),
    )
    accepted = await deps.sagemaker(request).invoke_async(who, call)
    headers = {
        "X-Amzn-SageMaker-OutputLocation": accepted.output_location,
        "X-Amzn-SageMaker-FailureLocation": accepted.failure_location,
        "X-Freight-Prediction-Id": accepted.prediction_id,
    }
    return json_response({"InferenceId": accepted.inference_id}, status_code=202, headers=headers)


#: SageMaker's content type of a stream's payload, by the kind of its first chunk
_PART_TYPES = {TEXT: "text/plain", BYTES: OCTET_STREAM, JSON: "application/jsonlines"}


@router.post("/endpoints/{name}/invocations-response-stream")
async def invoke_endpoint_with_response_stream(
    request: Request, who: deps.SignedPredictor, name: str
) -> Response:
    """``invoke_endpoint_with_response_stream``: the output as ``PayloadPart`` events of
    AWS's event stream (:mod:`freight.eventstream`): a streaming model's chunks, each as
    it is yielded (:mod:`freight.api.streamed`; a model at zero replicas is waited
    for), any other endpoint's output in pieces once it is there. A failure before the
    first part answers ``ModelError`` (424); after it, a ``ModelStreamError`` event
    ends the stream."""
    accept = _header(request, _PREFIX + "accept")
    call = replace(_invocation(request, name, prefixed_types=False), accept=accept)
    svc = deps.service(request)
    headers = {"x-Amzn-Invoked-Production-Variant": VARIANT}
    if not svc.streams(name):
        row = await deps.sagemaker(request).invoke(who, call, request.state.body)
        output = svc.open_output(row)
        headers["X-Amzn-SageMaker-Content-Type"] = output.content_type
        headers["X-Freight-Prediction-Id"] = row.id
        body = _pieces(output.chunks)
    else:
        slots = streamed.reserve(request, svc)
        row = await deps.sagemaker(request).start(who, call, request.state.body)
        first, chunks = await streamed.byte_chunks(svc, slots, row)
        kind = first.kind if first is not None else TEXT
        headers["X-Amzn-SageMaker-Content-Type"] = _PART_TYPES[kind]
        headers["X-Freight-Prediction-Id"] = row.id
        body = _parts(chunks)
    headers.update(streamed.STREAM_HEADERS)
    return StreamingResponse(body, media_type=eventstream.CONTENT_TYPE, headers=headers)


async def _pieces(data: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    async for piece in data:
        yield eventstream.event("PayloadPart", piece)


async def _parts(chunks: AsyncIterator[Chunk]) -> AsyncIterator[bytes]:
    """Each chunk a ``PayloadPart``; a failure after the first, a ``ModelStreamError``."""
    try:
        async for chunk in chunks:
            yield eventstream.event("PayloadPart", as_bytes(chunk.kind, chunk.data))
    except streamed.StreamBroken as exc:
        cause = exc.__cause__
        error = cause if isinstance(cause, FreightError) else FreightError(str(exc))
        fields = {"Message": error.message, "ErrorCode": error.code}
        yield eventstream.exception("ModelStreamError", fields)
