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

LOCAL = "#/$defs/"
COMPONENTS = "#/components/schemas/"


def install(app: FastAPI) -> None:
    """Build the app's document with local definitions hoisted into components."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = hoist_definitions(generate())
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
