"""Object storage: one :class:`Storage` protocol, chosen from a URL by :func:`open_storage`.

URLs:

- ``file:///abs/dir`` or a plain path → :class:`LocalStorage` (the laptop default);
- ``s3://bucket[/prefix]?endpoint=http://127.0.0.1:9000&region=us-east-1``
  [``&access_key_id=…&secret_access_key=…``] → :class:`S3Storage` (credentials
  otherwise from the usual ``AWS_*`` environment);
- ``memory://`` → :class:`MemoryStorage` (tests: a fresh, empty dict per call,
  seen by this process only).

Local and memory storage cannot presign on their own: pass ``presign``, a
``(key, expires_s) -> URL`` callable (the server builds it on its own signed
download route); S3 presigns with its own credentials.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from freight.errors import ConfigError
from freight.storage.base import ObjectInfo, Presign, Storage
from freight.storage.local import LocalStorage, validate_key
from freight.storage.memory import MemoryStorage
from freight.storage.s3 import S3Storage

__all__ = [
    "LocalStorage",
    "MemoryStorage",
    "ObjectInfo",
    "Presign",
    "S3Storage",
    "Storage",
    "open_storage",
    "validate_key",
]


def open_storage(url: str, *, presign: Presign | None = None) -> Storage:
    """Open the storage a URL names; ConfigError (naming the URL) for anything else.

    ``presign`` makes the presigned URLs of local and memory storage; without one,
    their ``presign_get`` raises ConfigError (a runner, say, never presigns).
    """
    if not url:
        raise ConfigError("empty storage URL", url=url)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "s3":
        return S3Storage.from_url(url)
    if url == "memory://":
        return MemoryStorage(presign=presign)
    if scheme == "file":
        if parts.netloc not in ("", "localhost") or parts.query:
            raise ConfigError(f"storage URL {url!r}: expected file:///absolute/dir", url=url)
        return LocalStorage(Path(unquote(parts.path)), presign=presign)
    if scheme == "" or (len(scheme) == 1 and url[1:3] in (":\\", ":/")):  # path, C:\ too
        return LocalStorage(Path(url).expanduser(), presign=presign)
    # credentials may sit in the query: name the URL without it
    shown = f"{parts.scheme}://{parts.netloc}{parts.path}"
    raise ConfigError(
        f"unsupported storage URL {shown!r}: use file:///dir, a path, s3://bucket or memory://",
        url=shown,
    )
