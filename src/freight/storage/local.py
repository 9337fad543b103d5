"""Object storage in a local directory: the laptop default (``file:///abs/dir``).

Design choices, each for a reason:

- **Atomic writes.** Every write goes to a temporary file in the destination's
  directory, then ``os.replace`` puts it in place, so a crashed process never
  leaves a half object visible under its key (no fsync: process crashes are
  covered, power loss is not, like SQLite WAL ``synchronous=NORMAL``).
- **Small objects are rows, not files.** ``put`` of ≤ 64 KiB (the ~1 KB JSON
  of every prediction) goes to a SQLite table in the root (``_small.py``):
  creating a file cost 60-700 µs of kernel time here, an INSERT in a group
  transaction a few µs. Lookups try the table first, then the file. Bigger
  payloads are files, written through a thread so the loop keeps serving.
- **Content types live in the database, not here.** A sidecar file per object
  doubles the files and the writes on the hot path, and xattrs are not
  portable, so :meth:`LocalStorage.stat` returns ``content_type=None``; the
  prediction row carries the content type. (S3 keeps it as object metadata,
  because presigned downloads are served by S3 itself.)
- **Keys are a restricted alphabet** (:func:`validate_key`) so that a key is
  its own URL path: a signed API path naming it is the same string whether
  read raw or percent-decoded, and no key can escape the root.
- **Listing merges the two kinds.** :meth:`LocalStorage.list` walks the files
  under the root (sorted per directory so that the walk is in key order; no
  symlink followed; temporary files, the table's own files and any name outside
  the key alphabet skipped) and merges them with the table's rows, read in
  keyset pages; a key that is both (a small put over a large file) is its row,
  as for every read.
- **Presigned URLs** come from the ``presign`` callable the server passes in
  (obstore cannot presign a ``LocalStore``): a signed, expiring route of
  freight's API, which verifies it and streams the object. This backend knows
  no HTTP route.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import heapq
import itertools
import os
import re
import shutil
import stat
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

from freight.errors import (
    ConfigError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    StorageError,
)
from freight.storage._small import SmallObjects
from freight.storage.base import ObjectInfo, Presign

__all__ = ["LocalStorage", "validate_key", "validate_prefix"]

SYNC_IO_MAX_BYTES = 64 * 1024
"""Reads and writes up to this size run on the event loop; larger ones in a thread."""

_FLUSH_BYTES = 1 << 20  # put_stream buffers this much before a (threaded) write
_TMP_SUFFIX = ".freight-tmp"
_TMP_COUNTER = itertools.count()
_SEGMENT = re.compile(r"[A-Za-z0-9._~-]{1,255}")
_MAX_KEY_CHARS = 1024  # S3's limit, so both backends accept the same keys
_NAME_START = re.compile(r"[A-Za-z0-9._~-]{0,255}")  # a key segment's beginning
_LIST_PAGE = 1000  # objects per threaded step of a listing (and per query of the table)


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe relative object key, else raise ``invalid_key``.

    Segments are non-empty, not ``.``/``..``, drawn from ``[A-Za-z0-9._~-]``; the
    whole key is at most 1024 characters. Shared by every backend so that a key
    valid on a laptop is valid on S3 and the other way round.
    """
    reason = None
    if not key or len(key) > _MAX_KEY_CHARS:
        reason = "empty or longer than 1024 characters"
    elif key.startswith("/"):
        reason = "absolute"
    else:
        for segment in key.split("/"):
            if segment in (".", "..") or not _SEGMENT.fullmatch(segment):
                reason = f"bad segment {segment!r}"
                break
            if segment.endswith(_TMP_SUFFIX):
                reason = f"reserved suffix {_TMP_SUFFIX!r}"
                break
    if reason is not None:
        raise InvalidRequestError(
            f"invalid object key {key!r}: {reason}", code="invalid_key", key=key
        )
    return key


