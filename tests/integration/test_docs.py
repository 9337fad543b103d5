"""``/docs`` and ``/redoc`` work on a host with no internet: freight serves their assets;
and ``/openapi.json`` behind them is whole (every ``$ref`` resolves) and as strict as
the server.

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
from typing import Any
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


def refs(node: Any) -> Iterator[str]:
    """Every ``$ref`` under ``node``."""
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def resolve(document: dict[str, Any], ref: str) -> Any:
    """The node a local JSON pointer (``#/a/b``) names; KeyError where there is none."""
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def parameter(document: dict[str, Any], path: str, method: str, name: str) -> dict[str, Any]:
    found = [p for p in document["paths"][path][method]["parameters"] if p["name"] == name]
    assert len(found) == 1, (path, method, name)
    schema: dict[str, Any] = found[0]["schema"]
    strings = [s for s in schema.get("anyOf", [schema]) if s.get("type") == "string"]
    return strings[0] if strings else schema


@pytest.fixture(scope="module")
def document(server: Server) -> dict[str, Any]:
    with server.client() as client:
        response = client.get("/openapi.json")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def test_every_ref_of_the_openapi_document_resolves(document: dict[str, Any]) -> None:
    """Every ``$ref`` in /openapi.json names a node of the document: the create bodies'
    nested objects (a webhook, a batch job's uploads) included."""
    found = sorted(set(refs(document)))
    unresolved = []
    for ref in found:
        try:
            resolve(document, ref)
        except (KeyError, AssertionError):
            unresolved.append(ref)
    assert unresolved == []
    assert {"#/components/schemas/WebhookIn", "#/components/schemas/BatchUpload"} <= set(found)


def test_the_document_declares_what_the_server_enforces(document: dict[str, Any]) -> None:
    """Cursors, the webhook query parameters and Last-Event-ID carry the patterns and
    lengths the server checks; the real-time routes declare their 424 with the
    prediction's id, the event stream its 503 with Retry-After."""
    from freight.api.params import CURSOR_PATTERN, WEBHOOK_EVENTS_PATTERN
    from freight.api.routes.events import EVENT_ID_PATTERN
    from freight.api.schemas import WEBHOOK_URL_MAX, WEBHOOK_URL_PATTERN

    for path in ("/v1/predictions", "/v1/batch-jobs"):
        cursor = parameter(document, path, "get", "cursor")
        assert (cursor["pattern"], cursor["maxLength"]) == (CURSOR_PATTERN, 64), path
    for path in ("/v1/models/{name}/predict", "/v1/pipelines/{name}/predict"):
        url = parameter(document, path, "post", "webhook")
        assert (url["pattern"], url["maxLength"]) == (WEBHOOK_URL_PATTERN, WEBHOOK_URL_MAX)
        assert parameter(document, path, "post", "webhook_events")["pattern"] == (
            WEBHOOK_EVENTS_PATTERN
        )
        failed = document["paths"][path]["post"]["responses"]["424"]
        assert "X-Freight-Prediction-Id" in failed["headers"], path
    events = "/v1/predictions/{prediction_id}/events"
    last = parameter(document, events, "get", "Last-Event-ID")
    assert (last["type"], last["pattern"]) == ("string", EVENT_ID_PATTERN)
    assert "Retry-After" in document["paths"][events]["get"]["responses"]["503"]["headers"]


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"cursor": "A" * 64}, 400),  # the shape of a cursor, not one freight issued
        ({"cursor": "not-a-cursor"}, 400),
        ({"cursor": "A" * 63 + "="}, 400),
    ],
)
def test_a_cursor_outside_the_declared_shape_is_refused(
    server: Server, params: dict[str, str], status: int
) -> None:
    """A cursor is refused (400 ``invalid_cursor``) whether or not it has the declared shape."""
    with server.client() as client:
        response = client.get("/v1/predictions", params=params)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == "invalid_cursor"


@pytest.mark.parametrize(
    ("events", "status"),
    [
        ("started, completed", 200),
        ("completed", 200),
        ("started,,completed", 422),  # an empty name: outside the declared list
        ("", 422),
        ("finished", 422),
    ],
)
def test_webhook_events_are_taken_as_declared(server: Server, events: str, status: int) -> None:
    """``webhook_events`` is accepted exactly when it matches its declared pattern."""
    from freight.api.params import WEBHOOK_EVENTS_PATTERN

    assert bool(re.match(WEBHOOK_EVENTS_PATTERN, events)) == (status == 200)
    params = {"webhook": "https://hooks.example.com/in", "webhook_events": events}
    with server.client() as client:
        response = client.post("/v1/models/echo/predict", json={"x": 1}, params=params)
    assert response.status_code == status, response.text


def test_assets_ship_in_the_installed_package() -> None:
    """The asset directory freight serves from exists in the installed fastapi-offline."""
    from freight.api import docs

    for name in docs.ASSETS.values():
        assert (docs.ASSETS_DIR / name).stat().st_size > 0, name
