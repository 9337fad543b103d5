"""The SageMaker runtime API on freight's predictions: what an invocation becomes.

``invoke_endpoint`` is a real-time prediction of the model or pipeline named by
``EndpointName``; ``invoke_endpoint_async`` a queued one whose input is an object of
freight's store (``InputLocation``, read where it is) or the request's own body, and
whose result is *written back* to the store where the 202 said it would be
(``OutputLocation``, or ``FailureLocation`` when it fails), under the caller's tenant
space (:func:`freight.keys.sagemaker_output_key`), so a plain S3 client pointed at
the same store reads it as it reads SageMaker's bucket. freight's own status routes
(``GET /v1/predictions/{id}``) work on the same prediction: AWS never shipped those.

What SageMaker takes that freight keeps on the prediction, in its metadata under
``sagemaker`` (shown by GET and carried by notifications): the ``InferenceId``
(the prediction's id when none is given), ``CustomAttributes``, ``Accept``, and for
an async invocation its locations. A SageMaker-format notification
(:mod:`freight.notify.sagemaker`) is built from them.

Who writes the result objects: :class:`AsyncResults`, run by the deliverer for the
subscription ``@sagemaker-async`` that every async invocation gets (the outbox
retries it like any delivery: a store outage delays the objects, never loses them).
A sink that sends SageMaker's notification JSON runs it first (``wiring.py``), so a
consumer told of a result finds its object. Output objects are copied from the
prediction's own (``outputs/<id>``); freight's retention purges those, never these.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final

import orjson

from freight.access import Principal
from freight.errors import InvalidRequestError
from freight.keys import in_tenant_space, sagemaker_failure_key, sagemaker_output_key
from freight.media import JSON, OCTET_STREAM, is_json_type
from freight.prediction import Prediction, Status
from freight.service import CreateOptions, NewInput, PredictionService
from freight.storage.base import Storage
from freight.store.base import Store
from freight.views import error_of

log = logging.getLogger("freight.sagemaker")

#: the subscription every async invocation gets: its result objects written
ASYNC_RESULTS_SINK: Final = "@sagemaker-async"
#: the prediction metadata key under which an invocation's SageMaker fields are kept
METADATA_KEY: Final = "sagemaker"
#: SageMaker's bounds on an async invocation's queue TTL and run time (seconds)
REQUEST_TTL_S: Final = (60, 21600)
INVOCATION_TIMEOUT_S: Final = (1, 3600)


@dataclass(frozen=True, slots=True)
class Invocation:
    """What every invocation names: the endpoint (a model or pipeline), the input's
    content type and the fields SageMaker forwards."""

    endpoint: str
    content_type: str | None = None
    accept: str | None = None
    custom_attributes: str | None = None
    inference_id: str | None = None

    def fields(self) -> dict[str, Any]:
        """The fields kept on the prediction (only those given)."""
        given = {
            "endpoint_name": self.endpoint,
            "inference_id": self.inference_id,
            "custom_attributes": self.custom_attributes,
            "accept": self.accept,
            "content_type": self.content_type,
        }
        return {k: v for k, v in given.items() if v is not None}


@dataclass(frozen=True, slots=True)
class AsyncInvocation:
    """``invoke_endpoint_async``: the input by location or inline, and its bounds."""

    invocation: Invocation
    input_location: str | None = None
    body: bytes | None = None
    request_ttl_s: int | None = None
    invocation_timeout_s: int | None = None
    output_path_extension: str | None = None
    filename: str | None = None


@dataclass(frozen=True, slots=True)
class Accepted:
    """The 202 of an async invocation."""

    prediction_id: str
    inference_id: str
    output_location: str
    failure_location: str


def _bounded(name: str, value: int | None, bounds: tuple[int, int]) -> int | None:
    if value is not None and not bounds[0] <= value <= bounds[1]:
        raise InvalidRequestError(
            f"{name} must be between {bounds[0]} and {bounds[1]}, not {value}",
            code="invalid_request",
            field=name,
        )
    return value


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


class SageMakerService:
    """Invocations as predictions (the prediction service does the rest)."""

    def __init__(self, service: PredictionService) -> None:
        self._service = service

    def _new_input(self, body: bytes, content_type: str | None) -> NewInput:
        if is_json_type(content_type):
            try:
                return NewInput(json=orjson.loads(body), has_json=True)
            except orjson.JSONDecodeError as exc:
                raise InvalidRequestError(
                    f"the body is not valid JSON: {exc}", code="invalid_json"
                ) from None
        return NewInput(data=_once(body), content_type=content_type or OCTET_STREAM)

    def _prepared(
        self, who: Principal, call: Invocation, body: bytes
    ) -> tuple[NewInput, CreateOptions]:
        """What a real-time invocation becomes (its input, its fields kept), once the
        caller may use the endpoint and the endpoint takes its content type."""
        svc = self._service
        svc.allow(who, call.endpoint)
        if not svc.is_pipeline(call.endpoint):
            svc.check_media_type(call.endpoint, call.content_type or "")
        fields = call.fields()
        del fields["endpoint_name"]
        fields.pop("content_type", None)
        options = CreateOptions(metadata={METADATA_KEY: fields} if fields else None)
        return self._new_input(body, call.content_type), options

    async def invoke(self, who: Principal, call: Invocation, body: bytes) -> Prediction:
        """Real time: the succeeded prediction. One that failed raises
        PredictionFailedError (``ModelError``); one not done within the real-time
        deadline is canceled (nobody can come back for it) and raises ``timeout``."""
        new_input, options = self._prepared(who, call, body)
        return await self._service.call(call.endpoint, new_input, who=who, options=options)

    async def start(self, who: Principal, call: Invocation, body: bytes) -> Prediction:
        """``invoke_endpoint_with_response_stream``: the prediction created, not waited
        for (its chunks are followed as it runs: ``freight.api.streamed``)."""
        new_input, options = self._prepared(who, call, body)
        return await self._service.create(call.endpoint, new_input, options, who=who)

    async def invoke_async(self, who: Principal, call: AsyncInvocation) -> Accepted:
        """Queue the prediction; its result will be written where the answer says."""
        svc, inv = self._service, call.invocation
        ttl_s = _bounded("RequestTTLSeconds", call.request_ttl_s, REQUEST_TTL_S)
        run_s = _bounded(
            "InvocationTimeoutSeconds", call.invocation_timeout_s, INVOCATION_TIMEOUT_S
        )
        if (call.input_location is None) == (call.body is None):
            raise InvalidRequestError(
                "give exactly one of InputLocation and Body", code="ambiguous_input"
            )
        svc.allow(who, inv.endpoint)
        if not svc.is_pipeline(inv.endpoint):
            svc.check_media_type(inv.endpoint, inv.content_type or "")
        if call.body is not None:
            new_input = self._new_input(call.body, inv.content_type)
        else:
            new_input = NewInput(uri=call.input_location, content_type=inv.content_type)
        # the locations name the prediction's id, which exists once it is created: the
        # keys are made from a placeholder first to refuse a bad extension before that
        sagemaker_output_key(who.tenant, "x", call.output_path_extension, call.filename)
        fields = inv.fields() | {
            "input_location": call.input_location,
            "output_path_extension": call.output_path_extension,
            "filename": call.filename,
        }
        options = CreateOptions(
            metadata={METADATA_KEY: {k: v for k, v in fields.items() if v is not None}},
            ttl_s=ttl_s,
            timeout_s=run_s,
            also=({"sink": ASYNC_RESULTS_SINK, "events": ["completed"]},),
        )
        row = await svc.create(inv.endpoint, new_input, options, who=who)
        return self.accepted(row)

    def accepted(self, row: Prediction) -> Accepted:
        """The answer of an async invocation of ``row`` (its locations, as URIs of the
        store that a client of the store reads)."""
        fields = fields_of(row) or {}
        output, failure = result_keys(row)
        return Accepted(
            prediction_id=row.id,
            inference_id=str(fields.get("inference_id") or row.id),
            output_location=self._service.object_uri(output),
            failure_location=self._service.object_uri(failure),
        )


def fields_of(row: Prediction) -> dict[str, Any] | None:
    """The SageMaker fields kept on a prediction (None: not a SageMaker invocation)."""
    if not row.metadata:
        return None
    metadata = orjson.loads(row.metadata)
    fields = metadata.get(METADATA_KEY) if isinstance(metadata, dict) else None
    return fields if isinstance(fields, dict) else None


def is_async(row: Prediction) -> bool:
    """Whether ``row`` is an async invocation: it has the subscription only the
    server gives (never a caller's metadata alone)."""
    entries = orjson.loads(row.notify) if row.notify else []
    return any(e.get("sink") == ASYNC_RESULTS_SINK for e in entries)


def result_keys(row: Prediction) -> tuple[str, str]:
    """Where an async invocation's output and failure land (in its tenant's space)."""
    fields = fields_of(row) or {}
    extension, filename = fields.get("output_path_extension"), fields.get("filename")
    return (
        sagemaker_output_key(row.tenant, row.id, extension, filename),
        sagemaker_failure_key(row.tenant, row.id, extension),
    )


def failure_body(row: Prediction) -> bytes:
    """What FailureLocation holds: the error as freight's routes show it."""
    error = error_of(row) or {"code": str(row.status), "message": f"the prediction {row.status}"}
    return orjson.dumps({"error": error, "prediction_id": row.id, "status": str(row.status)})


class AsyncResults:
    """Writes an async invocation's result where its answer said: the output when it
    succeeded, else the failure. Idempotent (an object already there is kept), and
    confined to the prediction's tenant space whatever its metadata says."""

    def __init__(self, store: Store, storage: Storage) -> None:
        self._store = store
        self._storage = storage

    async def write(self, prediction_id: str) -> dict[str, str] | None:
        """The result's locations (``output_location``, ``failure_location``) once it is
        in place; None when the prediction is not finished, or is no async invocation.
        Raises when the store or the storage fails (the delivery is retried)."""
        row = await self._store.get(prediction_id)
        if row is None or not row.status.terminal or not is_async(row):
            return None
        output, failure = result_keys(row)
        key = output if row.status == Status.SUCCEEDED else failure
        if not in_tenant_space(row.tenant, key):
            log.warning("not writing %s for %s: outside its tenant", key, row.id)
            return None
        locations = {
            "output_location": self._storage.uri_for_key(output),
            "failure_location": self._storage.uri_for_key(failure),
        }
        if await self._storage.stat(key) is not None:
            return locations
        began = time.monotonic()
        # streamed in, whatever the size: on a directory the object is then a file at
        # its location's path (small objects put whole are rows of the store's table)
        if key == failure:
            stream, content_type = _once(failure_body(row)), JSON
        elif row.output_key is not None:
            stream = self._storage.get_stream(row.output_key)
            content_type = row.output_content_type or OCTET_STREAM
        else:
            stream, content_type = _once((row.output_json or "null").encode()), JSON
        await self._storage.put_stream(key, stream, content_type=content_type)
        log.debug("wrote %s for %s in %.1f ms", key, row.id, (time.monotonic() - began) * 1e3)
        return locations


__all__ = [
    "ASYNC_RESULTS_SINK",
    "METADATA_KEY",
    "Accepted",
    "AsyncInvocation",
    "AsyncResults",
    "Invocation",
    "SageMakerService",
    "failure_body",
    "fields_of",
    "is_async",
    "result_keys",
]
