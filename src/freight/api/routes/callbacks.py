"""``/v1/callbacks/{token}``: answering a pipeline's callback step (``kind: callback``).

The routes a waiting callback step publishes (in its run's ``step.waiting`` event and
``GET`` of the run): no API key, the token in the path is the credential, used once
(``freight/callbacks.py``). The token is never echoed, logged or put in an error.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from freight.api import deps
from freight.api.bodies import read_json, read_limited, require_json
from freight.api.errors import responses
from freight.api.render import iso, json_response
from freight.errors import (
    ConflictError,
    ForbiddenError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
)
from freight.pipelines import callback
from freight.prediction import Prediction

router = APIRouter(prefix=callback.PREFIX.rstrip("/"), tags=["callbacks"])

_REFUSALS = (ForbiddenError, NotFoundError, ConflictError)
_BODY = (InvalidRequestError, PayloadTooLargeError, UnsupportedMediaTypeError)


class AnsweredOut(BaseModel):
    """The step as the answer left it (no more of its run: the answerer holds no key)."""

    prediction_id: str = Field(description="the step's prediction")
    run_id: str | None
    step: str | None
    status: str = Field(
        description="succeeded or failed; running again when a failure's retry waits anew"
    )
    attempt: int
    deadline: str | None = Field(description="while it waits: when it times out")


class FailureIn(BaseModel):
    """Why the outside gave up (as Step Functions' ``SendTaskFailure``)."""

    error: str | None = Field(None, max_length=callback.MAX_ERROR_CHARS)
    cause: str | None = Field(None, max_length=callback.MAX_CAUSE_CHARS)


def _answered(row: Prediction) -> Response:
    body = {
        "prediction_id": row.id,
        "run_id": row.run_id,
        "step": row.step,
        "status": str(row.status),
        "attempt": row.attempts,
        "deadline": iso(row.lease_expires_at) if callback.waits(row) else None,
    }
    return json_response(body)


def _limit(request: Request) -> int:
    return deps.service(request).limits.max_json_bytes


@router.post(
    "/{token}/success",
    response_model=AnsweredOut,
    responses=responses(*_REFUSALS, *_BODY),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {}}},
            "description": "any JSON: the step's output (checked against its schema)",
        }
    },
)
async def succeed(request: Request, token: str) -> Response:
    """The step succeeds: the JSON body is its output, checked against the step's
    ``schema`` first (400 ``answer_invalid``, nothing changed). 403 for a token that is
    not valid; 409 for one already answered (``callback_closed``) or of an earlier
    wait (``callback_superseded``)."""
    svc = deps.callbacks(request)
    svc.verify(token)  # a forged token is refused before its body is read
    value: Any = await read_json(request, _limit(request))
    return _answered(await svc.succeed(token, value))


@router.post(
    "/{token}/failure",
    response_model=AnsweredOut,
    responses=responses(*_REFUSALS, *_BODY),
    openapi_extra={
        "requestBody": {"content": {"application/json": {"schema": FailureIn.model_json_schema()}}}
    },
)
async def fail(request: Request, token: str) -> Response:
    """The step fails with error code ``callback_failed``, its message naming ``error``
    and ``cause``; its ``retry:`` and ``catch:`` apply (a retry waits again under a new
    token). The body may be left out."""
    svc = deps.callbacks(request)
    svc.verify(token)
    raw = await read_limited(request, _limit(request))
    body: Any = None
    if raw.strip():
        require_json(request)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidRequestError(
                f"the body is not valid JSON: {exc}", code="invalid_json"
            ) from None
    return _answered(await svc.fail(token, body))


@router.post(
    "/{token}/heartbeat",
    response_model=AnsweredOut,
    responses=responses(*_REFUSALS),
)
async def heartbeat(request: Request, token: str) -> Response:
    """The answer is being worked on: the step's deadline moves to now + its
    ``heartbeat_s`` (never past its ``timeout_s``)."""
    return _answered(await deps.callbacks(request).heartbeat(token))


__all__ = ["FailureIn", "router"]
