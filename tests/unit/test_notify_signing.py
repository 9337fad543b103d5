"""Webhook signing secrets: the Standard Webhooks format, rotation, and hygiene.

Every signature is checked with the reference verifier, ``standardwebhooks.Webhook``.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from freight.notify.signing import WebhookSecrets, generate_secret

BODY = '{"type":"prediction.completed","data":{"id":"p1"}}'


def test_generated_secrets_are_whsec_base64_of_32_random_bytes() -> None:
    """A generated secret is ``whsec_`` + base64 of 32 bytes, and two are never equal."""
    one, two = generate_secret(), generate_secret()
    assert one.startswith("whsec_") and one != two
    assert len(base64.b64decode(one.removeprefix("whsec_"))) == 32


def test_headers_verify_with_the_reference_verifier() -> None:
    """The three headers and the body pass ``Webhook(secret).verify``."""
    secrets = WebhookSecrets.generate()
    headers = secrets.headers("evt_1", datetime.now(UTC), BODY)
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-id"] == "evt_1"
    assert Webhook(secrets.current).verify(BODY, headers) == {
        "type": "prediction.completed",
        "data": {"id": "p1"},
    }


def test_a_tampered_body_or_another_secret_fails_verification() -> None:
    """A changed body, or a secret the sender does not hold, does not verify."""
    secrets = WebhookSecrets.generate()
    headers = secrets.headers("evt_1", datetime.now(UTC), BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(secrets.current).verify(BODY.replace("p1", "p2"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(BODY, headers)


def test_rotation_signs_with_every_secret_and_each_verifies() -> None:
    """During an overlap the header carries one ``v1,`` entry per secret; old and new
    receivers both verify, and retiring drops the old one."""
    old = WebhookSecrets.generate()
    both = old.rotate()
    assert both.previous == (old.current,)
    headers = both.headers("evt_2", datetime.now(UTC), BODY)
    entries = headers["webhook-signature"].split(" ")
    assert len(entries) == 2 and all(e.startswith("v1,") for e in entries)
    Webhook(old.current).verify(BODY, headers)
    Webhook(both.current).verify(BODY, headers)
    retired = both.retire().headers("evt_2", datetime.now(UTC), BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(old.current).verify(BODY, retired)


def test_each_entry_is_the_packages_own_single_signature() -> None:
    """The multi-secret header is exactly the package's one-secret signatures, joined."""
    a, b = generate_secret(), generate_secret()
    when = datetime.now(UTC)
    header = WebhookSecrets(a, [b]).sign("evt_3", when, BODY)
    singles = [Webhook(s).sign("evt_3", when, BODY) for s in (a, b)]
    assert header == " ".join(singles)


def test_a_non_utc_aware_timestamp_signs_the_same_instant() -> None:
    """An aware non-UTC datetime is converted (the package would read its wall clock as
    UTC and sign the wrong second); the result verifies."""
    secrets = WebhookSecrets.generate()
    utc = datetime.now(UTC).replace(microsecond=0)
    paris = utc.astimezone(timezone(timedelta(hours=2)))
    assert secrets.headers("e", paris, BODY) == secrets.headers("e", utc, BODY)
    Webhook(secrets.current).verify(BODY, secrets.headers("e", paris, BODY))


def test_a_naive_timestamp_is_refused() -> None:
    """A naive datetime is ambiguous, so signing with one raises instead of signing wrongly."""
    with pytest.raises(ValueError, match="timezone-aware"):
        WebhookSecrets.generate().sign("e", datetime.now(), BODY)


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("s3cr3t-no-prefix-value", "must start with 'whsec_'"),
        ("whsec_***not-base64***", "not valid base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "decodes to 5 bytes"),
    ],
)
def test_malformed_secrets_are_refused_without_echoing_them(secret: str, message: str) -> None:
    """A malformed secret is refused with a reason that never contains the secret."""
    with pytest.raises(ValueError, match=message.replace("*", r"\*")) as info:
        WebhookSecrets(secret)
    assert secret not in str(info.value)


def test_parse_reads_previous_secrets_separated_by_commas_or_spaces() -> None:
    """The environment form: the current secret, and previous ones comma/space separated."""
    a, b, c = generate_secret(), generate_secret(), generate_secret()
    parsed = WebhookSecrets.parse(f" {a}\n", f"{b}, {c}")
    assert parsed.all == (a, b, c) and parsed == WebhookSecrets(a, [b, c])


def test_repr_and_str_hide_every_secret() -> None:
    """Neither repr nor str shows a secret (they end up in logs)."""
    secrets = WebhookSecrets.generate().rotate()
    for text in (repr(secrets), str(secrets), f"{secrets}", repr([secrets])):
        assert all(s not in text and s.removeprefix("whsec_") not in text for s in secrets.all)
