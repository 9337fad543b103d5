"""Callback steps (``kind: callback``): a step that waits, holding nothing, until an
outside system or a person answers it, like Step Functions' ``.waitForTaskToken``.

When its run reaches it, the advancement (``runs.py``) puts the step's row straight
into ``running`` — no worker ever claims it: its target ``:callback`` is served by
none — with its rendered input (what the outside is asked about), one more attempt,
and its deadline as its lease (``lease_expires_at``): the earlier of ``started_at +
timeout_s`` and, with ``heartbeat_s``, the last heartbeat + ``heartbeat_s``
(:func:`deadline`). Past it the reaper's ``CALLBACK_TIMEOUT`` sweep
(``store/sql.py``) fails the step with ``timeout``; ``retry:`` (a new wait, under a
new token, at once: nothing runs, so there is nothing to back off from) and
``catch:`` apply as to any step. State lives in the row alone, so a wait survives
any restart and holds no worker slot.

**The token is the credential** (the outside system holds no freight key):
``<row id>.<attempt>.<start µs>.<signature>``, the signature an HMAC-SHA256 of the
rest under a key derived from the server's ``secret_key`` (:func:`key_of`). It is
stateless (nothing stored; any API process verifies it; it survives restarts) and
bound to one wait: each wait starts at a new time (a retry, a redrive), so a token of
an earlier wait never matches the row again. It is used once: the transaction that
answers (``store/ops.py`` ``answer_callback``) locks the row and checks that it still
waits under this token's attempt and start (:func:`refusal`). A token never appears
in a log line, an error or a metric: it travels in the URL path of the routes, which
no log line of freight prints (uvicorn's access log is off; a request's span is named
by its route template), and errors name the step, never the token.

The answer: ``success`` with a JSON body (the step's output, checked against the
step's ``schema:`` first: :func:`check_answer`), ``failure`` with ``{"error",
"cause"}`` (Step Functions' ``SendTaskFailure``: the step fails with
``callback_failed``), or ``heartbeat`` (the deadline moves on).

Pure: the rules of the kind (checks, spec, tokens, deadlines); applied by
``runs.py``, the store and the callback service (``freight/callbacks.py``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from freight.errors import ConflictError, ForbiddenError, InvalidRequestError
from freight.media import JSON
from freight.prediction import ErrorCode, Kind, Prediction, Status

#: the target every callback step's row carries (served by no worker)
TARGET = ":callback"
#: the step keys only a callback step takes
CALLBACK_KEYS = ("heartbeat_s", "schema")
#: the answers, each a route under ``/v1/callbacks/{token}/``
ANSWERS = ("success", "failure", "heartbeat")
PREFIX = "/v1/callbacks/"
#: Step Functions' bounds of SendTaskFailure's fields
MAX_ERROR_CHARS = 256
MAX_CAUSE_CHARS = 32_768
_PURPOSE = b"freight:callback"


# -- the declaration ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallbackSpec:
    """A callback step's own options (its ``timeout_s`` is the step's)."""

    heartbeat_s: float | None = None  # None: no heartbeat is required
    schema: Any = field(default=None, hash=False, compare=False)  # None: any JSON answer


def parse_callback(raw: Mapping[str, Any]) -> CallbackSpec | None:
    """The options of a checked callback step (None for a step of another kind)."""
    if raw.get("kind") != "callback":
        return None
    return CallbackSpec(heartbeat_s=raw.get("heartbeat_s"), schema=raw.get("schema"))


def check_callback(raw: Mapping[str, Any]) -> list[str]:
    """Every fault of a step's callback options (empty: none)."""
    if raw.get("kind") != "callback":
        given = [key for key in CALLBACK_KEYS if raw.get(key) is not None]
        return [f"{key} applies only to a kind: callback step" for key in given]
    problems: list[str] = []
    beat = raw.get("heartbeat_s")
    if beat is not None and (
        isinstance(beat, bool)
        or not isinstance(beat, int | float)
        or not math.isfinite(beat)
        or beat <= 0
    ):
        problems.append(f"heartbeat_s must be a number > 0, got {beat!r}")
    if raw.get("for_each") is not None:
        problems.append("a callback step cannot have for_each (one wait per step)")
    if raw.get("schema") is not None:
        problems += schema_problems(raw["schema"])
    return problems


def schema_problems(schema: Any) -> list[str]:
    """Why ``schema`` is no valid JSON Schema (of the draft it names; else 2020-12)."""
    if not isinstance(schema, Mapping | bool):
        return [f"schema must be a JSON Schema (a mapping), got {type(schema).__name__}"]
    import jsonschema  # here: importing it costs every process ~0.1 s otherwise

    try:
        validator = jsonschema.validators.validator_for(schema, default=_validator())
        validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "the top"
        return [f"schema is not a valid JSON Schema: {exc.message} (at {where})"]
    return []


