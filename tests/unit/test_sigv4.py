"""SigV4: freight's check of a signature against botocore's own signer, the header's
parsing, the clock skew, and the sealing of secrets."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from freight import sigv4
from freight.errors import UnauthorizedError


def signed(pair: sigv4.NewPair, body: bytes = b'{"x": 1}', **headers: str) -> AWSRequest:
    """A request signed by botocore exactly as boto3's client signs one."""
    request = AWSRequest(
        method="POST",
        url="http://127.0.0.1:8000/endpoints/my.model_1/invocations?b=2&a=1",
        data=body,
        headers={"Content-Type": "application/json", **headers},
    )
    SigV4Auth(Credentials(pair.access_key_id, pair.secret), "sagemaker", "eu-west-1").add_auth(
        request
    )
    return request


def received(request: AWSRequest, **changes: Any) -> sigv4.SignedRequest:
    """The request as the server sees it (the host header the client's HTTP layer adds)."""
    headers = [(k, v.decode() if isinstance(v, bytes) else v) for k, v in request.headers.items()]
    fields: dict[str, Any] = {
        "method": "POST",
        "raw_path": "/endpoints/my.model_1/invocations",
        "query": "b=2&a=1",
        "headers": [*headers, ("Host", "127.0.0.1:8000")],
        "body": request.body,
    }
    return sigv4.SignedRequest(**(fields | changes))


def check(request: sigv4.SignedRequest, secret: str, now: float | None = None) -> None:
    header = dict(request.headers)["Authorization"]
    auth = sigv4.parse(header)
    amz_date = sigv4.check_time(dict(request.headers)["X-Amz-Date"], auth, now or time.time())
    sigv4.verify(request, auth, amz_date, secret)


def test_a_botocore_signature_verifies_and_any_change_breaks_it() -> None:
    pair = sigv4.new_pair()
    assert sigv4.is_access_key_id(pair.access_key_id) and len(pair.secret) == 40
    request = signed(pair, **{"X-Amzn-SageMaker-Custom-Attributes": "a=b,  c"})
    check(received(request), pair.secret)
    with pytest.raises(UnauthorizedError) as wrong:
        check(received(request), pair.secret + "x")
    assert wrong.value.code == "invalid_signature"
    for change in (
        {"body": b'{"x": 2}'},
        {"raw_path": "/endpoints/other/invocations"},
        {"query": "a=1"},
        {"method": "PUT"},
    ):
        with pytest.raises(UnauthorizedError):
            check(received(request, **change), pair.secret)
    tampered = [
        (k, "a=c" if k.endswith("Custom-Attributes") else v) for k, v in received(request).headers
    ]
    with pytest.raises(UnauthorizedError):
        check(received(request, headers=tampered), pair.secret)


def test_the_header_and_the_clock_are_checked() -> None:
    pair = sigv4.new_pair()
    request = received(signed(pair))
    with pytest.raises(UnauthorizedError) as late:
        check(request, pair.secret, now=time.time() + sigv4.MAX_SKEW_S + 60)
    assert late.value.code == "signature_expired"
    for header in (
        "AWS4-HMAC-SHA256 Credential=K/20260101/r/s, SignedHeaders=host, Signature=zz",
        "AWS4-HMAC-SHA256 Credential=K/20260101/r/s/aws4_request, SignedHeaders=x-amz-date, "
        "Signature=" + "0" * 64,
        "Basic abc",
    ):
        with pytest.raises(UnauthorizedError) as bad:
            sigv4.parse(header)
        assert bad.value.code == "malformed_authorization"
    auth = sigv4.parse(dict(request.headers)["Authorization"])
    assert (auth.region, auth.service) == ("eu-west-1", "sagemaker")
    other_day = datetime.now(UTC).replace(year=2001).strftime("%Y%m%dT%H%M%SZ")
    with pytest.raises(UnauthorizedError):
        sigv4.check_time(other_day, auth, time.time())


def test_secrets_are_sealed_per_key_and_server_secret() -> None:
    sealer = sigv4.Sealer(b"server-secret")
    sealed = sealer.seal("FRKAAAAAAAAAAAAAAAAA", "the secret")
    assert "the secret" not in sealed
    assert sealer.open("FRKAAAAAAAAAAAAAAAAA", sealed) == "the secret"
    assert sealer.open("FRKBBBBBBBBBBBBBBBBB", sealed) is None  # moved to another row
    assert sigv4.Sealer(b"another").open("FRKAAAAAAAAAAAAAAAAA", sealed) is None
    assert sealer.seal("FRKAAAAAAAAAAAAAAAAA", "the secret") != sealed  # a fresh nonce
