"""``/v2``: the Open Inference Protocol (KServe v2) over REST, for ``tritonclient.http``,
KServe and MLServer clients.

- ``GET /v2/health/live``, ``GET /v2/health/ready``: the server;
- ``GET /v2``: the server's metadata (its extensions: ``binary_tensor_data``);
- ``GET /v2/models/{m}[/versions/{v}]``: a model's metadata (its declared tensors);
- ``GET /v2/models/{m}[/versions/{v}]/ready``: whether it takes predictions now;
- ``POST /v2/models/{m}[/versions/{v}]/infer``: a real-time prediction of a *tensor
  model* (:mod:`freight.tensors`), JSON tensors or the binary tensor extension
  (``Inference-Header-Content-Length``) both ways.

A model has one version, ``1``. The request is checked against the model's declared
tensors before anything is stored; it becomes the prediction's input (JSON, or a
frame of the binary extension), the runner hands the model numpy arrays and makes
its return the protocol's answer, which this route relays. Errors are the
protocol's ``{"error": "<message>"}`` (with freight's status and ``code``).
Authentication is freight's (``Authorization: Bearer``; tritonclient sends it with
``headers=``).
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from freight.access import Principal
from freight.api import deps
from freight.api.bodies import read_limited
from freight.api.errors import dialect, inference_error
from freight.api.render import json_response
from freight.errors import (
    InvalidRequestError,
    NotFoundError,
    NotReadyError,
    PayloadTooLargeError,
)
from freight.media import base_type
from freight.model import InputKind
from freight.registry import ModelSpec
from freight.service import NewInput
from freight.tensors import FRAME_TYPE, check_request, parse_request, split_frame
from freight.version import __version__

# another protocol's API: documented by the protocol (and docs/how-to/interop.md)
router = APIRouter(route_class=dialect(inference_error), include_in_schema=False)

#: the one version of every model
VERSION = "1"
EXTENSIONS = ["binary_tensor_data"]
HEADER_LENGTH = "Inference-Header-Content-Length"


@router.get("/v2/health/live")
async def live() -> Response:
    return json_response({"live": True})


@router.get("/v2/health/ready")
async def ready(request: Request) -> Response:
    await deps.system(request).check_ready()
    return json_response({"ready": True})


@router.get("/v2")
async def server_metadata() -> Response:
    return json_response({"name": "freight", "version": __version__, "extensions": EXTENSIONS})


def _model(request: Request, who: Principal, name: str, version: str | None) -> ModelSpec:
    """The served model a key may see (any other: 404 as unknown), of version ``1``."""
    svc = deps.service(request)
    if not who.may_use(name) or svc.is_pipeline(name):
        raise NotFoundError(f"no model named {name!r}", code="unknown_target", target=name)
    spec = svc.spec(name)
    if version is not None and version != VERSION:
        raise NotFoundError(
            f"model {name!r} has one version, {VERSION}, not {version!r}",
            code="unknown_version",
            target=name,
        )
    return spec


def _metadata(spec: ModelSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "versions": [VERSION],
        "platform": "freight",
        "inputs": [t.metadata() for t in spec.inputs],
        "outputs": [t.metadata() for t in spec.outputs],
    }


@router.get("/v2/models/{name}")
async def model_metadata(request: Request, who: deps.Reader, name: str) -> Response:
    return json_response(_metadata(_model(request, who, name, None)))


@router.get("/v2/models/{name}/versions/{version}")
async def version_metadata(request: Request, who: deps.Reader, name: str, version: str) -> Response:
    return json_response(_metadata(_model(request, who, name, version)))


async def _ready(request: Request, who: Principal, name: str, version: str | None) -> Response:
    _model(request, who, name, version)
    if not await deps.system(request).model_ready(name):
        raise NotReadyError(f"model {name!r} has no ready replica", models=[name])
    return json_response({"name": name, "ready": True})


@router.get("/v2/models/{name}/ready")
async def model_ready(request: Request, who: deps.Reader, name: str) -> Response:
    return await _ready(request, who, name, None)


@router.get("/v2/models/{name}/versions/{version}/ready")
async def version_ready(request: Request, who: deps.Reader, name: str, version: str) -> Response:
    return await _ready(request, who, name, version)


@router.post("/v2/models/{name}/infer")
async def infer(request: Request, who: deps.Predictor, name: str) -> Response:
    return await _infer(request, who, name, None)


@router.post("/v2/models/{name}/versions/{version}/infer")
async def version_infer(request: Request, who: deps.Predictor, name: str, version: str) -> Response:
    return await _infer(request, who, name, version)


def _decoded(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body without its ``Content-Encoding`` (tritonclient's request compression:
    gzip or deflate), refused past ``limit`` once inflated."""
    if encoding in (None, "", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise InvalidRequestError(
            f"Content-Encoding {encoding!r} is not taken: gzip, deflate or none",
            code="unsupported_encoding",
        )
    inflater = zlib.decompressobj(zlib.MAX_WBITS | (16 if encoding == "gzip" else 0))
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidRequestError(
            f"the body is not valid {encoding}: {exc}", code="invalid_request"
        ) from None
    if len(data) > limit:
        raise PayloadTooLargeError(
            f"the inflated body is over the limit of {limit} bytes", limit=limit
        )
    return data


def _header_length(request: Request) -> int | None:
    text = request.headers.get(HEADER_LENGTH)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise InvalidRequestError(
            f"{HEADER_LENGTH} is not a number", code="invalid_tensor"
        ) from None


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _infer(request: Request, who: Principal, name: str, version: str | None) -> Response:
    svc = deps.service(request)
    svc.allow(who, name)
    spec = _model(request, who, name, version)
    if spec.input_kind != InputKind.TENSORS:
        raise InvalidRequestError(
            f"model {name!r} takes {spec.input_kind}, not tensors: declare its inputs and "
            "outputs (freight.Tensor) or annotate predict with numpy arrays",
            code="not_a_tensor_model",
            target=name,
        )
    limit = svc.limits.max_json_bytes
    body = _decoded(
        await read_limited(request, limit), request.headers.get("content-encoding"), limit
    )
    parsed = parse_request(body, _header_length(request))
    check_request(parsed, spec.inputs, spec.outputs)
    if parsed.has_binary:
        new_input = NewInput(data=_once(parsed.frame()), content_type=FRAME_TYPE)
    else:
        new_input = NewInput(json=parsed.header, has_json=True)
    row = await svc.call(name, new_input, who=who)
    headers = {"X-Freight-Prediction-Id": row.id}
    if row.output_json is not None:
        return Response(row.output_json.encode(), media_type="application/json", headers=headers)
    output = svc.open_output(row)
    if base_type(output.content_type) != FRAME_TYPE:  # a JSON answer too large to inline
        return StreamingResponse(output.chunks, media_type=output.content_type, headers=headers)
    if output.size is not None:
        headers["Content-Length"] = str(output.size - 4)
    return await _frame_response(output.chunks, headers)


async def _frame_response(chunks: AsyncIterator[bytes], headers: dict[str, str]) -> Response:
    """A stored answer frame as the binary extension sends it: its header's length in
    ``Inference-Header-Content-Length``, then the header and the binary data."""
    head = b""
    async for chunk in chunks:
        head += chunk
        if len(head) >= 4:
            break
    length, first = split_frame(head)
    headers[HEADER_LENGTH] = str(length)

    async def rest() -> AsyncIterator[bytes]:
        yield first
        async for chunk in chunks:
            yield chunk

    return StreamingResponse(rest(), media_type="application/octet-stream", headers=headers)
