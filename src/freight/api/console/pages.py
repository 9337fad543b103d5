"""What every console page shares: the templates, the session of each request, forms,
and errors shown as pages.

:class:`ConsoleRoute` wraps each console route: no session answers with the
sign-in page (``303``, or ``401`` for a script's request); a
:class:`~freight.errors.FreightError` is shown as an HTML page with the status and
machine-readable code the API would answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import parse_qs, quote

from fastapi import Depends
from fastapi.routing import APIRoute
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from freight.access import Scope
from freight.api.console import session as sessions
from freight.api.console.session import Session, SignInNeeded
from freight.api.errors import status_of
from freight.errors import ForbiddenError, FreightError, InvalidRequestError

#: a console form is a few fields: anything larger is not one
MAX_FORM_BYTES = 16 * 1024


def _ago(ts: float | None) -> str:
    if ts is None:
        return "—"
    return f"{duration(time.time() - ts)} ago"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _when(ts: float | None) -> str:
    if ts is None:
        return "—"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def _size(n: int | None) -> str:
    if n is None:
        return "—"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n = n / 1024  # type: ignore[assignment]
    return f"{n} B"  # pragma: no cover


def _ms(value: float | None) -> str:
    return "—" if value is None else duration(value / 1000)


ENV = Environment(
    loader=PackageLoader("freight.api.console", "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters.update(ago=_ago, when=_when, size=_size, ms=_ms, duration=duration)
ENV.globals["svg"] = Markup  # charts: SVG built from numbers and fixed labels only

#: every asset is the console's own: nothing from another origin, no inline script
HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def page(
    request: Request, template: str, session: Session, status_code: int = 200, **context: Any
) -> HTMLResponse:
    who = session.who
    body = ENV.get_template(template).render(
        request=request,
        who=who,
        session=session,
        csrf=session.csrf,
        can_predict=who.has(Scope.PREDICT),
        can_batch=who.has(Scope.BATCH),
        is_admin=Scope.ADMIN in who.scopes,
        **context,
    )
    response = HTMLResponse(body, status_code=status_code, headers=HEADERS)
    if session.fresh_token is not None:
        sessions.set_cookie(request, response, session.fresh_token)
    return response


def bare(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """A page without a session (sign-in, errors before one)."""
    body = ENV.get_template(template).render(request=request, who=None, session=None, **context)
    return HTMLResponse(body, status_code=status_code, headers=HEADERS)


async def console_session(request: Request) -> Session:
    found = await sessions.current(request)
    request.state.console_session = found
    return found


#: the session of a console request (signed in, or anonymous on a server without keys)
Console = Annotated[Session, Depends(console_session)]


async def form(request: Request) -> dict[str, str]:
    """A urlencoded form's fields (the last value of each)."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise InvalidRequestError("the form is too large", code="invalid_form")
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[-1] for name, values in fields.items()}


async def changing(request: Request, session: Session, scope: Scope) -> dict[str, str]:
    """The form of a state change, checked: CSRF token, origin, the scope it needs."""
    fields = await form(request)
    sessions.check_csrf(request, session, fields.get(sessions.CSRF_FIELD))
    if not session.who.has(scope):
        raise ForbiddenError(
            f"this needs a key with the {scope} scope", code="missing_scope", scope=str(scope)
        )
    return fields


def back(url: str, notice: str | None = None) -> RedirectResponse:
    if notice:
        url += ("&" if "?" in url else "?") + "notice=" + quote(notice)
    return RedirectResponse(url, status_code=303)


def _wants_page(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "text/html" in accept or (request.method == "GET" and "event-stream" not in accept)


class ConsoleRoute(APIRoute):
    """A console route: sign-in redirects and errors as pages."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def console_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInNeeded:
                if not _wants_page(request):
                    return Response("sign in first", status_code=401)
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/ui/signin?next={quote(target)}", status_code=303)
            except FreightError as exc:
                status = status_of(exc)
                found = getattr(request.state, "console_session", None)
                context = {"error": exc, "status": status, "code": exc.code}
                if found is None:
                    return bare(request, "error.html", status, **context)
                return page(request, "error.html", found, status, **context)

        return console_handler


__all__ = ["Console", "ConsoleRoute", "back", "bare", "changing", "duration", "form", "page"]
