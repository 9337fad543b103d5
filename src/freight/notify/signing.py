"""Webhook signing secrets (Standard Webhooks), with rotation.

A receiver verifies each webhook against the secret it was given. To rotate
without dropping deliveries, freight signs with the new secret *and* the old
one(s) for an overlap period: the ``webhook-signature`` header carries one
``v1,<base64>`` entry per secret, space-separated, and a receiver accepts the
message when any entry matches a secret it knows (``standardwebhooks.Webhook.verify``
does exactly that). Secrets are ``whsec_`` + base64 of 24 to 64 random bytes.

The secrets never appear in a repr, a str or an error message.
"""

from __future__ import annotations

import base64
import binascii
import secrets as _random
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Final

from standardwebhooks import Webhook

PREFIX: Final = "whsec_"
MIN_BYTES: Final = 24
MAX_BYTES: Final = 64


def generate_secret(nbytes: int = 32) -> str:
    """A new random signing secret in the ``whsec_<base64>`` format."""
    if not MIN_BYTES <= nbytes <= MAX_BYTES:
        raise ValueError(f"a secret has {MIN_BYTES} to {MAX_BYTES} bytes, not {nbytes}")
    return PREFIX + base64.b64encode(_random.token_bytes(nbytes)).decode("ascii")


def _check(secret: str, which: str) -> str:
    """Return ``secret`` when it is ``whsec_`` + base64 of enough bytes; the error names
    ``which`` secret (never its value)."""
    if not secret.startswith(PREFIX):
        raise ValueError(f"the {which} webhook secret must start with {PREFIX!r}")
    try:
        raw = base64.b64decode(secret[len(PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"the {which} webhook secret is not valid base64") from None
    if not MIN_BYTES <= len(raw) <= MAX_BYTES:
        raise ValueError(
            f"the {which} webhook secret decodes to {len(raw)} bytes; "
            f"{MIN_BYTES} to {MAX_BYTES} are taken"
        )
    return secret


def _utc(timestamp: datetime) -> datetime:
    """The instant in UTC. The package reads the wall-clock fields as UTC
    (``replace(tzinfo=utc)``), so a naive or non-UTC datetime would sign the wrong
    second: refuse naive ones, convert aware ones."""
    if timestamp.tzinfo is None or timestamp.utcoffset() is None:
        raise ValueError("the signing timestamp must be timezone-aware")
    return timestamp.astimezone(UTC)


class WebhookSecrets:
    """The current signing secret and, during a rotation overlap, the previous ones."""

    __slots__ = ("_current", "_hooks", "_previous")

    def __init__(self, current: str, previous: Iterable[str] = ()) -> None:
        self._current = _check(current, "current")
        self._previous = tuple(_check(s, f"previous #{i + 1}") for i, s in enumerate(previous))
        self._hooks = tuple(Webhook(s) for s in self.all)

    @classmethod
    def generate(cls) -> WebhookSecrets:
        return cls(generate_secret())

    @classmethod
    def parse(cls, current: str, previous: str = "") -> WebhookSecrets:
        """From environment text: ``previous`` holds zero or more secrets separated by
        commas or whitespace."""
        return cls(current.strip(), previous.replace(",", " ").split())

    @property
    def current(self) -> str:
        return self._current

    @property
    def previous(self) -> tuple[str, ...]:
        return self._previous

    @property
    def all(self) -> tuple[str, ...]:
        """Every secret that signs, the current one first."""
        return (self._current, *self._previous)

    def rotate(self, new: str | None = None) -> WebhookSecrets:
        """Start an overlap: ``new`` (or a generated one) signs alongside the current."""
        return WebhookSecrets(new or generate_secret(), (self._current, *self._previous))

    def retire(self) -> WebhookSecrets:
        """End the overlap: only the current secret signs."""
        return WebhookSecrets(self._current)

    def sign(self, msg_id: str, timestamp: datetime, body: str) -> str:
        """The ``webhook-signature`` header value: one ``v1,<sig>`` per secret."""
        when = _utc(timestamp)
        return " ".join(hook.sign(msg_id, when, body) for hook in self._hooks)

    def headers(self, msg_id: str, timestamp: datetime, body: str) -> dict[str, str]:
        """The three Standard Webhooks headers for one message."""
        when = _utc(timestamp)
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(when.timestamp())),
            "webhook-signature": self.sign(msg_id, when, body),
        }

    def __repr__(self) -> str:
        return f"WebhookSecrets(current=<hidden>, previous={len(self._previous)} hidden)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WebhookSecrets) and self.all == other.all

    def __hash__(self) -> int:
        return hash(self.all)
