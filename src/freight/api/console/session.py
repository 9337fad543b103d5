"""Console sessions: who is signed in, and CSRF protection.

Signing in POSTs a key; the server authenticates it with the keyring and sets a
cookie holding a signed token (a JWT, HS256) of the key's *public id*, its tenant
and an expiry, never the key itself. Each request verifies the token and asks the
keyring for the key again (:meth:`~freight.keyring.Keyring.holder`, cached
``key_cache_s``): a revoked or expired key ends its sessions within that time, on
every API process. The signing key is derived from the server's ``secret_key``
(:meth:`~freight.signing.UrlSigner.derive`), which every API process of a cluster
shares, so a session is good on any of them.

The cookie is ``HttpOnly`` (no page script reads it), ``SameSite=Strict``, scoped
to ``/ui`` and ``Secure`` over https. Every request that changes state carries a
CSRF token bound to the session (an HMAC of the token's id: a hidden form field or
the ``X-CSRF-Token`` header) and must come from the console's own origin
(``Origin``, else ``Referer``); the sign-in form, which has no session yet, is
checked by origin. A server without keys (loopback, anonymous) gets an anonymous
session on first sight, so its forms are protected the same way.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import jwt
from starlette.requests import Request
from starlette.responses import Response

from freight.access import ANONYMOUS, Principal, Scope
from freight.errors import ForbiddenError, UnauthorizedError

if TYPE_CHECKING:
    from freight.keyring import Keyring

COOKIE = "freight_console"
PATH = "/ui"
SESSION_S = 8 * 3600.0
AUDIENCE = "freight-console"
ANONYMOUS_SUBJECT = "anonymous"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"


class SignInNeeded(Exception):
    """No valid session: the console answers with its sign-in page."""


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in console user: the principal it acts as, its CSRF token."""

    who: Principal
    csrf: str
    anonymous: bool
    fresh_token: str | None = None  # an anonymous session just made: set its cookie


def secret(request: Request) -> bytes:
    key: bytes = request.app.state.console_secret
    return key


def _keyring(request: Request) -> Keyring | None:
    return getattr(request.app.state, "keyring", None)


def csrf_of(key: bytes, token_id: str) -> str:
    return hmac.new(key, f"csrf:{token_id}".encode(), hashlib.sha256).hexdigest()


def mint(key: bytes, subject: str, tenant: str, now: float | None = None) -> str:
    """A session token for ``subject`` (a key id, or ``anonymous``)."""
    now = time.time() if now is None else now
    claims = {
        "sub": subject,
        "ten": tenant,
        "aud": AUDIENCE,
        "iat": int(now),
        "exp": int(now + SESSION_S),
        "jti": secrets.token_urlsafe(16),
    }
    return jwt.encode(claims, key, algorithm="HS256")


def _claims(key: bytes, token: str) -> dict[str, str] | None:
    try:
        claims: dict[str, str] = jwt.decode(
            token, key, algorithms=["HS256"], audience=AUDIENCE, options={"require": ["exp"]}
        )
    except jwt.PyJWTError:
        return None
    return claims


async def current(request: Request) -> Session:
    """The request's session; SignInNeeded without a valid one (a server without keys
    makes an anonymous one)."""
    key, ring = secret(request), _keyring(request)
    required = ring is not None and await ring.required()
    token = request.cookies.get(COOKIE)
    claims = _claims(key, token) if token else None
    if claims is not None and claims["sub"] != ANONYMOUS_SUBJECT and ring is not None:
        try:
            who = await ring.holder(claims["sub"])
        except UnauthorizedError:
            raise SignInNeeded from None
        return Session(who, csrf_of(key, claims["jti"]), anonymous=False)
    if required:
        raise SignInNeeded
    if claims is not None:  # an anonymous session of a server without keys
        return Session(ANONYMOUS, csrf_of(key, claims["jti"]), anonymous=True)
    token = mint(key, ANONYMOUS_SUBJECT, ANONYMOUS.tenant)
    fresh = _claims(key, token)
    assert fresh is not None
    return Session(ANONYMOUS, csrf_of(key, fresh["jti"]), anonymous=True, fresh_token=token)


async def sign_in(request: Request, api_key: str) -> str:
    """A session token for a key (401 ``invalid_credentials``; 403 ``missing_scope``
    for a key that may not read)."""
    ring = _keyring(request)
    if ring is None:
        raise UnauthorizedError("this server has no keys", code="invalid_credentials")
    source = request.client.host if request.client else ""
    who = await ring.authenticate(api_key.strip(), source)
    if who.key_id is None or not api_key.strip().startswith("frk_"):
        raise UnauthorizedError("sign in with an API key (frk_...)", code="invalid_credentials")
    if not who.has(Scope.READ):
        raise ForbiddenError(
            "the console needs a key with the read scope", code="missing_scope", scope="read"
        )
    return mint(secret(request), who.key_id, who.tenant)


def set_cookie(request: Request, response: Response, token: str) -> None:
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(SESSION_S),
        path=PATH,
        httponly=True,
        samesite="strict",
        secure=_https(request),
    )


def clear_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(
        COOKIE, path=PATH, httponly=True, samesite="strict", secure=_https(request)
    )


def _https(request: Request) -> bool:
    public: str = getattr(request.app.state, "public_url", "") or ""
    return request.url.scheme == "https" or public.startswith("https://")


def _origins(request: Request) -> set[str]:
    own = {f"{request.url.scheme}://{request.headers.get('host', request.url.netloc)}"}
    public: str = getattr(request.app.state, "public_url", "") or ""
    if public:
        parts = urlsplit(public)
        own.add(f"{parts.scheme}://{parts.netloc}")
    return own


def check_origin(request: Request) -> None:
    """403 ``csrf_failed`` for a state change sent from another origin (or from none
    that the request tells)."""
    origin = request.headers.get("origin")
    if origin is None and (referer := request.headers.get("referer")):
        parts = urlsplit(referer)
        origin = f"{parts.scheme}://{parts.netloc}"
    if origin is None or origin not in _origins(request):
        raise ForbiddenError("the request does not come from the console", code="csrf_failed")


def check_csrf(request: Request, session: Session, sent: str | None) -> None:
    """403 ``csrf_failed`` unless the request carries the session's token and comes
    from the console's origin."""
    check_origin(request)
    sent = sent or request.headers.get(CSRF_HEADER)
    if not sent or not hmac.compare_digest(sent.encode(), session.csrf.encode()):
        raise ForbiddenError("the form's CSRF token does not match", code="csrf_failed")


__all__ = [
    "COOKIE",
    "CSRF_FIELD",
    "Session",
    "SignInNeeded",
    "check_csrf",
    "check_origin",
    "clear_cookie",
    "current",
    "set_cookie",
    "sign_in",
]
