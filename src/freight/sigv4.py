"""AWS Signature Version 4: freight's access-key pairs and the check of a signed request.

AWS clients (boto3's ``sagemaker-runtime``) sign every request with an access key id
and its secret access key. freight issues such pairs per tenant (``freight keys create
--sigv4``), kept in the ``api_keys`` table beside bearer keys, with the same scopes,
models, expiry and revocation. Checking a signature needs the secret itself (an HMAC
of the request is recomputed), so unlike a bearer key it cannot be kept as a hash:
it is kept *sealed* (AES-GCM under a key derived from the server's ``secret_key``,
the key id as associated data), and opened only to check a signature.

The signature is recomputed with botocore's own SigV4 signer
(:class:`botocore.auth.SigV4Auth`: the canonical request and the string to sign) over
exactly the headers the client says it signed, so freight and the client agree on
every canonicalisation rule by construction; the signing key (four HMACs of the
secret) is derived once per pair and day. botocore is imported on the first signed
request only.

Pure: no I/O. Errors are :class:`~freight.errors.UnauthorizedError` with the codes
``malformed_authorization``, ``unknown_access_key``, ``invalid_signature`` and
``signature_expired``; the API renders them as AWS does.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from freight.errors import UnauthorizedError

ALGORITHM: Final = "AWS4-HMAC-SHA256"
#: AWS refuses a request signed more than this far from its own clock (either way)
MAX_SKEW_S: Final = 15 * 60
#: freight's access key ids: ``FRK`` and 17 upper-case letters or digits (20 characters,
#: the length of AWS's own), so they never look like a bearer key's id
ACCESS_KEY_PREFIX: Final = "FRK"
_ACCESS_KEY = re.compile(r"^FRK[A-Z0-9]{17}$")
_ALPHABET: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256\s+"
    r"Credential=(?P<credential>[^,\s]+),\s*"
    r"SignedHeaders=(?P<signed>[^,\s]+),\s*"
    r"Signature=(?P<signature>[0-9a-f]{64})\s*$"
)
_TIMESTAMP: Final = "%Y%m%dT%H%M%SZ"
_AMZ_DATE = re.compile(r"^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$")
_SEALED_PREFIX: Final = "v1:"


@dataclass(frozen=True, slots=True)
class NewPair:
    """An access key id and its secret, as created: the secret is shown once."""

    access_key_id: str
    secret: str = field(repr=False)


def new_pair() -> NewPair:
    access_key_id = ACCESS_KEY_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(17))
    return NewPair(access_key_id, secrets.token_urlsafe(30))  # 40 characters, 240 bits


def is_access_key_id(text: str) -> bool:
    return bool(_ACCESS_KEY.match(text))


def secret_hash(secret: str) -> str:
    """What the ``hash`` column holds for a pair: its secret's SHA-256 (never matched
    by a bearer token, whose ids have another form)."""
    return hashlib.sha256(secret.encode()).hexdigest()


class Sealer:
    """Seals secrets for the database and opens them again (AES-256-GCM, a fresh
    nonce each time, the key id bound as associated data so a sealed secret moved to
    another row does not open). The key is derived from the server's secret: every
    API process of a cluster opens what any of them (or ``freight keys``) sealed when
    they share ``secret_key``."""

    def __init__(self, server_secret: bytes) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        key = hmac.new(server_secret, b"freight sigv4 secret access keys", "sha256").digest()
        self._aead = AESGCM(key)

    def seal(self, key_id: str, secret: str) -> str:
        nonce = secrets.token_bytes(12)
        sealed = self._aead.encrypt(nonce, secret.encode(), key_id.encode())
        return _SEALED_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, key_id: str, sealed: str) -> str | None:
        """The secret, or None when it does not open (another server secret)."""
        from cryptography.exceptions import InvalidTag

        if not sealed.startswith(_SEALED_PREFIX):
            return None
        try:
            raw = base64.urlsafe_b64decode(sealed[len(_SEALED_PREFIX) :])
            return self._aead.decrypt(raw[:12], raw[12:], key_id.encode()).decode()
        except (InvalidTag, ValueError):
            return None


@dataclass(frozen=True, slots=True)
class Authorization:
    """The parts of an ``Authorization: AWS4-HMAC-SHA256 …`` header."""

    access_key_id: str
    date: str  # YYYYMMDD of the credential scope
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str


def is_sigv4(header: str | None) -> bool:
    return header is not None and header.startswith(ALGORITHM)


def parse(header: str) -> Authorization:
    """The header's parts; 401 ``malformed_authorization`` when it is not SigV4's form."""
    match = _AUTH.match(header.strip())
    parts = match.group("credential").split("/") if match else []
    if match is None or len(parts) != 5 or parts[4] != "aws4_request":
        raise UnauthorizedError(
            "the Authorization header is not a well-formed AWS4-HMAC-SHA256 signature",
            code="malformed_authorization",
        )
    signed = tuple(match.group("signed").split(";"))
    if "host" not in signed:
        raise UnauthorizedError(
            "a SigV4 signature must cover the Host header", code="malformed_authorization"
        )
    return Authorization(
        access_key_id=parts[0],
        date=parts[1],
        region=parts[2],
        service=parts[3],
        signed_headers=signed,
        signature=match.group("signature"),
    )


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """What of an HTTP request a SigV4 signature covers, as it arrived."""

    method: str
    raw_path: str  # percent-encoded, as sent
    query: str  # raw query string, as sent
    headers: Sequence[tuple[str, str]]  # every header (names in any case)
    body: bytes


def check_time(amz_date: str | None, auth: Authorization, now: float) -> str:
    """The request's ``X-Amz-Date``, within :data:`MAX_SKEW_S` of ``now`` and of the
    credential's day; 401 ``signature_expired`` (or ``malformed_authorization``)."""
    match = _AMZ_DATE.match(amz_date or "")
    if match is None:
        raise UnauthorizedError(
            "a SigV4 request needs an X-Amz-Date header (YYYYMMDDTHHMMSSZ)",
            code="malformed_authorization",
        )
    try:  # strptime costs as much as the rest of the check: the fields are fixed
        year, month, day, hour, minute, second = (int(part) for part in match.groups())
        signed_at = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:
        raise UnauthorizedError(
            f"X-Amz-Date {amz_date!r} is not a time", code="malformed_authorization"
        ) from None
    assert amz_date is not None
    if amz_date[:8] != auth.date:
        raise UnauthorizedError(
            "the credential's date is not the day of X-Amz-Date", code="malformed_authorization"
        )
    if abs(now - signed_at.timestamp()) > MAX_SKEW_S:
        raise UnauthorizedError(
            f"Signature expired: {amz_date} is more than {MAX_SKEW_S // 60} minutes from "
            f"the server's time ({datetime.fromtimestamp(now, UTC).strftime(_TIMESTAMP)})",
            code="signature_expired",
        )
    return amz_date


