"""The signed download route ``/v1/objects/{key}`` of the local-directory backend.

Only the embedded shape serves it: on S3 the store presigns its own URLs (and moto
accepts any signature, see tests/fixtures/s3.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from freight.signing import UrlSigner
from tests.fixtures.server import Server
from tests.integration.helpers import error_code, wait_done

pytestmark = pytest.mark.parametrize("shape", ["embedded"], indirect=True)


def _output_url(server: Server, data: bytes) -> str:
    """The presigned output_url of a finished `reverse` prediction of ``data``."""
    with server.client() as client:
        response = client.post(
            "/v1/models/reverse/predict",
            params={"timeout": 30},
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert response.status_code == 200, response.text
        done = wait_done(client, response.headers["X-Freight-Prediction-Id"])
    url: str = done["output_url"]
    assert url and urlsplit(url).path.startswith("/v1/objects/"), done
    return url


def _refused(url: str, code: str) -> None:
    response = httpx.get(url)
    assert response.status_code == 403, (url, response.status_code, response.text)
    assert error_code(response) == code, response.text


def test_download_urls_refuse_unsigned_tampered_expired_and_borrowed_signatures(
    make_server: Callable[..., Server],
) -> None:
    """A download URL serves its object only as signed: unsigned -> missing_signature,
    tampered or another object's signature -> bad_signature, past expiry -> url_expired."""
    server = make_server(models=["Reverse"])
    url_a = _output_url(server, b"first object")
    url_b = _output_url(server, b"second object")
    assert httpx.get(url_a).content == b"tcejbo tsrif"  # the genuine URL works

    parts_a, parts_b = urlsplit(url_a), urlsplit(url_b)
    query_a = {k: v[0] for k, v in parse_qs(parts_a.query).items()}
    base = f"{parts_a.scheme}://{parts_a.netloc}"

    _refused(f"{base}{parts_a.path}", "missing_signature")
    _refused(f"{base}{parts_a.path}?expires={query_a['expires']}", "missing_signature")
    flipped = query_a["sig"][:-1] + ("0" if query_a["sig"][-1] != "0" else "1")
    _refused(f"{base}{parts_a.path}?expires={query_a['expires']}&sig={flipped}", "bad_signature")
    later = int(query_a["expires"]) + 3600  # a longer life is not the signer's to grant
    _refused(f"{base}{parts_a.path}?expires={later}&sig={query_a['sig']}", "bad_signature")
    _refused(f"{base}{parts_b.path}?{parts_a.query}", "bad_signature")  # A's sig on B

    secret = (Path(server.env["FREIGHT_STATE_DIR"]) / "secret.key").read_text().strip()
    signer = UrlSigner(secret.encode())
    fresh = signer.sign_until("GET", parts_b.path, time.time() + 600)
    assert httpx.get(f"{base}{fresh}").content == b"tcejbo dnoces"  # the test signs as freight
    expired = signer.sign_until("GET", parts_b.path, time.time() - 60)
    _refused(f"{base}{expired}", "url_expired")
