"""Media types freight treats specially: which content types are JSON.

A domain fact shared by the API (parse the body or stream it), the runner
(hand a JSON model parsed input) and the service.
"""

from __future__ import annotations

JSON = "application/json"
OCTET_STREAM = "application/octet-stream"
JSON_TYPES = ("application/json", "application/jsonl", "text/json")


def base_type(content_type: str | None) -> str:
    """``"Application/JSON; charset=utf-8"`` -> ``"application/json"``."""
    return (content_type or "").split(";")[0].strip().lower()


def is_json_type(content_type: str | None) -> bool:
    base = base_type(content_type)
    return base in JSON_TYPES or base.endswith("+json")


def is_json_value_type(content_type: str | None) -> bool:
    """A JSON type whose body is one value (JSON Lines is many: not one input)."""
    return is_json_type(content_type) and base_type(content_type) != "application/jsonl"


__all__ = [
    "JSON",
    "JSON_TYPES",
    "OCTET_STREAM",
    "base_type",
    "is_json_type",
    "is_json_value_type",
]