def validate_prefix(prefix: str) -> tuple[str, str]:
    """Split a listing prefix into ``(directory, name start)``, or raise ``invalid_key``.

    ``"data/x"`` -> ``("data", "x")``, ``"data/"`` -> ``("data", "")``, ``""`` ->
    ``("", "")``. Every whole segment must be valid as in a key; the last, partial one
    may be anything a segment can begin with (``..`` too: ``..b`` is a valid name).
    A prefix that no valid key could start with is refused rather than listing nothing,
    so that a caller's bug (a leading ``/``, a URI) is not mistaken for "no objects".
    """
    directory, _, start = prefix.rpartition("/")
    reason = None
    if len(prefix) > _MAX_KEY_CHARS:
        reason = "longer than 1024 characters"
    elif not _NAME_START.fullmatch(start):
        reason = f"bad segment start {start!r}"
    elif "/" in prefix:
        for segment in directory.split("/"):
            if not _is_segment(segment):
                reason = f"bad segment {segment!r}"
                break
    if reason is not None:
        raise InvalidRequestError(
            f"invalid object key prefix {prefix!r}: {reason}", code="invalid_key", key=prefix
        )
    return directory, start


def _is_segment(name: str) -> bool:
    """Whether ``name`` is a valid key segment (what :func:`validate_key` accepts)."""
    return (
        name not in (".", "..")
        and _SEGMENT.fullmatch(name) is not None
        and not name.endswith(_TMP_SUFFIX)
    )


