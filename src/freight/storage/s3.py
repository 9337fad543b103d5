"""Object storage on any S3-compatible store, through obstore (Rust ``object_store``).

obstore is natively async and streams both ways: ``put_async`` takes an async
iterator (an ASGI request body goes straight in, as a multipart upload) and
``get_async(...).stream()`` yields chunks. Behaviour pinned by the contract
tests against a moto server:

- a Python exception raised by the iterator fed to ``put_async`` propagates
  unchanged and the multipart upload is aborted: no object, no pending upload.
  So ``put_stream`` enforces ``max_bytes`` by raising from its counting wrapper,
  and need not delete anything afterwards (deleting would destroy an older
  object under the same key, which a failed overwrite must leave alone);
- a missing object surfaces as the builtin ``FileNotFoundError``;
- ``sign_async`` honours the store's prefix and gives absolute URLs.

Content types are stored as S3 object metadata (``Content-Type``) because S3
serves presigned downloads itself; :meth:`S3Storage.stat` reads it back.
(A listing does not carry them: ListObjectsV2 returns no Content-Type, so
:meth:`S3Storage.list` gives ``content_type=None`` rather than a HEAD per object.)

Listing goes through ``obstore.list`` (ListObjectsV2 pages of 1,000 keys, fetched
as the caller iterates). obstore's prefixes are whole path segments (``data/x``
matches ``data/x/y``, not ``data/x1``), so the listing asks for the prefix's
directory, starting just before the prefix (``offset``, S3's ``start-after``),
keeps the keys that start with the prefix and stops at the first key past them.
That relies on the server listing in byte order, as S3 general-purpose buckets,
MinIO and moto do; a key out of order raises StorageError rather than breaking the
contract silently (S3 Express directory buckets list unordered: unsupported).

URL: ``s3://bucket[/prefix]?endpoint=http://host:port&region=us-east-1``, plus
optional ``access_key_id``/``secret_access_key``/``session_token`` (else the usual
``AWS_*`` environment). An ``http://`` endpoint turns on ``allow_http``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

import obstore
from obstore.store import S3Store

from freight.errors import (
    ConfigError,
    FreightError,
    NotFoundError,
    PayloadTooLargeError,
    StorageError,
)
from freight.storage.base import ObjectInfo
from freight.storage.local import validate_key, validate_prefix

if TYPE_CHECKING:
    from obstore import Attributes

__all__ = ["S3Storage"]

_QUERY_KEYS = {"endpoint", "region", "access_key_id", "secret_access_key", "session_token"}
_PART_BYTES = 5 * 1024 * 1024  # S3's minimum multipart part size
_MAX_CONCURRENCY = 4  # parts in flight per upload: bounds memory to ~20 MiB per stream
_LIST_PAGE = 1000  # keys per batch of a listing (S3's page size)
# the key alphabet of validate_key, in byte order
_ALPHABET = "".join(sorted("-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))


@contextlib.contextmanager
def _mapped(key: str) -> Iterator[None]:
    """Translate obstore's errors into freight's: NotFoundError or StorageError."""
    try:
        yield
    except FreightError:
        raise
    except FileNotFoundError:
        raise NotFoundError(f"no object {key!r}", key=key) from None
    except Exception as exc:  # obstore BaseError, ValueError, OSError, ...
        raise StorageError(f"object store failed on {key!r}: {exc}", key=key) from exc


def _list_offset(directory: str, start: str) -> str | None:
    """A key just below every key that starts with ``directory/start`` (S3 lists the keys
    strictly after it), made of key characters only; None when the directory alone
    bounds the listing. ``data/x`` -> ``data/w~~~…``: only a key of ``data/w`` and 16
    tildes and more falls between it and ``data/x``, and the filter drops it."""
    if not start:
        return None
    base = f"{directory}/{start[:-1]}" if directory else start[:-1]
    position = _ALPHABET.find(start[-1])
    if position <= 0:  # the lowest character: every key after the stem will do
        return None if not base or base.endswith("/") else base
    return base + _ALPHABET[position - 1] + "~" * 16


def _is_key(key: str) -> bool:
    try:
        validate_key(key)
    except FreightError:
        return False
    return True


def _attributes(content_type: str | None) -> Attributes | None:
    return {"Content-Type": content_type} if content_type else None


class S3Storage:
    """A bucket (optionally a prefix in it) of an S3-compatible store."""

    def __init__(
        self,
        store: S3Store,
        *,
        description: str = "s3",
        bucket: str = "",
        prefix: str = "",
    ) -> None:
        self._store = store
        self._description = description
        self._bucket = bucket
        self._prefix = prefix.strip("/")

    def key_for_uri(self, uri: str) -> str | None:
        """``s3://<this bucket>/<prefix>/<key>`` -> ``<key>``; None for other buckets."""
        parts = urlsplit(uri)
        if parts.scheme != "s3" or parts.netloc != self._bucket:
            return None
        path = parts.path.lstrip("/")
        if self._prefix:
            if not path.startswith(self._prefix + "/"):
                return None
            path = path[len(self._prefix) + 1 :]
        return validate_key(path)

    def uri_for_key(self, key: str) -> str:
        """``<key>`` -> ``s3://<bucket>/<prefix>/<key>``."""
        path = f"{self._prefix}/{validate_key(key)}" if self._prefix else validate_key(key)
        return f"s3://{self._bucket}/{path}"

    def __repr__(self) -> str:
        return f"S3Storage({self._description!r})"

    @classmethod
    def from_url(cls, url: str) -> S3Storage:
        """Build from ``s3://bucket[/prefix]?endpoint=…&region=…`` (see the module doc)."""
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ConfigError(f"not an s3://bucket URL: {url!r}", url=url)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        unknown = sorted(set(query) - _QUERY_KEYS)
        if unknown:
            raise ConfigError(
                f"storage URL {parts.scheme}://{parts.netloc}{parts.path}: unknown "
                f"parameter(s) {', '.join(unknown)} (allowed: {', '.join(sorted(_QUERY_KEYS))})",
                url=f"{parts.scheme}://{parts.netloc}{parts.path}",
            )
        config: dict[str, Any] = {k: v for k, v in query.items() if v}
        prefix = parts.path.strip("/") or None
        endpoint = config.get("endpoint", "")
        client_options = {"allow_http": True} if endpoint.startswith("http://") else None
        try:
            store = S3Store(
                parts.netloc,
                prefix=prefix,
                config=config,  # type: ignore[arg-type]
                client_options=client_options,  # type: ignore[arg-type]
            )
        except Exception as exc:
            raise ConfigError(f"cannot open s3://{parts.netloc}: {exc}", url=url) from exc
        description = f"s3://{parts.netloc}/{prefix or ''}"
        if endpoint:
            description += f" at {endpoint}"
        return cls(store, description=description, bucket=parts.netloc, prefix=prefix or "")

    # -- writes --------------------------------------------------------------

    async def put(self, key: str, data: bytes, *, content_type: str | None = None) -> int:
        validate_key(key)
        with _mapped(key):
            await obstore.put_async(self._store, key, data, attributes=_attributes(content_type))
        return len(data)

    async def put_many(self, items: list[tuple[str, bytes]]) -> None:
        """Write several small objects concurrently (a few in flight at a time)."""
        gate = asyncio.Semaphore(16)

        async def one(key: str, data: bytes) -> None:
            async with gate:
                await self.put(key, data)

        await asyncio.gather(*(one(key, data) for key, data in items))

    async def put_stream(
        self,
        key: str,
        chunks: AsyncIterable[bytes],
        *,
        content_type: str | None = None,
        max_bytes: int | None = None,
    ) -> int:
        """Multipart upload fed by a counting wrapper; past ``max_bytes`` it raises,
        obstore aborts the upload and the error propagates unchanged."""
        validate_key(key)
        size = 0
        source_error: BaseException | None = None

        async def counted() -> AsyncIterator[bytes]:
            nonlocal size, source_error
            try:
                async for chunk in chunks:
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise PayloadTooLargeError(
                            f"object {key!r} is over the limit of {max_bytes} bytes",
                            key=key,
                            max_bytes=max_bytes,
                        )
                    yield chunk
            except BaseException as exc:
                source_error = exc
                raise

        try:
            await obstore.put_async(
                self._store,
                key,
                counted(),
                attributes=_attributes(content_type),
                chunk_size=_PART_BYTES,
                max_concurrency=_MAX_CONCURRENCY,
            )
        except Exception as exc:
            if exc is source_error:  # the caller's own error (a client went away): as is
                raise
            with _mapped(key):
                raise
        return size

    async def put_file(self, key: str, path: Path, *, content_type: str | None = None) -> int:
        """Upload ``path`` (obstore reads it natively, in parts); the file is left alone."""
        validate_key(key)
        try:
            size = Path(path).stat().st_size
        except FileNotFoundError:
            raise NotFoundError(f"no file {path}", path=str(path)) from None
        with _mapped(key):
            await obstore.put_async(
                self._store,
                key,
                Path(path),
                attributes=_attributes(content_type),
                chunk_size=_PART_BYTES,
                max_concurrency=_MAX_CONCURRENCY,
            )
        return size

    async def delete(self, key: str) -> None:
        validate_key(key)
        with _mapped(key):
            await obstore.delete_async(self._store, key)

    # -- reads ---------------------------------------------------------------

    async def get_stream(self, key: str, *, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        validate_key(key)
        with _mapped(key):
            result = await obstore.get_async(self._store, key)
            async for chunk in result.stream(min_chunk_size=chunk_size):
                yield chunk

    async def get(self, key: str) -> bytes:
        validate_key(key)
        with _mapped(key):
            result = await obstore.get_async(self._store, key)
            return bytes(await result.bytes_async())

    async def stat(self, key: str) -> ObjectInfo | None:
        """Size and content type from a HEAD request; None when there is no object."""
        validate_key(key)
        try:
            with _mapped(key):
                result = await obstore.get_async(self._store, key, options={"head": True})
        except NotFoundError:
            return None
        content_type = result.attributes.get("Content-Type")
        return ObjectInfo(key=key, size=result.meta["size"], content_type=content_type)

    # -- URLs ----------------------------------------------------------------

    async def presign_get(self, key: str, *, expires_s: int) -> str:
        """An absolute S3 URL (SigV4 query signature) valid for ``expires_s`` seconds."""
        validate_key(key)
        with _mapped(key):
            url: str = await obstore.sign_async(
                self._store,
                "GET",
                key,
                timedelta(seconds=expires_s),
            )
        return url

    def local_path(self, key: str) -> Path | None:
        return None

    # -- listing (last: below it, ``list`` would name this method) -------------

    async def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        """The objects under ``prefix`` in key order, page by page (see the module doc);
        keys that are not valid keys (a console's ``folder/`` markers, objects written
        by other tools) are skipped. ``content_type`` is None: ask :meth:`stat`."""
        directory, start = validate_prefix(prefix)
        offset = _list_offset(directory, start)
        previous: str | None = None
        with _mapped(prefix):
            stream = obstore.list(
                self._store, directory or None, offset=offset, chunk_size=_LIST_PAGE
            )
            async for batch in stream:
                for meta in batch:
                    key = meta["path"]
                    if not key.startswith(prefix):
                        if key > prefix:  # past every key with the prefix: done
                            return
                        continue
                    if not _is_key(key):
                        continue
                    if previous is not None and key <= previous:
                        raise StorageError(
                            f"{self._description} listed {key!r} after {previous!r}: "
                            "not in key order",
                            key=key,
                        )
                    previous = key
                    yield ObjectInfo(key=key, size=meta["size"], content_type=None)
