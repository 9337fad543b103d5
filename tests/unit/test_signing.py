"""UrlSigner: HMAC-signed, expiring URLs bound to a method and a path."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from freight.errors import UrlError
from freight.signing import UrlSigner

NOW = 1_800_000_000.0
PATH = "/v1/objects/predictions/p1/output"


def split(url: str) -> tuple[str, str, str]:
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    return parts.path, query["expires"][0], query["sig"][0]


@pytest.fixture
def signer() -> UrlSigner:
    return UrlSigner(b"unit-test-secret")


def code_of(
    signer: UrlSigner,
    method: str,
    path: str,
    expires: str | None,
    sig: str | None,
    now: float = NOW,
) -> str:
    with pytest.raises(UrlError) as info:
        signer.verify(method, path, expires, sig, now=now)
    return info.value.code


def test_sign_returns_path_with_expiry_and_signature(signer: UrlSigner) -> None:
    """sign() keeps the path and appends expires (absolute epoch seconds) and sig."""
    path, expires, sig = split(signer.sign("GET", PATH, expires_s=60, now=NOW))
    assert path == PATH
    assert int(expires) == int(NOW) + 60
    assert len(sig) == 64 and all(c in "0123456789abcdef" for c in sig)


def test_round_trip_verifies(signer: UrlSigner) -> None:
    """A freshly signed URL verifies for the same method and path."""
    path, expires, sig = split(signer.sign("GET", PATH, expires_s=60, now=NOW))
    signer.verify("GET", path, expires, sig, now=NOW + 30)


def test_valid_up_to_the_expiry_second(signer: UrlSigner) -> None:
    """A URL verifies at exactly its expiry and fails one second later."""
    path, expires, sig = split(signer.sign("GET", PATH, expires_s=60, now=NOW))
    signer.verify("GET", path, expires, sig, now=NOW + 60)
    assert code_of(signer, "GET", path, expires, sig, now=NOW + 61) == "url_expired"


def test_expired_error_carries_expiry(signer: UrlSigner) -> None:
    """An expired URL's error says when it expired."""
    path, expires, sig = split(signer.sign("GET", PATH, expires_s=1, now=NOW))
    with pytest.raises(UrlError) as info:
        signer.verify("GET", path, expires, sig, now=NOW + 5)
    assert info.value.detail["expired_at"] == int(expires)


def test_method_is_case_insensitive(signer: UrlSigner) -> None:
    """The method is normalised to upper case on both sides."""
    path, expires, sig = split(signer.sign("get", PATH, expires_s=60, now=NOW))
    signer.verify("GET", path, expires, sig, now=NOW)


def test_bound_to_method(signer: UrlSigner) -> None:
    """A GET URL cannot be used for PUT."""
    path, expires, sig = split(signer.sign("GET", PATH, expires_s=60, now=NOW))
    assert code_of(signer, "PUT", path, expires, sig) == "bad_signature"


def test_bound_to_path(signer: UrlSigner) -> None:
    """A URL for one object cannot be used for another."""
    _, expires, sig = split(signer.sign("GET", PATH, expires_s=60, now=NOW))
    assert code_of(signer, "GET", PATH + "x", expires, sig) == "bad_signature"
    assert code_of(signer, "GET", "/v1/objects/other", expires, sig) == "bad_signature"


def test_extending_expiry_breaks_signature(signer: UrlSigner) -> None:
    """Changing the expiry invalidates the signature (it is signed too)."""
    path, expires, sig = split(signer.sign("GET", PATH, expires_s=60, now=NOW))
    assert code_of(signer, "GET", path, str(int(expires) + 3600), sig) == "bad_signature"


def test_tampered_signature(signer: UrlSigner) -> None:
    """A signature with one character changed is rejected."""
    path, expires, sig = split(signer.sign("GET", PATH, expires_s=60, now=NOW))
    flipped = ("0" if sig[0] != "0" else "1") + sig[1:]
    assert code_of(signer, "GET", path, expires, flipped) == "bad_signature"


def test_tampered_and_expired_reports_bad_signature(signer: UrlSigner) -> None:
    """A forged URL is reported as bad_signature even when also past its expiry."""
    path, expires, _sig = split(signer.sign("GET", PATH, expires_s=60, now=NOW))
    assert code_of(signer, "GET", path, expires, "0" * 64, now=NOW + 999) == "bad_signature"


def test_other_secret_rejected(signer: UrlSigner) -> None:
    """A URL signed with another secret does not verify."""
    path, expires, sig = split(UrlSigner(b"other").sign("GET", PATH, expires_s=60, now=NOW))
    assert code_of(signer, "GET", path, expires, sig) == "bad_signature"


@pytest.mark.parametrize(
    ("expires", "sig"),
    [(None, "abc"), ("123", None), ("", "abc"), ("123", ""), (None, None)],
)
def test_missing_parameters(signer: UrlSigner, expires: str | None, sig: str | None) -> None:
    """A URL without expires or sig is missing_signature."""
    assert code_of(signer, "GET", PATH, expires, sig) == "missing_signature"


def test_non_numeric_expiry(signer: UrlSigner) -> None:
    """A non-numeric expiry is bad_signature, not a crash."""
    assert code_of(signer, "GET", PATH, "soon", "0" * 64) == "bad_signature"


def test_default_clock_is_now(signer: UrlSigner) -> None:
    """Without an explicit now, sign and verify use the real clock."""
    path, expires, sig = split(signer.sign("GET", PATH, expires_s=60))
    signer.verify("GET", path, expires, sig)
    assert code_of(signer, "GET", path, expires, sig, now=float(expires) + 1) == "url_expired"


@pytest.mark.parametrize("sig", ["é" * 64, "\udcff", "🙂", "\x00"])
def test_non_ascii_signature_is_bad_not_a_crash(signer: UrlSigner, sig: str) -> None:
    """A signature with non-ASCII characters is ``bad_signature`` (compare_digest of two
    str raises TypeError on non-ASCII, which reached the client as a 500)."""
    _, expires, _ = split(signer.sign("GET", PATH, expires_s=60, now=NOW))
    assert code_of(signer, "GET", PATH, expires, sig) == "bad_signature"
