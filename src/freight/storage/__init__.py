"""Object storage: one :class:`Storage` protocol, chosen from a URL by :func:`open_storage`.

URLs:

- ``file:///abs/dir`` or a plain path → :class:`LocalStorage` (the laptop default);
- ``s3://bucket[/prefix]?endpoint=http://127.0.0.1:9000&region=us-east-1``
  [``&access_key_id=…&secret_access_key=…``] → :class:`S3Storage` (credentials
  otherwise from the usual ``AWS_*`` environment).

Local storage presigns with freight's own HMAC signer (the API serves and
verifies those URLs), so pass the process's :class:`~freight.signing.UrlSigner`
(``UrlSigner(settings.secret())``); S3 presigns with its own credentials.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from freight.errors import ConfigError
from freight.signing import UrlSigner
from freight.storage.base import ObjectInfo, Storage
from freight.storage.local import LocalStorage, validate_key
from freight.storage.s3 import S3Storage

__all__ = [
    "LocalStorage",
    "ObjectInfo",
    "S3Storage",
    "Storage",
    "open_storage",
    "validate_key",
]


def open_storage(url: str, *, signer: UrlSigner | None = None) -> Storage:
    """Open the storage a URL names; ConfigError (naming the URL) for anything else.

    ``signer`` is used by local storage for presigned URLs; without one, local
    ``presign_get`` raises ConfigError (a random secret would mint URLs that no
    other process could verify).
    """
    if not url:
        raise ConfigError("empty storage URL", url=url)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "s3":
        return S3Storage.from_url(url)
    if scheme == "file":
        if parts.netloc not in ("", "localhost") or parts.query:
            raise ConfigError(f"storage URL {url!r}: expected file:///absolute/dir", url=url)
        return LocalStorage(Path(unquote(parts.path)), signer=signer)
    if scheme == "" or (len(scheme) == 1 and url[1:3] in (":\\", ":/")):  # path, C:\ too
        return LocalStorage(Path(url).expanduser(), signer=signer)
    # credentials may sit in the query: name the URL without it
    shown = f"{parts.scheme}://{parts.netloc}{parts.path}"
    raise ConfigError(
        f"unsupported storage URL {shown!r}: use file:///dir, a path, or s3://bucket",
        url=shown,
    )