def _validator() -> Any:
    """The draft of a schema that names none: 2020-12."""
    from jsonschema import Draft202012Validator

    return Draft202012Validator


def check_answer(schema: Any, value: Any, step: str) -> None:
    """Raise InvalidRequestError ``answer_invalid`` (400) when ``value`` does not satisfy
    the step's schema, naming the first fault and where it is."""
    if schema is None:
        return
    import jsonschema

    validator = jsonschema.validators.validator_for(schema, default=_validator())(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is None:
        return
    where = "/" + "/".join(str(p) for p in error.absolute_path)
    raise InvalidRequestError(
        f"the answer does not satisfy the schema of step {step!r}: {error.message} (at {where})",
        code="answer_invalid",
        step=step,
        path=where,
        validator=str(error.validator),
    )


def failure_of(body: Any) -> tuple[str, str]:
    """``(error, cause)`` of a failure answer (``{"error": ..., "cause": ...}``, both
    optional strings); InvalidRequestError ``invalid_failure`` for anything else."""
    if body is None:
        body = {}
    if not isinstance(body, Mapping) or set(body) - {"error", "cause"}:
        raise InvalidRequestError(
            'a failure is {"error": "...", "cause": "..."} (both optional strings)',
            code="invalid_failure",
        )
    error = "" if body.get("error") is None else body["error"]
    cause = "" if body.get("cause") is None else body["cause"]
    bounds = (("error", error, MAX_ERROR_CHARS), ("cause", cause, MAX_CAUSE_CHARS))
    for name, value, bound in bounds:
        if not isinstance(value, str) or len(value) > bound:
            raise InvalidRequestError(
                f"{name} must be a string of at most {bound} characters",
                code="invalid_failure",
                field=name,
            )
    return error, cause


def failure_message(error: str, cause: str) -> str:
    """How a failed callback's error reads: what the outside said, both parts named."""
    said = ": ".join(part for part in (error, cause) if part)
    return f"the callback answered failure: {said}" if said else "the callback answered failure"


@dataclass(frozen=True, slots=True)
class Answer:
    """How an answer ends the step: succeeded with its output, or failed."""

    status: Status
    output_json: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    error_detail: str | None = None

    @classmethod
    def success(cls, value: Any) -> Answer:
        return cls(Status.SUCCEEDED, output_json=orjson.dumps(value).decode())

    @classmethod
    def failure(cls, error: str, cause: str) -> Answer:
        return cls(
            Status.FAILED,
            error_code=ErrorCode.CALLBACK_FAILED,
            error_message=failure_message(error, cause),
            error_detail=orjson.dumps({"error": error, "cause": cause}).decode(),
        )

    def params(self) -> dict[str, Any]:
        """The fields of ``sql.ANSWER_CALLBACK``."""
        text = self.output_json
        return {
            "status": str(self.status),
            "output_json": text,
            "output_content_type": None if text is None else JSON,
            "output_bytes": None if text is None else len(text.encode()),
            "error_code": self.error_code,
            "error_message": self.error_message,
            "error_detail": self.error_detail,
        }


# -- the wait ----------------------------------------------------------------------


def deadline(started_at: float, timeout_s: float, heartbeat_s: float | None, now: float) -> float:
    """When a wait that started at ``started_at`` (last heard of ``now``) times out."""
    end = started_at + timeout_s
    return end if heartbeat_s is None else min(end, now + heartbeat_s)


def timeout_message(row: Prediction) -> str:
    """Why a wait timed out (the sweep's SQL says the same: ``store/sql.py``)."""
    started = row.started_at or 0.0
    if (row.lease_expires_at or 0.0) < started + row.timeout_s:
        return "no heartbeat within its heartbeat_s"
    return "no answer within its timeout_s"


# -- tokens ------------------------------------------------------------------------


def key_of(secret: bytes) -> bytes:
    """The tokens' own key, derived from the server's secret (every process given the
    same ``secret_key`` derives the same one)."""
    return hmac.new(secret, _PURPOSE, hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class Claim:
    """What a token names: one wait of one step row."""

    row_id: str
    attempt: int
    started_us: int  # the wait's start, in microseconds

    @property
    def text(self) -> str:
        return f"{self.row_id}.{self.attempt}.{self.started_us}"

    @classmethod
    def of(cls, row: Prediction) -> Claim:
        return cls(row.id, row.attempts, _micros(row.started_at or 0.0))

    def names(self, row: Prediction) -> bool:
        """Whether ``row`` still is this wait (its attempt and start)."""
        return row.attempts == self.attempt and _micros(row.started_at or 0.0) == self.started_us


def _micros(at: float) -> int:
    return round(at * 1_000_000)


def _signature(key: bytes, text: str) -> str:
    digest = hmac.new(key, text.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def token_of(key: bytes, claim: Claim) -> str:
    return f"{claim.text}.{_signature(key, claim.text)}"


def verify(key: bytes, token: str) -> Claim:
    """The wait a token names; ForbiddenError ``invalid_callback_token`` (403) for one
    that is malformed or not signed with this server's key (which one is never said)."""
    parts = token.split(".")
    refused = ForbiddenError("the callback token is not valid", code="invalid_callback_token")
    if len(parts) != 4 or not parts[1].isdigit() or not parts[2].isdigit():
        raise refused
    text = ".".join(parts[:3])
    expected = _signature(key, text).encode()
    if not hmac.compare_digest(expected, parts[3].encode("utf-8", "surrogateescape")):
        raise refused
    return Claim(parts[0], int(parts[1]), int(parts[2]))


def refusal(row: Prediction, claim: Claim, now: float) -> ConflictError | None:
    """Why ``row`` takes no answer under ``claim`` (409), or None: it waits under it.
    A wait past its deadline takes none, swept or not yet."""
    if row.kind != Kind.CALLBACK:  # a valid signature names only callback rows
        return ConflictError("the token names no callback step", code="callback_closed")
    if not claim.names(row):  # signed, so of a wait that was: an earlier one
        return ConflictError(
            f"the token is of an earlier wait of step {row.step!r}: it waits again under "
            "a new token",
            code="callback_superseded",
            step=row.step,
            attempt=row.attempts,
        )
    if row.status == Status.RUNNING and (row.lease_expires_at or 0.0) < now:
        return ConflictError(
            f"step {row.step!r} waited past its deadline: it times out",
            code="callback_closed",
            step=row.step,
            status=str(Status.FAILED),
        )
    if row.status != Status.RUNNING:
        return ConflictError(
            f"step {row.step!r} no longer waits for this callback (it is {row.status})",
            code="callback_closed",
            step=row.step,
            status=str(row.status),
        )
    return None


#: the event a wait sends (``step.waiting`` to receivers), a subscription's ``events`` name
EVENT = "waiting"


def announcements(root: Prediction, waits: list[Prediction], now: float) -> list[dict[str, Any]]:
    """The outbox rows of waits just begun: one per wait and subscription of the
    top-level run ``root`` that asked for ``waiting``, in the run's own outbox (its
    ``started``'s seq: sent after nothing, before its ``completed``). The event id names
    the wait (its token without the signature), so the deliverer signs its URLs."""
    entries: list[dict[str, Any]] = orjson.loads(root.notify) if root.notify else []
    rows: list[dict[str, Any]] = []
    for row in waits:
        event_id = f"{root.id}:{EVENT}:{Claim.of(row).text}"
        for index, entry in enumerate(entries):
            if EVENT not in (entry.get("events") or ()):
                continue
            rows.append(
                {
                    "id": f"{event_id}#{index}",
                    "event_id": event_id,
                    "subscription": index,
                    "prediction_id": root.id,
                    "event_type": EVENT,
                    "seq": root.attempts * 2,
                    "now": now,
                }
            )
    return rows


def claim_of_event(event_id: str) -> Claim | None:
    """The wait a ``waiting`` event names (None: not such an event)."""
    parts = event_id.split(":")
    if len(parts) != 3 or parts[1] != EVENT:
        return None
    fields = parts[2].split(".")
    if len(fields) != 3 or not fields[1].isdigit() or not fields[2].isdigit():
        return None
    return Claim(fields[0], int(fields[1]), int(fields[2]))


def paths(token: str) -> dict[str, str]:
    """The routes that answer a wait, by answer (relative: the face makes them absolute)."""
    return {answer: f"{PREFIX}{token}/{answer}" for answer in ANSWERS}


def waits(row: Prediction) -> bool:
    """Whether ``row`` is a callback step waiting for its answer."""
    return row.kind == Kind.CALLBACK and row.status == Status.RUNNING


__all__ = [
    "ANSWERS",
    "CALLBACK_KEYS",
    "EVENT",
    "PREFIX",
    "TARGET",
    "Answer",
    "CallbackSpec",
    "Claim",
    "announcements",
    "check_answer",
    "check_callback",
    "claim_of_event",
    "deadline",
    "failure_message",
    "failure_of",
    "key_of",
    "parse_callback",
    "paths",
    "refusal",
    "schema_problems",
    "timeout_message",
    "token_of",
    "verify",
    "waits",
]
