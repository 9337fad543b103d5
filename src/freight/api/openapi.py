"""The OpenAPI document, made whole: every ``$ref`` in it resolves.

The create routes read their bodies themselves (limits first, then the model:
see ``bodies``), so they declare the body schema through ``openapi_extra`` with
pydantic's own :meth:`~pydantic.BaseModel.model_json_schema`. That schema keeps
its nested models (``WebhookIn``, ``BatchUpload``) under a local ``$defs`` and
points at them as ``#/$defs/...`` — a pointer into the *document's* root, where
nothing is. :func:`install` makes the app's generator move every such
definition into ``components/schemas`` and point the references there, once,
when the document is first built (FastAPI caches it).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from freight import errors
from freight.api.errors import responses

LOCAL = "#/$defs/"
COMPONENTS = "#/components/schemas/"


def install(app: FastAPI) -> None:
    """Build the app's document with local definitions hoisted into components, and
    the answers of authentication on every operation that needs it."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_auth(hoist_definitions(generate()))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def hoist_definitions(document: dict[str, Any]) -> dict[str, Any]:
    """Move every ``$defs`` of ``document`` into ``components/schemas`` and rewrite the
    ``#/$defs/<name>`` references to match (in place; returns the document). Raises
    ValueError where two different schemas would take one name."""
    schemas: dict[str, Any] = document.setdefault("components", {}).setdefault("schemas", {})
    found: dict[str, Any] = {}
    _collect(document, found)
    for name, schema in found.items():
        if name in schemas and schemas[name] != schema:
            raise ValueError(f"two different schemas are named {name!r} in the document")
        schemas[name] = schema
    _rewrite(document)
    return document


#: what an operation that needs a key may answer besides its own errors
AUTH_ERRORS = (errors.UnauthorizedError, errors.ForbiddenError, errors.QuotaExceededError)


def document_auth(document: dict[str, Any]) -> dict[str, Any]:
    """Add 401, 403 and 429 (``too_many_auth_failures``) to every operation with a
    security requirement, merged with what it documents for those statuses."""
    extra = {
        str(status): answer
        for status, answer in responses(*AUTH_ERRORS).items()
        if status not in responses()  # the common ones every operation has already
    }
    for item in document.get("paths", {}).values():
        for operation in item.values():
            if not isinstance(operation, dict) or not operation.get("security"):
                continue
            documented = operation.setdefault("responses", {})
            for status, answer in extra.items():
                mine = documented.get(status)
                if mine is None:
                    documented[status] = _resolved(answer)
                    continue
                mine["description"] = f"{mine['description']}; {answer['description']}"
                if answer.get("headers"):
                    mine.setdefault("headers", {}).update(answer["headers"])
    return document


def _resolved(answer: dict[str, Any]) -> dict[str, Any]:
    """A ``responses()`` entry as the document holds it (the model as a $ref)."""
    shown = {k: v for k, v in answer.items() if k != "model"}
    ref = {"$ref": f"{COMPONENTS}{answer['model'].__name__}"}
    shown["content"] = {"application/json": {"schema": ref}}
    return shown


def _collect(node: Any, found: dict[str, Any]) -> None:
    """Pop each ``$defs`` under ``node`` into ``found`` (a nested one too)."""
    if isinstance(node, dict):
        defs = node.pop("$defs", None)
        for name, schema in (defs or {}).items():
            _collect(schema, found)
            if name in found and found[name] != schema:
                raise ValueError(f"two different schemas are named {name!r} in the document")
            found[name] = schema
        for value in node.values():
            _collect(value, found)
    elif isinstance(node, list):
        for item in node:
            _collect(item, found)


def _rewrite(node: Any) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(LOCAL):
            node["$ref"] = COMPONENTS + ref.removeprefix(LOCAL)
        for value in node.values():
            _rewrite(value)
    elif isinstance(node, list):
        for item in node:
            _rewrite(item)


__all__ = ["hoist_definitions", "install"]
