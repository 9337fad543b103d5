"""The operator console at ``/ui``: server-rendered pages (Jinja2), small inline SVG
charts, a pipeline run's DAG updated live over server-sent events, and a few lines
of vanilla JavaScript and CSS shipped in the package (no build step, no CDN: it
works on an air-gapped host).

It acts with exactly the signed-in key's scopes and tenant, through the same
services as the API (:mod:`freight.api.console.session` for sessions and CSRF).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from freight.access import Scope
from freight.api.console import operations, overview, predictions, runs
from freight.api.console import session as sessions
from freight.api.console.pages import Console, ConsoleRoute, bare, changing, form
from freight.api.errors import status_of
from freight.errors import ForbiddenError, UnauthorizedError

if TYPE_CHECKING:
    from fastapi import FastAPI

    from freight.signing import UrlSigner

STATIC = Path(__file__).parent / "static"
router = APIRouter(prefix="/ui", route_class=ConsoleRoute, include_in_schema=False)


def _next(url: str | None) -> str:
    """Where to go after signing in: a console page of this server, nothing else."""
    if url and url.startswith("/ui") and not url.startswith("//") and "\\" not in url:
        return url
    return "/ui"


async def _keys_required(request: Request) -> bool:
    ring = getattr(request.app.state, "keyring", None)
    return ring is not None and bool(await ring.required())


@router.get("/signin")
async def signin_page(request: Request, next: str | None = None) -> Response:
    """The sign-in form (a server without keys needs none: straight to the console)."""
    if not await _keys_required(request):
        return RedirectResponse(_next(next), status_code=303)
    return bare(request, "signin.html", next=_next(next))


@router.post("/signin")
async def signin(request: Request) -> Response:
    """Authenticate a key; set the session cookie (the key itself is not kept)."""
    sessions.check_origin(request)
    fields = await form(request)
    target = _next(fields.get("next"))
    try:
        token = await sessions.sign_in(request, fields.get("key", ""))
    except (UnauthorizedError, ForbiddenError) as exc:
        return bare(
            request, "signin.html", status_of(exc), next=target, error=exc.message, code=exc.code
        )
    response = RedirectResponse(target, status_code=303)
    sessions.set_cookie(request, response, token)
    return response


@router.post("/signout")
async def signout(request: Request, session: Console) -> Response:
    """End this browser's session."""
    await changing(request, session, Scope.READ)
    response = RedirectResponse("/ui/signin", status_code=303)
    sessions.clear_cookie(request, response)
    return response


def install(app: FastAPI, signer: UrlSigner) -> None:
    """Serve the console at ``/ui`` (its session key derived from the server's secret)."""
    app.state.console_secret = signer.derive("console-session")
    for module_router in (router, overview.router, runs.router, predictions.router):
        app.include_router(module_router)
    app.include_router(operations.router)
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="console-static")


__all__ = ["install"]
