"""``/docs`` (Swagger UI) and ``/redoc`` served from freight itself, with no CDN.

FastAPI's own pages load their JavaScript, CSS and favicon from public CDNs,
so on a host without internet access ``/docs`` is a blank page. The same
assets ship inside the ``fastapi-offline`` package (a dependency of freight);
:func:`install` mounts its ``static`` directory under :data:`ASSETS_URL` and
replaces FastAPI's two pages (and Swagger UI's OAuth2 redirect page) with ones
pointing there. Swagger UI's online spec validator is switched off too: it
would send the schema to validator.swagger.io.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse
from starlette.routing import BaseRoute, Route

#: The directory of swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js, favicon.png.
ASSETS_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
#: Where those files are served.
ASSETS_URL = "/docs-assets"
ASSETS = {
    "swagger_js": "swagger-ui-bundle.js",
    "swagger_css": "swagger-ui.css",
    "redoc_js": "redoc.standalone.js",
    "favicon": "favicon.png",
}


def install(app: FastAPI) -> None:
    """Serve the app's docs pages from local assets (call after creating the app)."""
    pages = {url for url in (app.docs_url, app.redoc_url) if url}
    if not app.openapi_url or not pages:
        return
    missing = [name for name in ASSETS.values() if not (ASSETS_DIR / name).is_file()]
    if missing:
        raise RuntimeError(f"fastapi-offline is missing {missing} under {ASSETS_DIR}")
    redirect_url = app.swagger_ui_oauth2_redirect_url if app.docs_url else None
    app.router.routes[:] = [r for r in app.router.routes if not _replaced(r, pages, redirect_url)]
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS_DIR), name="docs-assets")
    if app.docs_url:
        _add_swagger(app, app.docs_url, app.openapi_url, redirect_url)
    if app.redoc_url:
        _add_redoc(app, app.redoc_url, app.openapi_url)


def _replaced(route: BaseRoute, pages: set[str], redirect_url: str | None) -> bool:
    return isinstance(route, Route) and (route.path in pages or route.path == redirect_url)


def _asset(request: Request, key: str) -> str:
    root = str(request.scope.get("root_path", "")).rstrip("/")
    return f"{root}{ASSETS_URL}/{ASSETS[key]}"


def _add_swagger(app: FastAPI, url: str, openapi_url: str, redirect_url: str | None) -> None:
    parameters = {"validatorUrl": None, **(app.swagger_ui_parameters or {})}

    async def swagger_ui_html(request: Request) -> HTMLResponse:
        root = str(request.scope.get("root_path", "")).rstrip("/")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=_asset(request, "swagger_js"),
            swagger_css_url=_asset(request, "swagger_css"),
            swagger_favicon_url=_asset(request, "favicon"),
            oauth2_redirect_url=root + redirect_url if redirect_url else None,
            init_oauth=app.swagger_ui_init_oauth,
            swagger_ui_parameters=parameters,
        )

    app.add_route(url, swagger_ui_html, include_in_schema=False)
    if redirect_url:

        async def swagger_ui_redirect(request: Request) -> HTMLResponse:
            return get_swagger_ui_oauth2_redirect_html()

        app.add_route(redirect_url, swagger_ui_redirect, include_in_schema=False)


def _add_redoc(app: FastAPI, url: str, openapi_url: str) -> None:
    async def redoc_html(request: Request) -> HTMLResponse:
        root = str(request.scope.get("root_path", "")).rstrip("/")
        return get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=_asset(request, "redoc_js"),
            redoc_favicon_url=_asset(request, "favicon"),
            with_google_fonts=False,
        )

    app.add_route(url, redoc_html, include_in_schema=False)
