"""Turning stored inputs into what a model asked for, and its outputs into objects.

Inputs arrive by reference: small JSON inline in the frame, anything else as an
object-store key. On the local backend a ``Path`` input *is* the stored file
(no copy); on S3 it is streamed to a temporary file first (removed after the
batch). A ``File`` output is consumed: moved into place locally, uploaded from
disk to S3 and then deleted. Outputs are written to the object store under the
prediction's id; small JSON also travels back inline so the database row can
carry it.
"""

from __future__ import annotations

import base64
import os
import tempfile
from pathlib import Path
from typing import Any

import orjson

from freight.keys import output_key
from freight.media import is_json_type
from freight.model import File, InputKind, Payload
from freight.storage.base import Storage

#: outputs up to this size go back to the agent in the result frame, and the agent
#: stores those of a whole batch at once (one transaction on the local backend)
HANDBACK_MAX_BYTES = 64 * 1024



class PayloadIO:
    def __init__(self, storage: Storage, input_kind: str, inline_max_bytes: int) -> None:
        self._storage = storage
        self._kind = input_kind
        self._inline_max = inline_max_bytes
        self._temp: list[Path] = []

    async def _local_file(self, key: str) -> Path:
        path = self._storage.local_path(key)
        if path is not None:
            return path
        fd, name = tempfile.mkstemp(prefix="freight-in-")
        self._temp.append(Path(name))  # before streaming: a failed download is cleaned too
        with os.fdopen(fd, "wb") as f:
            async for chunk in self._storage.get_stream(key):  # bounded chunks, never whole
                f.write(chunk)
        return Path(name)

    async def read_input(self, item: dict[str, Any]) -> Any:
        inline: str | None = item.get("input_json")
        key: str | None = item.get("input_key")
        content_type = item.get("content_type") or "application/octet-stream"
        if self._kind == InputKind.JSON:
            if inline is not None:
                return orjson.loads(inline)
            if not is_json_type(content_type):
                raise TypeError(f"this model takes JSON input, not {content_type}")
            return orjson.loads(await self._storage.get(_required(key)))
        if self._kind == InputKind.BYTES:
            return (
                inline.encode() if inline is not None else await self._storage.get(_required(key))
            )
        path = await self._local_file(_required(key))
        if self._kind == InputKind.PATH:
            return path
        return Payload(path=path, content_type=content_type, size=path.stat().st_size)

    async def write_output(self, prediction_id: str, output: Any) -> dict[str, Any]:
        key = output_key(prediction_id)
        if isinstance(output, File):
            # A File output is handed over: the local backend moves it into place, S3
            # uploads it from disk (multipart, in parts) and leaves it, so drop it here
            # either way, or every large output would stay behind on the runner's disk.
            source = Path(output.path)
            try:
                size = await self._storage.put_file(key, source, content_type=output.content_type)
            finally:
                source.unlink(missing_ok=True)
            return {"output_key": key, "content_type": output.content_type, "bytes": size}
        if isinstance(output, bytes | bytearray | memoryview):
            data = bytes(output)
            content_type = "application/octet-stream"
            if len(data) <= HANDBACK_MAX_BYTES:
                return {
                    "output_b64": base64.b64encode(data).decode(),
                    "content_type": content_type,
                    "bytes": len(data),
                }
            await self._storage.put(key, data, content_type=content_type)
            return {"output_key": key, "content_type": content_type, "bytes": len(data)}
        data = orjson.dumps(output, option=orjson.OPT_SERIALIZE_NUMPY)
        inline = data.decode() if len(data) <= self._inline_max else None
        result: dict[str, Any] = {
            "content_type": "application/json",
            "bytes": len(data),
            "output_json": inline,
        }
        if inline is None or len(data) > HANDBACK_MAX_BYTES:
            await self._storage.put(key, data, content_type="application/json")
            result["output_key"] = key
        return result

    def cleanup(self) -> None:
        """Remove temporary input files of the last batch."""
        for path in self._temp:
            path.unlink(missing_ok=True)
        self._temp.clear()


def _required(key: str | None) -> str:
    if key is None:
        raise ValueError("the prediction has no stored input")
    return key


__all__ = ["PayloadIO"]
