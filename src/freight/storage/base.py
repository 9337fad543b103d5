"""The object-store seam: streaming put/get, stat, list, delete, presign.

Implementations: :class:`freight.storage.local.LocalStorage` (a directory; its
presigned URLs are HMAC-signed, expiring routes of freight's own API) and
:class:`freight.storage.s3.S3Storage` (any S3-compatible store through obstore);
:class:`freight.storage.memory.MemoryStorage` (a dict, for tests) passes the same
contract suite.
Keys are relative, ``/``-separated (e.g. ``inputs/<id>``, ``outputs/<id>``).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

Presign = Callable[[str, int], str]
"""``(key, expires_s) -> URL``: how a backend without URLs of its own (a local
directory, memory) presigns a download. The server passes one built on its own
signed route; the backend knows no HTTP."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    content_type: str | None = None


class Storage(Protocol):
    async def put(self, key: str, data: bytes, *, content_type: str | None = None) -> int:
        """Write a whole (small) object; returns its size."""

    async def put_many(self, items: list[tuple[str, bytes]]) -> None:
        """Write several small objects at once (one transaction / concurrent requests):
        how an agent stores the small outputs of a whole batch."""

    async def put_stream(
        self,
        key: str,
        chunks: AsyncIterable[bytes],
        *,
        content_type: str | None = None,
        max_bytes: int | None = None,
    ) -> int:
        """Stream an object in; nothing is held whole in memory. Past ``max_bytes`` raise
        PayloadTooLargeError and leave no object behind. Returns the size written."""

    async def put_file(self, key: str, path: Path, *, content_type: str | None = None) -> int:
        """Store a local file (moved into place when the backend is local and ``path``
        is on the same filesystem: no copy)."""

    def get_stream(self, key: str, *, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        """Stream an object out. NotFoundError if it does not exist."""

    async def get(self, key: str) -> bytes:
        """Read a whole (small) object."""

    async def stat(self, key: str) -> ObjectInfo | None: ...

    async def delete(self, key: str) -> None:
        """Delete; deleting a missing object is not an error."""

    async def presign_get(self, key: str, *, expires_s: int) -> str:
        """A URL anyone can GET until it expires (absolute for S3; for local storage
        a path of freight's API: the API prefixes its own base URL)."""

    def key_for_uri(self, uri: str) -> str | None:
        """The key of an object named by a URI of this store (``s3://bucket/…`` for S3,
        ``file:///…`` under the root for a directory); None when the URI is elsewhere."""

    def uri_for_key(self, key: str) -> str:
        """The URI of this store that names ``key`` (the inverse of :meth:`key_for_uri`):
        what a client of the store itself (an S3 client) reads the object by."""

    def local_path(self, key: str) -> Path | None:
        """The object's file when the backend is a local directory, else None."""

    # last in the class: below it, ``list`` in an annotation would name this method
    def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, in key order (byte order),
        streamed page by page (S3: obstore's list, paginated; never the whole listing in
        memory at once where the backend pages).

        ``prefix`` is a plain string prefix, not a path: ``data/x`` matches ``data/x1.csv``
        and ``data/x/y``; ``""`` lists everything. InvalidRequestError (``invalid_key``)
        when no valid key could start with it (absolute, ``//``, a ``..`` segment, a
        character outside the key alphabet). Objects still being written (a stream in
        flight, a backend's temporary files) never appear. ``content_type`` is filled in
        where the listing knows it (memory), else None (local, S3: ask :meth:`stat`).
        """