class LocalStorage:
    """A directory of objects: small ones rows of one table, others files. See above."""

    def __init__(self, root: Path, presign: Presign | None = None) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._presign = presign
        self._small = SmallObjects(self.root)

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    # -- paths ---------------------------------------------------------------

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def key_for_uri(self, uri: str) -> str | None:
        """``file:///<root>/<key>`` -> ``<key>``; None for files outside the root."""
        parts = urlsplit(uri)
        if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
            return None
        try:
            relative = Path(unquote(parts.path)).resolve().relative_to(self.root)
        except ValueError:
            return None
        return validate_key(relative.as_posix())

    def uri_for_key(self, key: str) -> str:
        """``<key>`` -> ``file:///<root>/<key>``."""
        return self._path(key).as_uri()

    def local_path(self, key: str) -> Path | None:
        """The object's file; None when it is a small object (a row) or missing."""
        path = self._path(key)
        return path if path.is_file() else None

    def _open_temp(self, dest: Path) -> tuple[Path, BinaryIO]:
        """Create a temporary file next to ``dest`` (same filesystem: replace is atomic)."""
        # unique per process (pid) and per write (counter): cheaper than a uuid4's urandom
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{next(_TMP_COUNTER)}{_TMP_SUFFIX}")
        for _ in range(3):  # a concurrent delete may prune the directory in between
            try:
                return tmp, open(tmp, "xb")
            except FileNotFoundError:
                dest.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(f"cannot write {dest}: {exc}", key=str(dest)) from exc
        raise StorageError(f"cannot create the directory of {dest}", key=str(dest))

    def _commit(self, tmp: Path, dest: Path) -> None:
        try:
            os.replace(tmp, dest)
        except OSError as exc:
            _unlink(tmp)
            raise StorageError(f"cannot write {dest}: {exc}", key=str(dest)) from exc

    def _write_whole(self, dest: Path, data: bytes) -> None:
        tmp, f = self._open_temp(dest)
        try:
            with f:
                f.write(data)
        except BaseException:
            _unlink(tmp)
            raise
        self._commit(tmp, dest)

    # -- writes --------------------------------------------------------------

    async def put(self, key: str, data: bytes, *, content_type: str | None = None) -> int:
        if len(data) <= SYNC_IO_MAX_BYTES:
            await self._small.put(validate_key(key), data)
        else:
            await asyncio.to_thread(self._write_whole, self._path(key), data)
            self._small.delete(key)  # a small earlier version must not shadow the file
        return len(data)

    async def put_many(self, items: list[tuple[str, bytes]]) -> None:
        """Write several objects; the small ones in one transaction."""
        small = [(validate_key(k), d) for k, d in items if len(d) <= SYNC_IO_MAX_BYTES]
        if small:
            self._small.put_now(small)
        for key, data in items:
            if len(data) > SYNC_IO_MAX_BYTES:
                await self.put(key, data)

    async def put_stream(
        self,
        key: str,
        chunks: AsyncIterable[bytes],
        *,
        content_type: str | None = None,
        max_bytes: int | None = None,
    ) -> int:
        """Stream into a temp file, buffering up to 1 MiB between threaded writes."""
        dest = self._path(key)
        tmp, f = self._open_temp(dest)
        size = 0
        buffer = bytearray()
        try:
            with f:
                async for chunk in chunks:
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise PayloadTooLargeError(
                            f"object {key!r} is over the limit of {max_bytes} bytes",
                            key=key,
                            max_bytes=max_bytes,
                        )
                    buffer += chunk
                    if len(buffer) >= _FLUSH_BYTES:
                        await asyncio.to_thread(f.write, buffer)
                        buffer = bytearray()
                if buffer:
                    await asyncio.to_thread(f.write, buffer)
        except BaseException:  # cancellation included: never leave the temp file
            _unlink(tmp)
            raise
        self._commit(tmp, dest)
        self._small.delete(key)
        return size

    async def put_file(self, key: str, path: Path, *, content_type: str | None = None) -> int:
        """Move ``path`` into place: a rename on the same filesystem, else a streamed copy.

        Either way the source file is consumed (it no longer exists afterwards).
        """
        dest = self._path(key)
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            raise NotFoundError(f"no file {path}", path=str(path)) from None
        dest.parent.mkdir(parents=True, exist_ok=True)
        self._small.delete(key)
        try:
            os.replace(path, dest)
            return size
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise StorageError(f"cannot move {path} to {dest}: {exc}", key=key) from exc
        await asyncio.to_thread(self._copy_in, Path(path), dest)
        return size

    def _copy_in(self, src: Path, dest: Path) -> None:
        tmp, f = self._open_temp(dest)
        try:
            with f, open(src, "rb") as source:
                shutil.copyfileobj(source, f, _FLUSH_BYTES)
        except BaseException:
            _unlink(tmp)
            raise
        self._commit(tmp, dest)
        _unlink(src)

    async def delete(self, key: str) -> None:
        """Delete the object (row or file) and prune directories left empty."""
        path = self._path(key)
        self._small.delete(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StorageError(f"cannot delete {key!r}: {exc}", key=key) from exc
        parent = path.parent
        while parent != self.root:
            try:
                parent.rmdir()
            except OSError:  # not empty (or gone): stop pruning
                return
            parent = parent.parent

    # -- reads ---------------------------------------------------------------

    def _open_read(self, key: str) -> tuple[BinaryIO, int]:
        path = self._path(key)
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed by the callers
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFoundError(f"no object {key!r}", key=key) from None
        except OSError as exc:
            raise StorageError(f"cannot read {key!r}: {exc}", key=key) from exc
        return f, os.fstat(f.fileno()).st_size

    async def get_stream(self, key: str, *, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        """Yield the object in ``chunk_size`` pieces, each read in a thread when large."""
        small = self._small.get(validate_key(key))
        if small is not None:
            if small:
                yield small
            return
        f, size = self._open_read(key)
        with f:
            if size <= SYNC_IO_MAX_BYTES:
                data = f.read()
                if data:
                    yield data
                return
            while True:
                chunk = await asyncio.to_thread(f.read, chunk_size)
                if not chunk:
                    return
                yield chunk

    async def get(self, key: str) -> bytes:
        small = self._small.get(validate_key(key))
        if small is not None:
            return small
        f, size = self._open_read(key)
        with f:
            if size <= SYNC_IO_MAX_BYTES:
                return f.read()
            return await asyncio.to_thread(f.read)

    async def stat(self, key: str) -> ObjectInfo | None:
        size = self._small.size(validate_key(key))
        if size is not None:
            return ObjectInfo(key=key, size=size, content_type=None)
        try:
            st = os.stat(self._path(key))
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat.S_ISREG(st.st_mode):  # a "prefix" directory is not an object
            return None
        return ObjectInfo(key=key, size=st.st_size, content_type=None)

    # -- URLs ----------------------------------------------------------------

    async def presign_get(self, key: str, *, expires_s: int) -> str:
        """A URL of freight's API that serves the object until it expires (a path: the
        API puts its public base URL in front; keys need no percent-encoding)."""
        validate_key(key)
        if self._presign is None:
            raise ConfigError("local storage was opened without a presigner: cannot presign")
        return self._presign(key, expires_s)

    # -- listing (last: below it, ``list`` would name this method) -------------

    def _objects(self, prefix: str, directory: str, start: str) -> Iterator[ObjectInfo]:
        """Rows and files under ``prefix`` merged in key order, a row winning a tie."""
        merged = heapq.merge(
            _rows(self._small, prefix), self._files(directory, start), key=_info_key
        )
        previous = None
        for info in merged:
            if info.key != previous:
                previous = info.key
                yield info

    def _files(self, directory: str, start: str) -> Iterator[ObjectInfo]:
        """The files whose keys start with ``directory/start``, in key order.

        Depth first, each directory's entries sorted with a directory named ``d``
        sorting as ``d/`` (its keys all begin so): that makes the walk key order even
        where ``/`` falls between other characters (``a-c`` < ``a/b`` < ``a0``).
        """
        path = self.root
        for segment in directory.split("/") if directory else ():
            path = path / segment
            try:
                if not stat.S_ISDIR(os.lstat(path).st_mode):  # a file, or a symlink
                    return
            except OSError:  # missing (or not a directory on the way): nothing there
                return
        stack = [iter(_entries(path, f"{directory}/" if directory else "", start))]
        while stack:
            entry = next(stack[-1], None)
            if entry is None:
                stack.pop()
                continue
            _, key, entry_path, is_dir = entry
            if is_dir:
                stack.append(iter(_entries(entry_path, key + "/", "")))
                continue
            try:
                st = os.lstat(entry_path)
            except OSError:  # deleted since the directory was read
                continue
            if stat.S_ISREG(st.st_mode) and len(key) <= _MAX_KEY_CHARS:
                yield ObjectInfo(key=key, size=st.st_size, content_type=None)

    async def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        """The objects under ``prefix`` in key order, ``_LIST_PAGE`` at a time walked
        (and read from the table) in a thread; ``content_type`` is None (see above)."""
        directory, start = validate_prefix(prefix)
        objects = self._objects(prefix, directory, start)
        while True:
            page = await asyncio.to_thread(_take, objects, _LIST_PAGE)
            for info in page:
                yield info
            if len(page) < _LIST_PAGE:
                return


def _info_key(info: ObjectInfo) -> str:
    return info.key


def _take(objects: Iterator[ObjectInfo], n: int) -> list[ObjectInfo]:
    return list(itertools.islice(objects, n))


def _entries(path: Path, key_prefix: str, start: str) -> list[tuple[str, str, Path, bool]]:
    """``(sort key, key, path, is a directory)`` of the listable entries of ``path`` whose
    names begin with ``start``, sorted; symlinks are neither followed nor listed."""
    found = []
    try:
        with os.scandir(path) as it:
            for entry in it:
                name = entry.name
                if not name.startswith(start) or not _is_segment(name):
                    continue  # temp files, the table's files, foreign names
                try:
                    if entry.is_symlink():
                        continue
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    continue
                sort_key = name + "/" if is_dir else name
                found.append((sort_key, key_prefix + name, Path(entry.path), is_dir))
    except (FileNotFoundError, NotADirectoryError):  # pruned by a concurrent delete
        return []
    except OSError as exc:
        raise StorageError(f"cannot list {path}: {exc}", path=str(path)) from exc
    found.sort()
    return found


def _rows(small: SmallObjects, prefix: str) -> Iterator[ObjectInfo]:
    """The table's objects under ``prefix`` in key order, read in keyset pages (BINARY
    collation: byte order, the order of the files' walk)."""
    # the keys are ASCII: the first string past every key that starts with the prefix
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1) if prefix else None
    after: str | None = None
    while True:
        sql = "SELECT key, length(data) FROM objects WHERE "
        params: list[object] = []
        if after is None:
            sql += "key >= ?"
            params.append(prefix)
        else:
            sql += "key > ?"
            params.append(after)
        if end is not None:
            sql += " AND key < ?"
            params.append(end)
        sql += " ORDER BY key LIMIT ?"
        params.append(_LIST_PAGE)
        with small._lock:
            rows = small._db().execute(sql, params).fetchall()
        for key, size in rows:
            yield ObjectInfo(key=key, size=int(size), content_type=None)
        if len(rows) < _LIST_PAGE:
            return
        after = rows[-1][0]


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
