"""What a prediction's input becomes: objects written before the row, and a run's
JSON kept on the row so its templates read it.

Part of the prediction service (:mod:`freight.service` owns the rows): an input
is written to the object store under the prediction's id before the row that
points at it; an ``input_uri`` is read where it is, never copied; an upload
streams in under a key of its own.

A pipeline run's input reads in templates exactly like an inline one when it is
one JSON value of at most ``max_json_bytes`` (the most a JSON body may be),
whichever way it came: sent inline, uploaded as ``application/json`` (or a
``+json`` type), or named by ``input_uri``. It is parsed (400 ``invalid_json``)
and kept on the row. Any other input is a reference, which a pipeline can take
whole but not read into; a pipeline that reads into its input refuses it before
its run starts: 415 for a body that is not one JSON value, 413
``json_input_too_large`` past the limit (see :mod:`freight.pipelines.inputs`).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from freight.config import Settings
from freight.errors import (
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
)
from freight.keys import check_readable, input_key, key_of_uri
from freight.media import JSON, OCTET_STREAM, is_json_value_type
from freight.pipelines.inputs import reads_into_input
from freight.prediction import Kind, Prediction, Status
from freight.project import Pipelines
from freight.storage.base import ObjectInfo, Storage


@dataclass(slots=True)
class NewInput:
    """The input of a prediction being created: JSON, raw bytes, a URI, or none yet."""

    json: Any = None
    has_json: bool = False
    data: AsyncIterable[bytes] | None = None
    content_type: str | None = None
    uri: str | None = None


class Kept:
    """The first ``limit`` bytes of a stream as it passes (``overflow`` past them)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[bytes] = []
        self.size = 0
        self.overflow = False

    async def tee(self, chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            self.size += len(chunk)
            if self.size > self.limit:
                self.overflow, self.parts = True, []
            elif not self.overflow:
                self.parts.append(chunk)
            yield chunk


def json_text(data: bytes) -> str:
    """One JSON value, compact (400 ``invalid_json`` naming the fault)."""
    try:
        return orjson.dumps(orjson.loads(data)).decode()
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(
            f"the input is not valid JSON: {exc}", code="invalid_json"
        ) from None


class Intake:
    def __init__(self, settings: Settings, storage: Storage, pipelines: Pipelines) -> None:
        self._settings = settings
        self._storage = storage
        self._pipelines = pipelines

    async def write(self, row: Prediction, new_input: NewInput) -> str | None:
        """Store the input under the prediction's id; return the key written (or None).
        No input yet: the row awaits its upload."""
        key = input_key(row.id)
        if new_input.has_json:
            data = orjson.dumps(new_input.json)
            if len(data) > self._settings.max_payload_bytes:
                raise PayloadTooLargeError(
                    f"the input is {len(data)} bytes, over the limit of "
                    f"{self._settings.max_payload_bytes}",
                    size=len(data),
                    limit=self._settings.max_payload_bytes,
                )
            await self._storage.put(key, data, content_type=JSON)
            if len(data) <= self._settings.inline_input_max_bytes:
                row.input_json = data.decode()
            row.input_key, row.input_content_type, row.input_bytes = key, JSON, len(data)
            return key
        if new_input.data is not None:
            content_type = new_input.content_type or OCTET_STREAM
            size = await self._storage.put_stream(
                key,
                new_input.data,
                content_type=content_type,
                max_bytes=self._settings.max_payload_bytes,
            )
            row.input_key, row.input_content_type, row.input_bytes = key, content_type, size
            return key
        if new_input.uri is not None:
            await self._by_uri(row, new_input.uri, new_input.content_type)
            return None
        row.status, row.queued_at = Status.AWAITING_INPUT, None
        row.upload_expires_at = row.created_at + self._settings.upload_url_expires_s
        return None

    async def _by_uri(self, row: Prediction, uri: str, content_type: str | None) -> None:
        info = await self._storage.stat(self.key_of(uri))
        if info is None:
            raise NotFoundError(f"no object at {uri}", code="input_not_found")
        row.input_key, row.input_bytes = info.key, info.size
        row.input_content_type = content_type or info.content_type or JSON
        if row.kind == Kind.PIPELINE:
            row.input_json = await self._object_json(row, info)

    def key_of(self, uri: str) -> str:
        """``freight://<key>``, or a URI of the configured store (``s3://bucket/key``,
        ``file:///root/key``): inputs are read where they are, not copied."""
        key = key_of_uri(uri, self._storage.key_for_uri)
        if not key:
            raise InvalidRequestError(
                f"input_uri {uri!r} is not in freight's object store: give freight://<key> "
                "or a URI of the configured store",
                code="unsupported_input_uri",
            )
        return check_readable(key, uri)

    # -- uploads ---------------------------------------------------------------------
    def kept_for(self, row: Prediction, content_type: str) -> Kept | None:
        """What of a run's upload to keep for parsing (None: nothing to parse); refuses
        one its templates cannot read before a byte is stored."""
        if row.kind != Kind.PIPELINE:
            return None
        if not is_json_value_type(content_type):
            self._refuse_unreadable(row, content_type, 0)
            return None
        return Kept(self._settings.max_json_bytes)

    async def put_upload(
        self, key: str, chunks: AsyncIterable[bytes], content_type: str, kept: Kept | None
    ) -> int:
        return await self._storage.put_stream(
            key,
            chunks if kept is None else kept.tee(chunks),
            content_type=content_type,
            max_bytes=self._settings.max_payload_bytes,
        )

    def upload_json(self, row: Prediction, kept: Kept | None, size: int) -> str | None:
        """The uploaded JSON to keep on a run's row (None: it stays a reference)."""
        if kept is None:
            return None
        if kept.overflow:
            self._refuse_unreadable(row, JSON, size)
            return None
        return json_text(b"".join(kept.parts))

    # -- what a run's templates can read -----------------------------------------------
    async def _object_json(self, row: Prediction, info: ObjectInfo) -> str | None:
        """A run's ``input_uri`` object, parsed when it is JSON small enough to keep."""
        content_type = row.input_content_type
        if not (is_json_value_type(content_type) and info.size <= self._settings.max_json_bytes):
            self._refuse_unreadable(row, content_type, info.size)
            return None
        return json_text(await self._storage.get(info.key))

    def _reads_into_input(self, target: str) -> bool:
        specs = self._pipelines.specs
        return target in specs and reads_into_input(specs[target], specs.__getitem__)

    def _refuse_unreadable(self, row: Prediction, content_type: str | None, size: int) -> None:
        """415 / 413 for an input the run's templates read into but cannot read: not
        one JSON value, or JSON too large to keep on the row."""
        if not self._reads_into_input(row.target):
            return
        limit = self._settings.max_json_bytes
        if not is_json_value_type(content_type):
            raise UnsupportedMediaTypeError(
                f"pipeline {row.target!r} reads fields of its input, so it takes one JSON "
                f"value (application/json), not {content_type or 'no content type'!r}",
                target=row.target,
                content_type=content_type,
            )
        if size > limit:
            raise PayloadTooLargeError(
                f"pipeline {row.target!r} reads fields of its input, which must then be "
                f"JSON of at most {limit} bytes (max_json_bytes); this one is {size}",
                code="json_input_too_large",
                size=size,
                limit=limit,
            )


__all__ = ["Intake", "Kept", "NewInput", "json_text"]
