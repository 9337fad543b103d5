"""E-mail: a short message a person reads, per event.

Not a JSON dump: the subject says what happened (``freight: prediction <id>
succeeded (tabular)``), the body gives the status, the target, the timings, the
error when there is one, and a link to the prediction on the API. A new SMTP
connection per message (servers drop idle ones; e-mail volume is low); ``open``
connects (and logs in) once to fail start-up on a wrong host or credential.
``Message-ID`` derives from the event id, so a mail client can spot a retried
duplicate; ``Auto-Submitted`` keeps auto-responders from answering.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from email.message import EmailMessage
from typing import Any, Final, Literal

import aiosmtplib

from freight.notify.event import STARTED, Event, Outcome
from freight.notify.sinks.base import Subscription, describe, sink_error

Security = Literal["starttls", "tls", "none"]
_MAX_ERROR_TEXT: Final = 2000
_UNSAFE_ID = re.compile(r"[^A-Za-z0-9.\-_]")


def _when(text: Any) -> str:
    if not isinstance(text, str):
        return "-"
    try:
        return datetime.fromisoformat(text).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return text


def _ms(value: Any) -> str:
    return "-" if not isinstance(value, int | float) else f"{value:,.1f} ms"


def _what(event: Event) -> str:
    return "started" if event.type == STARTED else event.status


def subject(event: Event) -> str:
    """``freight: prediction <id> succeeded (tabular)``."""
    return f"freight: prediction {event.prediction_id} {_what(event)} ({event.target})"


def link(event: Event, public_url: str) -> str:
    path = f"/v1/predictions/{event.prediction_id}"
    if not public_url:
        return f"{path} on the freight API (set public_url for a full link)"
    return public_url.rstrip("/") + path


def body(event: Event, public_url: str) -> str:
    """The plain-text body: status, target, timings, the error, the link."""
    data = event.data
    metrics = data.get("metrics") or {}
    kind = data.get("kind") or "model"
    rows = [
        ("Status", event.status),
        ("Target", f"{event.target} ({kind})"),
        ("Attempts", str(data.get("attempts", "-"))),
        ("Created", _when(data.get("created_at"))),
        ("Started", _when(data.get("started_at"))),
        ("Finished", _when(data.get("finished_at"))),
        ("Queued for", _ms(metrics.get("queue_ms"))),
        ("Ran for", _ms(metrics.get("run_ms"))),
        ("Total", _ms(metrics.get("total_ms"))),
    ]
    error = data.get("error") or None
    if isinstance(error, dict):
        text = f"{error.get('code')}: {error.get('message') or ''}".strip()
        if len(text) > _MAX_ERROR_TEXT:
            text = text[: _MAX_ERROR_TEXT - 1] + "…"
        rows.append(("Error", text))
    width = max(len(label) for label, _ in rows) + 2
    lines = [f"Prediction {event.prediction_id} on {event.target} {_what(event)}.", ""]
    lines += [f"{label + ':':<{width}}{value}" for label, value in rows]
    lines += ["", f"Details: {link(event, public_url)}", ""]
    return "\n".join(lines)


def compose(event: Event, *, sender: str, to: Sequence[str], public_url: str) -> EmailMessage:
    """The whole message for one event."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Subject"] = subject(event)
    message["Message-ID"] = f"<{_UNSAFE_ID.sub('-', event.id)}@freight>"
    message["Auto-Submitted"] = "auto-generated"
    message["X-Freight-Event-Id"] = event.id
    message["X-Freight-Prediction-Id"] = event.prediction_id
    message.set_content(body(event, public_url))
    return message


class SmtpSink:
    """Mails each event to ``to`` through the SMTP server at ``host:port``."""

    type = "smtp"

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        sender: str,
        to: Sequence[str],
        *,
        public_url: str = "",
        subscription: Subscription | None = None,
        security: Security = "starttls",
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.sender = sender
        self.to = tuple(to)
        self.public_url = public_url
        self.subscription = subscription or Subscription()
        self.security = security
        self.timeout_s = timeout_s
        self._username = username
        self._password = password

    def __repr__(self) -> str:
        return f"SmtpSink(name={self.name!r}, host={self.host!r}, port={self.port})"

    __str__ = __repr__

    def _options(self) -> dict[str, Any]:
        return {
            "hostname": self.host,
            "port": self.port,
            "username": self._username,
            "password": self._password,
            "timeout": self.timeout_s,
            "use_tls": self.security == "tls",
            "start_tls": self.security == "starttls",
        }

    async def open(self) -> None:
        """Connect (and log in, with credentials) once, then quit."""
        client = aiosmtplib.SMTP(**self._options())
        try:
            await client.connect()
            await client.quit()
        except Exception as exc:
            client.close()
            raise sink_error(self, "cannot use the SMTP server", exc, [self._password]) from None

    async def send(self, event: Event) -> Outcome:
        try:
            message = compose(event, sender=self.sender, to=self.to, public_url=self.public_url)
            await aiosmtplib.send(message, **self._options())
        except Exception as exc:
            code = getattr(exc, "code", None)
            error = describe(exc, [self._password])
            return Outcome.failed(error, code if isinstance(code, int) else None)
        return Outcome.ok()

    async def close(self) -> None:
        """Nothing is held between messages."""
