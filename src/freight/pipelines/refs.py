"""Object references: how a pipeline passes a stored (large or binary) value.

A value freight keeps as an object reads, in templates and in a run's output, as
``{"object": "freight://<key>", "content_type": …, "bytes": …}``. Only freight
makes one: a :class:`Stored` is built from a row's own object key, and a row whose
inline JSON holds references lists their keys (``output_refs``), so a caller's
JSON *shaped* like a reference stays plain data — it can neither make a step read
another object nor be given a download URL. A template may pass a reference on
whole or read its three fields; reading into it fails the step with a clear
message instead of a silent null.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from freight.pipelines.template import TemplateError

OBJECT_PREFIX = "freight://"
FIELDS = frozenset({"object", "content_type", "bytes"})


class Stored(dict[str, Any]):
    """A reference freight made to one of its objects (see the module docstring)."""

    @classmethod
    def of(cls, key: str, content_type: str | None, size: int | None) -> Stored:
        return cls(object=f"{OBJECT_PREFIX}{key}", content_type=content_type, bytes=size)

    @property
    def key(self) -> str:
        return str(self["object"]).removeprefix(OBJECT_PREFIX)

    def get(self, key: str, default: Any = None) -> Any:
        """JMESPath reads fields with ``get``: only the reference's own three exist."""
        if key in FIELDS:
            return super().get(key, default)
        raise TemplateError(
            f"{self['object']} is kept as an object ({self['bytes']} bytes of "
            f"{self['content_type']}): a template can pass it on whole, not read {key!r} in it"
        )


def stored_in(value: Any) -> Iterator[Stored]:
    """Every reference inside ``value``."""
    if isinstance(value, Stored):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from stored_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from stored_in(item)


def refs_text(value: Any) -> str | None:
    """The ``output_refs`` of a row whose inline JSON is ``value``: its references' keys."""
    keys = sorted({ref.key for ref in stored_in(value)})
    return orjson.dumps(keys).decode() if keys else None


def refs_of(text: str | None) -> frozenset[str]:
    return frozenset(orjson.loads(text)) if text else frozenset()


def reference_key(value: Any) -> str | None:
    """The key a value shaped like a reference names (whoever made it), else None."""
    if not isinstance(value, dict) or set(value) != FIELDS:
        return None
    uri = value["object"]
    if not isinstance(uri, str) or not uri.startswith(OBJECT_PREFIX):
        return None
    return uri.removeprefix(OBJECT_PREFIX)


def restore(value: Any, keys: frozenset[str]) -> Any:
    """Parsed JSON with the references freight recorded (``keys``) made :class:`Stored`
    again; anything else shaped like one stays a plain dict."""
    if isinstance(value, dict):
        if reference_key(value) in keys:
            return Stored(value)
        return {k: restore(v, keys) for k, v in value.items()}
    if isinstance(value, list):
        return [restore(v, keys) for v in value]
    return value


__all__ = [
    "FIELDS",
    "OBJECT_PREFIX",
    "Stored",
    "reference_key",
    "refs_of",
    "refs_text",
    "restore",
    "stored_in",
]
