"""HMAC-signed, expiring URLs for freight's own routes (uploads, local downloads).

A signature covers the method, the path and the expiry, so a URL can be used
only for what it was issued for, and only until it expires.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import urlencode

from freight.errors import UrlError


class UrlSigner:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def derive(self, purpose: str) -> bytes:
        """A key of its own for ``purpose`` (the console's sessions), from the same
        secret: every process given the secret derives the same one."""
        return hmac.new(self._secret, f"freight:{purpose}".encode(), hashlib.sha256).digest()

    def _sig(self, method: str, path: str, expires: int) -> str:
        msg = f"{method.upper()}\n{path}\n{expires}".encode()
        return hmac.new(self._secret, msg, hashlib.sha256).hexdigest()

    def sign(self, method: str, path: str, *, expires_s: int, now: float | None = None) -> str:
        """Return ``path?expires=…&sig=…`` valid for ``expires_s`` seconds."""
        return self.sign_until(method, path, (time.time() if now is None else now) + expires_s)

    def sign_until(self, method: str, path: str, expires_at: float) -> str:
        """Return ``path?expires=…&sig=…`` valid until the epoch second ``expires_at``
        (the same URL every time for one deadline, e.g. a prediction's upload URL)."""
        expires = int(expires_at)
        query = urlencode({"expires": expires, "sig": self._sig(method, path, expires)})
        return f"{path}?{query}"

    def verify(
        self,
        method: str,
        path: str,
        expires: str | None,
        sig: str | None,
        *,
        now: float | None = None,
    ) -> None:
        """Raise UrlError (``missing_signature`` / ``bad_signature`` / ``url_expired``)."""
        if not expires or not sig:
            raise UrlError("the URL carries no signature", code="missing_signature")
        try:
            expires_at = int(expires)
        except ValueError:
            raise UrlError("the URL's expiry is not a number", code="bad_signature") from None
        # compare bytes: compare_digest raises TypeError on a non-ASCII str
        expected = self._sig(method, path, expires_at).encode()
        if not hmac.compare_digest(expected, sig.encode("utf-8", "surrogateescape")):
            raise UrlError("the URL's signature does not match", code="bad_signature")
        if (time.time() if now is None else now) > expires_at:
            raise UrlError("the URL has expired", code="url_expired", expired_at=expires_at)
