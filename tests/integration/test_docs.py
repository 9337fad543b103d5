"""``/docs`` and ``/redoc`` work on a host with no internet: freight serves their assets.

Against a real ``freight serve`` (the test project, one model: the shape does not
matter to static pages). Every URL a page references — scripts, styles, icon,
the OpenAPI document, the OAuth2 redirect page — must be freight's own and be
served by it; no absolute ``http(s)://`` URL to any other host may appear.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from urllib.parse import urljoin, urlsplit

import pytest

from tests.fixtures.server import PROJECT, Server

PAGES = ("/docs", "/redoc")
ABSOLUTE_URL = re.compile(r"""https?://[^\s"'<>)]+""")
# src="…", href="…", spec-url="…", and Swagger UI's `url: '…'` / `oauth2RedirectUrl: … + '…'`
REFERENCE = re.compile(
    r"""(?:\b(?:src|href|spec-url)=["']([^"']+)["'])|(?:\burl:\s*'([^']+)')"""
    r"""|(?:oauth2RedirectUrl:[^'\n]*'([^']+)')"""
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One embedded server for the module, serving only the test project's Echo."""
    cwd = tmp_path_factory.mktemp("docs")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FREIGHT_")}
    env["FREIGHT_STATE_DIR"] = str(cwd / "state")
    env["FREIGHT_MODELS"] = json.dumps(["models:Echo"])
    started = Server(env=env, cwd=cwd, project=PROJECT)
    try:
        yield started.start()
    finally:
        started.stop()


def references(html: str) -> list[str]:
    """The URLs a docs page loads or links to, in order."""
    return [next(g for g in match.groups() if g) for match in REFERENCE.finditer(html)]


def other_hosts(html: str, own: str) -> list[str]:
    """Absolute URLs in ``html`` whose host is not ``own``."""
    return [url for url in ABSOLUTE_URL.findall(html) if urlsplit(url).netloc != own]


@pytest.mark.parametrize("page", PAGES)
def test_docs_page_names_no_other_host(server: Server, page: str) -> None:
    """The docs page is HTML that references no host but freight itself."""
    with server.client() as client:
        response = client.get(page)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert other_hosts(response.text, urlsplit(server.url).netloc) == []
    assert "cdn." not in response.text and "googleapis" not in response.text


@pytest.mark.parametrize("page", PAGES)
def test_docs_page_assets_are_served_by_freight(server: Server, page: str) -> None:
    """Every script, style, icon and document the page references is served 200 by freight."""
    with server.client() as client:
        html = client.get(page).text
        urls = references(html)
        assert any(u.endswith(".js") for u in urls), f"{page} loads no script: {html}"
        for url in urls:
            absolute = urljoin(f"{server.url}{page}", url)
            assert urlsplit(absolute).netloc == urlsplit(server.url).netloc, url
            response = client.get(absolute)
            assert response.status_code == 200, f"{page} references {url}: {response.status_code}"
            assert response.content, f"{url} is empty"
            if url.endswith(".js"):
                assert "javascript" in response.headers["content-type"], url
            if url.endswith(".css"):
                assert response.headers["content-type"].startswith("text/css"), url


def test_swagger_ui_does_not_call_the_online_validator(server: Server) -> None:
    """Swagger UI's spec validator (validator.swagger.io) is switched off."""
    with server.client() as client:
        html = client.get("/docs").text
    assert '"validatorUrl": null' in html


def test_reference_parsing() -> None:
    """The page parser finds src, href, spec-url and Swagger UI's url settings."""
    html = (
        '<link href="/a.css"><script src="/b.js"></script><redoc spec-url="/o.json">'
        "url: '/openapi.json',\noauth2RedirectUrl: window.location.origin + '/docs/r',"
        ' <a href="https://cdn.example/x.js">'
    )
    assert references(html) == [
        "/a.css",
        "/b.js",
        "/o.json",
        "/openapi.json",
        "/docs/r",
        "https://cdn.example/x.js",
    ]
    assert other_hosts(html, "127.0.0.1:1") == ["https://cdn.example/x.js"]


def test_assets_ship_in_the_installed_package() -> None:
    """The asset directory freight serves from exists in the installed fastapi-offline."""
    from freight.api import docs

    for name in docs.ASSETS.values():
        assert (docs.ASSETS_DIR / name).stat().st_size > 0, name
