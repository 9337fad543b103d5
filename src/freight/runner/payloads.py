"""Turning stored inputs into what a model asked for, and its outputs into objects.

Inputs arrive by reference: small JSON inline in the frame, anything else as an
object-store key. On the local backend a ``Path`` input *is* the stored file
(no copy); on S3 it is streamed to a temporary file first (removed after the
batch). A ``File`` output is consumed: moved into place locally, uploaded from
disk to S3 and then deleted. Every output ends up in the object store under the
prediction's id: small ones are handed back in the result frame for the agent
to store with the rest of the batch (:class:`~freight.runner.protocol.Inline`,
:class:`~freight.runner.protocol.HandedBack`), larger ones are written here
(:class:`~freight.runner.protocol.Stored`); JSON under the inline limit also
travels back as text so the database row can carry it.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from freight.keys import output_key
from freight.media import JSON, OCTET_STREAM, is_json_type
from freight.model import File, InputKind, Payload
from freight.runner.protocol import BatchItem, HandedBack, Inline, Stored
from freight.storage.base import Storage
from freight.tensors import Encoded, Tensor, Wanted, decode_request, encode_response

#: outputs up to this size go back to the agent in the result frame, and the agent
#: stores those of a whole batch at once (one transaction on the local backend)
HANDBACK_MAX_BYTES = 64 * 1024

Output = Inline | HandedBack | Stored


@dataclass(frozen=True, slots=True)
class TensorModel:
    """What the runner needs of a tensor model to turn requests into arrays and its
    return into answers (:mod:`freight.tensors`)."""

    name: str
    outputs: tuple[Tensor, ...] = ()
    one_array: bool = False  # predict takes one np.ndarray, not the inputs by name


class PayloadIO:
    """Reads one batch's inputs and writes its outputs (one per runner process)."""

    def __init__(
        self,
        storage: Storage,
        input_kind: str,
        inline_max_bytes: int,
        tensors: TensorModel | None = None,
    ) -> None:
        self._storage = storage
        self._kind = input_kind
        self._inline_max = inline_max_bytes
        self._temp: list[Path] = []
        self._tensors = tensors
        self._wanted: dict[str, Wanted] = {}  # what each tensor request asks of its answer

    @property
    def storage(self) -> Storage:
        """The object store (chunk predictions read and write their objects there)."""
        return self._storage

    @property
    def input_kind(self) -> str:
        return self._kind

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

    async def read_input(self, item: BatchItem) -> Any:
        inline, key = item.input_json, item.input_key
        content_type = item.content_type or OCTET_STREAM
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
        if self._kind == InputKind.TENSORS:
            return await self._tensor_input(item, content_type)
        path = await self._local_file(_required(key))
        if self._kind == InputKind.PATH:
            return path
        return Payload(path=path, content_type=content_type, size=path.stat().st_size)

    async def _tensor_input(self, item: BatchItem, content_type: str) -> Any:
        """A tensor request as numpy arrays (one array for a model that takes one)."""
        stored: bytes | dict[str, Any]
        if item.input_json is not None:
            stored = orjson.loads(item.input_json)
        else:
            stored = await self._storage.get(_required(item.input_key))
        arrays, wanted = decode_request(stored, content_type)
        self._wanted[item.id] = wanted
        if self._tensors is not None and self._tensors.one_array:
            if len(arrays) != 1:
                raise TypeError(f"this model takes one array, not {len(arrays)} inputs")
            return next(iter(arrays.values()))
        return arrays

    async def write_output(self, prediction_id: str, output: Any) -> Output:
        """Small outputs are handed back to the agent; the others stored here. A value
        that is not JSON-able raises TypeError (that prediction's ``output_error``); a
        tensor model's return is first made the protocol's answer."""
        key = output_key(prediction_id)
        if self._tensors is not None:
            wanted = self._wanted.pop(prediction_id, Wanted())
            output = encode_response(output, self._tensors.outputs, wanted, self._tensors.name)
        if isinstance(output, Encoded):
            if len(output.data) <= HANDBACK_MAX_BYTES:
                return HandedBack(prediction_id, output.data, output.content_type)
            await self._storage.put(key, output.data, content_type=output.content_type)
            return Stored(prediction_id, key, output.content_type, len(output.data))
        if isinstance(output, File):
            # A File output is handed over: the local backend moves it into place, S3
            # uploads it from disk (multipart, in parts) and leaves it, so drop it here
            # either way, or every large output would stay behind on the runner's disk.
            source = Path(output.path)
            try:
                size = await self._storage.put_file(key, source, content_type=output.content_type)
            finally:
                source.unlink(missing_ok=True)
            return Stored(prediction_id, key, output.content_type, size)
        if isinstance(output, bytes | bytearray | memoryview):
            data = bytes(output)
            if len(data) <= HANDBACK_MAX_BYTES:
                return HandedBack(prediction_id, data, OCTET_STREAM)
            await self._storage.put(key, data, content_type=OCTET_STREAM)
            return Stored(prediction_id, key, OCTET_STREAM, len(data))
        data = orjson.dumps(output, option=orjson.OPT_SERIALIZE_NUMPY)
        inline = len(data) <= self._inline_max
        if inline and len(data) <= HANDBACK_MAX_BYTES:
            return Inline(prediction_id, data.decode())
        await self._storage.put(key, data, content_type=JSON)
        return Stored(prediction_id, key, JSON, len(data), data.decode() if inline else None)

    def cleanup(self) -> None:
        """Remove temporary input files of the last batch."""
        for path in self._temp:
            path.unlink(missing_ok=True)
        self._temp.clear()
        self._wanted.clear()


def _required(key: str | None) -> str:
    if key is None:
        raise ValueError("the prediction has no stored input")
    return key


__all__ = ["HANDBACK_MAX_BYTES", "Output", "PayloadIO"]
