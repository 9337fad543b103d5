"""Pure translation between claimed rows, runner frames and completions (no I/O)."""

from __future__ import annotations

import base64
from typing import Any

import orjson

from freight.keys import output_key
from freight.prediction import Completion, ErrorCode, Prediction, Status


def item_message(row: Prediction) -> dict[str, Any]:
    """What a runner needs to read one input: inline JSON or an object key."""
    return {
        "id": row.id,
        "input_json": row.input_json,
        "input_key": row.input_key,
        "content_type": row.input_content_type,
        "size": row.input_bytes,
    }


def handback_objects(result: dict[str, Any]) -> list[tuple[str, bytes]]:
    """Small outputs the runner handed back instead of storing them: ``(key, data)``
    for each, and the result's items updated to point at those keys."""
    objects: list[tuple[str, bytes]] = []
    for item in result.get("items", []):
        if not item.get("ok") or item.get("output_key"):
            continue
        if item.get("output_b64") is not None:
            data = base64.b64decode(item.pop("output_b64"))
        elif item.get("output_json") is not None:
            data = item["output_json"].encode()
        else:
            continue
        item["output_key"] = output_key(item["id"])
        objects.append((item["output_key"], data))
    return objects


def completions_from_result(
    rows: list[Prediction],
    result: dict[str, Any],
    worker_id: str,
    now: float,
) -> list[Completion]:
    """One completion per claimed row; a row the runner did not answer for fails."""
    by_id = {item["id"]: item for item in result.get("items", [])}
    done: list[Completion] = []
    for row in rows:
        item = by_id.get(row.id)
        base = Completion(
            id=row.id,
            attempt=row.attempts,
            worker_id=worker_id,
            status=Status.FAILED,
            finished_at=now,
            batch_size=len(rows),
        )
        if item is None:
            base.error_code = ErrorCode.MODEL_ERROR
            base.error_message = "the runner returned no result for this prediction"
        elif item.get("ok"):
            base.status = Status.SUCCEEDED
            base.output_json = item.get("output_json")
            base.output_key = item.get("output_key")
            base.output_content_type = item.get("content_type")
            base.output_bytes = item.get("bytes")
        else:
            error = item.get("error") or {}
            base.error_code = error.get("code", ErrorCode.MODEL_ERROR)
            base.error_message = error.get("message", "the model failed")
            base.error_detail = orjson.dumps(error.get("detail") or {}).decode()
        done.append(base)
    return done


def failed(
    rows: list[Prediction],
    worker_id: str,
    now: float,
    code: str,
    message: str,
) -> list[Completion]:
    return [
        Completion(
            id=row.id,
            attempt=row.attempts,
            worker_id=worker_id,
            status=Status.FAILED,
            finished_at=now,
            error_code=code,
            error_message=message,
            batch_size=len(rows),
        )
        for row in rows
    ]
