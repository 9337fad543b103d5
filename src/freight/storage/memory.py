"""Object storage in memory: a dict of bytes, for tests of the logic above storage.

Why it exists: the service's rules that span store and storage (an input
written before its row and deleted when the row fails, an upload race whose
loser must not delete the winner's object) are tested without a directory or
an S3 server. It passes the same contract suite as the real backends
(``tests/contract/test_storage.py``), apart from the one test that says a
stream is never held whole in memory: here the object *is* memory.

Behaviour follows :class:`~freight.storage.local.LocalStorage` where the two
could differ: the same key alphabet (:func:`validate_key`), presigned URLs
that are freight API paths signed with :class:`~freight.signing.UrlSigner`,
``put_file`` leaving the source in place (a copy, as S3 does), no local paths.
Writes are all-or-nothing: a stream is collected aside and stored only once
it ended within ``max_bytes``, so a failed upload never shows under its key
and never replaces an older object. Content types are kept (as S3 does).
URL: ``memory://`` (a fresh, empty storage per :func:`open_storage` call).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

from freight.errors import ConfigError, NotFoundError, PayloadTooLargeError
from freight.storage.base import ObjectInfo, Presign
from freight.storage.local import validate_key, validate_prefix

__all__ = ["MemoryStorage"]


class MemoryStorage:
    """``key -> (bytes, content type)`` in a dict; see the module docstring."""

    def __init__(self, presign: Presign | None = None) -> None:
        self._presign = presign
        self._objects: dict[str, tuple[bytes, str | None]] = {}

    def __repr__(self) -> str:
        return f"MemoryStorage({len(self._objects)} objects)"

    def keys(self) -> list[str]:
        """Every stored key, sorted: what a test asserts was left behind."""
        return sorted(self._objects)

    # -- writes --------------------------------------------------------------

    async def put(self, key: str, data: bytes, *, content_type: str | None = None) -> int:
        self._objects[validate_key(key)] = (bytes(data), content_type)
        return len(data)

    async def put_many(self, items: list[tuple[str, bytes]]) -> None:
        """Every key is checked before any is written: one bad key writes nothing."""
        checked = [(validate_key(k), bytes(d)) for k, d in items]
        for key, data in checked:
            self._objects[key] = (data, None)

    async def put_stream(
        self,
        key: str,
        chunks: AsyncIterable[bytes],
        *,
        content_type: str | None = None,
        max_bytes: int | None = None,
    ) -> int:
        validate_key(key)
        buffer = bytearray()
        async for chunk in chunks:
            if max_bytes is not None and len(buffer) + len(chunk) > max_bytes:
                raise PayloadTooLargeError(
                    f"object {key!r} is over the limit of {max_bytes} bytes",
                    key=key,
                    max_bytes=max_bytes,
                )
            buffer += chunk
        self._objects[key] = (bytes(buffer), content_type)
        return len(buffer)

    async def put_file(self, key: str, path: Path, *, content_type: str | None = None) -> int:
        """Copy the file in (the source stays, as with S3); read in a thread."""
        validate_key(key)
        try:
            data = await asyncio.to_thread(Path(path).read_bytes)
        except FileNotFoundError:
            raise NotFoundError(f"no file {path}", path=str(path)) from None
        self._objects[key] = (data, content_type)
        return len(data)

    async def delete(self, key: str) -> None:
        self._objects.pop(validate_key(key), None)

    # -- reads ---------------------------------------------------------------

    def _data(self, key: str) -> bytes:
        try:
            return self._objects[validate_key(key)][0]
        except KeyError:
            raise NotFoundError(f"no object {key!r}", key=key) from None

    async def get_stream(self, key: str, *, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        """The object in ``chunk_size`` pieces, from the bytes as they were at the start
        (an overwrite meanwhile does not tear the stream: objects are immutable)."""
        data = self._data(key)
        for start in range(0, len(data), max(chunk_size, 1)):
            yield data[start : start + chunk_size]

    async def get(self, key: str) -> bytes:
        return self._data(key)

    async def stat(self, key: str) -> ObjectInfo | None:
        found = self._objects.get(validate_key(key))
        if found is None:
            return None
        return ObjectInfo(key=key, size=len(found[0]), content_type=found[1])

    # -- URLs and paths ------------------------------------------------------

    async def presign_get(self, key: str, *, expires_s: int) -> str:
        """A URL from the server's presigner, exactly as local storage makes it."""
        validate_key(key)
        if self._presign is None:
            raise ConfigError("memory storage was opened without a presigner: cannot presign")
        return self._presign(key, expires_s)

    def key_for_uri(self, uri: str) -> str | None:
        """``memory:///<key>`` -> ``<key>``; None for any other URI."""
        parts = urlsplit(uri)
        if parts.scheme != "memory" or parts.netloc or not parts.path.startswith("/"):
            return None
        return validate_key(parts.path[1:])

    def uri_for_key(self, key: str) -> str:
        """``<key>`` -> ``memory:///<key>``."""
        return f"memory:///{validate_key(key)}"

    def local_path(self, key: str) -> Path | None:
        """Never a file: callers that want one must stream the object out instead."""
        return None

    # -- listing (last: below it, ``list`` would name this method) -------------

    async def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        """The objects under ``prefix`` in key order, with their content types: the keys
        as they were at the start (an object deleted meanwhile is skipped, an object
        overwritten meanwhile is listed as it is when reached)."""
        validate_prefix(prefix)
        for key in sorted(k for k in self._objects if k.startswith(prefix)):
            found = self._objects.get(key)
            if found is not None:
                yield ObjectInfo(key=key, size=len(found[0]), content_type=found[1])
