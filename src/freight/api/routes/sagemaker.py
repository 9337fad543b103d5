"""``/endpoints/{name}/…``: the SageMaker runtime API, for boto3's ``sagemaker-runtime``.

Point an unchanged client at freight (``boto3.client("sagemaker-runtime",
endpoint_url=FREIGHT, aws_access_key_id=…, aws_secret_access_key=…)`` with a pair of
``freight keys create --sigv4``): ``EndpointName`` names a model or a pipeline.

- ``POST /endpoints/{name}/invocations``: ``invoke_endpoint``, real time;
- ``POST /endpoints/{name}/async-invocations``: ``invoke_endpoint_async``: 202 with
  ``InferenceId``, ``OutputLocation`` and ``FailureLocation`` (URIs of freight's
  object store, where the result is written: :mod:`freight.sagemaker`).

Requests are SigV4-signed (checked by :func:`freight.api.deps.signed` against the
whole body); errors answer as SageMaker's (``x-amzn-errortype``, :func:`freight.api.
errors.sagemaker_error`), so botocore raises its own classes (``ModelError`` for a
failed prediction, ``ValidationError`` for a bad request). Each operation parses its
headers with :func:`_invocation` (what every invocation names), so another operation
of the API (``invocations-response-stream``) is one more route beside these.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from freight.api import deps
from freight.api.errors import dialect, sagemaker_error
from freight.api.render import json_response
from freight.errors import InvalidRequestError
from freight.media import OCTET_STREAM
from freight.sagemaker import AsyncInvocation, Invocation

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
