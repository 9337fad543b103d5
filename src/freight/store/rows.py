"""Row <-> :class:`~freight.prediction.Prediction` mapping, and the small domain
decisions both backends make on rows, kept in one place so they cannot drift.

Every statement of ``sql.py`` selects whole rows as ``sql.COLS``, the field
order of the dataclass, so one positional mapping serves both drivers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

from freight.deliveries import DeliveryAttempt, DeliveryResult, DeliveryStatus, OutboxRow
from freight.errors import ConflictError, NotFoundError
from freight.prediction import (
    Completion,
    Kind,
    Prediction,
    Release,
    Status,
    TargetStats,
)
from freight.store.sql import COLUMNS

_STATUS_INDEX = COLUMNS.index("status")
_KIND_INDEX = COLUMNS.index("kind")


def row_to_prediction(row: Sequence[Any]) -> Prediction:
    """A row selected as ``COLS`` -> Prediction (``status`` as :class:`Status`)."""
    values = list(row)
    values[_STATUS_INDEX] = Status(values[_STATUS_INDEX])
    values[_KIND_INDEX] = Kind(values[_KIND_INDEX])
    return Prediction(*values)


def prediction_params(prediction: Prediction) -> dict[str, Any]:
    """Insert parameters: every field, the status as its plain string.

    Plain strings because drivers differ on enums (psycopg dumps an Enum's name).
    """
    params = {c: getattr(prediction, c) for c in COLUMNS}
    params["status"] = Status(prediction.status).value
    params["kind"] = Kind(prediction.kind).value
    return params


#: Completion's fields: read one by one, every one a scalar (``dataclasses.asdict``
#: deep-copies recursively and cost 14 % of the server's time completing bulk B1)
_COMPLETION_FIELDS = tuple(f.name for f in dataclasses.fields(Completion))


def completion_params(completion: Completion) -> dict[str, Any]:
    params = {name: getattr(completion, name) for name in _COMPLETION_FIELDS}
    params["status"] = Status(completion.status).value
    for name in ("error_message", "error_detail", "output_json"):
        params[name] = without_nul(params[name])
    return params


def without_nul(text: str | None) -> str | None:
    """A NUL character cannot be stored in a PostgreSQL text column (the driver raises
    DataError, which would drop the whole batch's completion): U+FFFD stands in, on
    both engines alike. Models put NULs in error messages (``str(exc)`` of binary
    input); orjson escapes them in JSON, so output JSON has none."""
    if text is None or "\x00" not in text:
        return text
    return text.replace("\x00", "\ufffd")


def release_params(release: Release, now: float) -> dict[str, Any]:
    return {
        "id": release.id,
        "attempt": release.attempt,
        "worker_id": release.worker_id,
        "count_attempt": release.count_attempt,
        "error_code": str(release.error_code),
        "error_message": release.error_message,
        "now": now,
        "backoff_s": release.backoff_s,
    }


def input_ready_params(
    prediction_id: str,
    *,
    input_key: str,
    input_content_type: str,
    input_bytes: int,
    now: float,
    input_json: str | None = None,
) -> dict[str, Any]:
    return {
        "id": prediction_id,
        "input_key": input_key,
        "input_json": input_json,
        "input_bytes": input_bytes,
        "input_content_type": input_content_type,
        "now": now,
    }


def claim_params(
    target: str, limit: int, *, worker_id: str, lease_s: float, now: float
) -> dict[str, Any]:
    return {
        "target": target,
        "limit": limit,
        "worker_id": worker_id,
        "now": now,
        "lease_expires_at": now + lease_s,
    }


def fair_shares(limit: int, tenants: int) -> list[int]:
    """``limit`` rows dealt one at a time to ``tenants`` in turn: what each one gets."""
    return [limit // tenants + (1 if i < limit % tenants else 0) for i in range(tenants)]


def claim_order(rows: Iterable[Prediction]) -> list[Prediction]:
    """UPDATE ... RETURNING promises no order: restore priority desc, then oldest."""
    return sorted(rows, key=lambda p: (-p.priority, p.id))


def check_idempotent(existing: Prediction, new: Prediction) -> Prediction:
    """The row stored under ``new``'s idempotency key, if it is the same request."""
    if existing.request_hash != new.request_hash:
        raise ConflictError(
            "idempotency key already used with a different request",
            code="idempotency_conflict",
            idempotency_key=new.idempotency_key,
            id=existing.id,
        )
    return existing


def not_awaiting_input(prediction_id: str, current: Prediction | None) -> Exception:
    """The error for mark_input_ready on a row that is missing or in another status."""
    if current is None:
        return NotFoundError("prediction not found", id=prediction_id)
    return ConflictError(
        f"prediction is {current.status.value}, not awaiting_input",
        code="invalid_state",
        id=prediction_id,
        status=current.status.value,
    )


def stats_from_rows(rows: Iterable[Sequence[Any]]) -> dict[str, TargetStats]:
    """``(target, status, count, oldest id)`` rows -> counts per target."""
    result: dict[str, TargetStats] = {}
    for target, status, count, oldest in rows:
        stats = result.setdefault(target, TargetStats())
        setattr(stats, status, int(count))
        if oldest is not None:
            stats.oldest_queued_id = str(oldest)
    return result


def outbox_row(row: Sequence[Any]) -> OutboxRow:
    """A row selected as ``sql.OUTBOX_COLUMNS`` -> OutboxRow."""
    values = list(row)
    values[6] = DeliveryStatus(values[6])
    return OutboxRow(*values)


def attempt_row(row: Sequence[Any]) -> DeliveryAttempt:
    return DeliveryAttempt(*row)


#: DeliveryResult's fields, every one a scalar (bound one by one, as completions are)
_RESULT_FIELDS = tuple(f.name for f in dataclasses.fields(DeliveryResult))


def delivery_params(result: DeliveryResult) -> dict[str, Any]:
    params = {name: getattr(result, name) for name in _RESULT_FIELDS}
    params["status"] = DeliveryStatus(result.status).value
    return params


def secrets_in_use(rows: Iterable[Sequence[Any]], now: float, overlap_s: float) -> list[str]:
    """The secrets that sign now, newest first: the current one, and those retired less
    than ``overlap_s`` ago (receivers accept either while they switch)."""
    live = [
        (created, secret)
        for secret, created, retired in rows
        if retired is None or retired + overlap_s > now
    ]
    return [secret for _, secret in sorted(live, reverse=True)]


def outbox_claim_params(
    limit: int, *, worker_id: str, lease_s: float, now: float
) -> dict[str, Any]:
    return {"limit": limit, "worker_id": worker_id, "now": now, "lease_expires_at": now + lease_s}