class _Request:
    """What botocore's SigV4 signer reads of a request (``AWSRequest``'s attributes),
    without building an ``AWSRequest``: its ``prepare`` costs a third of a check."""

    __slots__ = ("body", "context", "headers", "method", "params", "url")

    def __init__(self, method: str, url: str, headers: object, body: bytes, amz_date: str):
        self.method, self.url, self.headers, self.body = method, url, headers, body
        self.params: dict[str, str] = {}
        self.context = {"timestamp": amz_date}


def expected_signature(
    request: SignedRequest, auth: Authorization, amz_date: str, secret: str
) -> str:
    """The signature ``secret`` gives ``request`` over the headers ``auth`` names: the
    canonical request and the string to sign are botocore's SigV4 signer's (every
    canonicalisation rule as the client applied it); the signing key is derived once a
    day per pair (:func:`_signing_key`)."""
    from botocore.auth import SigV4Auth
    from botocore.compat import HTTPHeaders
    from botocore.credentials import Credentials

    wanted = set(auth.signed_headers)
    headers = HTTPHeaders()
    for name, value in request.headers:
        if name.lower() in wanted:
            headers.add_header(name.lower(), value)
    # the URL's host is only used when the host header is missing (not signed: refused)
    url = f"http://{headers.get('host', 'localhost')}{request.raw_path}"
    if request.query:
        url += "?" + request.query
    lean = _Request(request.method, url, headers, request.body, amz_date)
    signer = SigV4Auth(Credentials(auth.access_key_id, secret), auth.service, auth.region)
    string_to_sign = signer.string_to_sign(lean, signer.canonical_request(lean))
    key = _signing_key(secret, amz_date[:8], auth.region, auth.service)
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


@functools.lru_cache(maxsize=256)
def _signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """SigV4's signing key (four HMACs, as botocore's ``SigV4Auth.signature`` derives
    it), the same for a pair's every request of a day: kept, in memory only."""
    key = f"AWS4{secret}".encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def verify(request: SignedRequest, auth: Authorization, amz_date: str, secret: str) -> None:
    """401 ``invalid_signature`` unless ``auth.signature`` is ``request``'s under ``secret``."""
    if not hmac.compare_digest(expected_signature(request, auth, amz_date, secret), auth.signature):
        raise UnauthorizedError(
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method.",
            code="invalid_signature",
        )


__all__ = [
    "ACCESS_KEY_PREFIX",
    "ALGORITHM",
    "MAX_SKEW_S",
    "Authorization",
    "NewPair",
    "Sealer",
    "SignedRequest",
    "check_time",
    "expected_signature",
    "is_access_key_id",
    "is_sigv4",
    "new_pair",
    "parse",
    "secret_hash",
    "verify",
]
