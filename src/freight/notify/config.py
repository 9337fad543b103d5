"""The ``notifications:`` section of ``freight.yaml``, and the sinks it builds.

```yaml
notifications:
  webhooks: {allow_private: false, timeout_s: 10}
  sinks:
    - {name: ops, type: webhook, url: "https://hooks.example.com/freight", events: [completed]}
    - {name: stream, type: redis, url_env: FREIGHT_REDIS_URL, stream: freight-events}
```

Credentials come only from environment variables named by ``*_env`` keys: a
password, token, secret or broker URL written inline is refused with a message
saying which ``*_env`` key to use, so that ``freight.yaml`` can be committed.
The models hold variable *names* only; ``notify/build.py`` reads the values
and hands them to the sinks, whose reprs never show them. ``events`` and
``targets`` default to all. ``FREIGHT_WEBHOOK_ALLOW_PRIVATE`` overrides
``webhooks.allow_private`` (see :func:`allow_private`).

Errors name the sink: ``notifications: sinks[2] (mail): ...``. A wrong
section raises ConfigError; a missing environment variable raises SinkError
(the section is right, the deployment is not).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from freight.config import read_yaml
from freight.errors import ConfigError, InvalidRequestError
from freight.notify.addresses import check_url_text
from freight.notify.event import EventName

ALLOW_PRIVATE_ENV: Final = "FREIGHT_WEBHOOK_ALLOW_PRIVATE"
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off", ""})
EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=200)]
#: keys that would hold a credential (or a URL that often embeds one) inline
_INLINE: Final = (
    *("password", "token", "secret", "secrets", "username", "user"),
    *("servers", "bootstrap", "url"),
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SinkBase(_Model):
    """What every sink has: a unique name, and which events and targets it wants."""

    type: str
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    events: list[EventName] | None = None  # None: all
    targets: list[str] | None = None  # None: all
    timeout_s: float | None = Field(default=None, gt=0)  # per attempt
    # what a message says: freight's event (webhooks: {type, timestamp, data}; brokers:
    # a CloudEvent), or SageMaker's async notification JSON (completed events only)
    format: Literal["freight", "sagemaker"] = "freight"

    #: keys of _INLINE this type takes inline (a webhook's URL is not a secret)
    INLINE_OK: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _no_inline_credentials(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            for key in _INLINE:
                if key in data and key not in cls.INLINE_OK:
                    raise ValueError(
                        f"{key!r} must not be written inline; name an environment "
                        f"variable that holds it with '{key}_env'"
                    )
        return data


class WebhookSinkConfig(SinkBase):
    type: Literal["webhook"]
    url: str | None = Field(default=None, max_length=2048)
    url_env: EnvName | None = None
    secret_env: EnvName | None = None  # default: webhooks.secret_env
    previous_secrets_env: EnvName | None = None  # default: webhooks.previous_secrets_env

    INLINE_OK: ClassVar[frozenset[str]] = frozenset({"url"})

    @model_validator(mode="after")
    def _one_url(self) -> WebhookSinkConfig:
        if (self.url is None) == (self.url_env is None):
            raise ValueError("give exactly one of 'url' and 'url_env'")
        if self.url is not None:
            try:  # scheme, length, text; the address ranges are checked at build
                check_url_text(self.url, allow_private=True)
            except InvalidRequestError as exc:
                raise ValueError(exc.message) from None
            if "@" in self.url.split("//", 1)[-1].split("/", 1)[0]:
                raise ValueError("the url carries credentials; put the URL in 'url_env'")
        return self


class RedisSinkConfig(SinkBase):
    type: Literal["redis"]
    url_env: EnvName
    stream: str = Field(min_length=1)
    maxlen: int | None = Field(default=None, ge=1)  # trim the stream to about this many entries


class NatsSinkConfig(SinkBase):
    type: Literal["nats"]
    servers_env: EnvName  # one URL or several, comma-separated
    subject: str = Field(min_length=1)
    stream: str | None = None
    create_stream: bool = False
    user_env: EnvName | None = None
    password_env: EnvName | None = None
    token_env: EnvName | None = None

    @model_validator(mode="after")
    def _stream_to_create(self) -> NatsSinkConfig:
        if self.create_stream and not self.stream:
            raise ValueError("create_stream needs 'stream' (the name to create)")
        return self


class AmqpSinkConfig(SinkBase):
    type: Literal["amqp"]
    url_env: EnvName
    exchange: str = Field(min_length=1)
    exchange_type: Literal["topic", "direct", "fanout", "headers"] = "topic"
    declare: bool = True
    mandatory: bool = False


class KafkaSinkConfig(SinkBase):
    type: Literal["kafka"]
    bootstrap_env: EnvName  # host:port[,host:port...]
    topic: str = Field(min_length=1)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    username_env: EnvName | None = None
    password_env: EnvName | None = None

    @model_validator(mode="after")
    def _sasl_pair(self) -> KafkaSinkConfig:
        if (self.sasl_mechanism is None) != (self.username_env is None):
            raise ValueError("sasl_mechanism and username_env go together")
        if (self.username_env is None) != (self.password_env is None):
            raise ValueError("username_env and password_env go together")
        return self


class SmtpSinkConfig(SinkBase):
    type: Literal["smtp"]
    format: Literal["freight"] = "freight"  # a mail for people, never a machine's JSON
    host: str = Field(min_length=1)
    port: int = Field(default=587, ge=1, le=65535)
    sender: str = Field(min_length=3, pattern=r"@")
    to: list[Annotated[str, Field(min_length=3, pattern=r"@")]] = Field(min_length=1)
    security: Literal["starttls", "tls", "none"] = "starttls"
    username_env: EnvName | None = None
    password_env: EnvName | None = None

    @model_validator(mode="after")
    def _login_pair(self) -> SmtpSinkConfig:
        if (self.username_env is None) != (self.password_env is None):
            raise ValueError("username_env and password_env go together")
        return self


SinkConfig = Annotated[
    WebhookSinkConfig
    | RedisSinkConfig
    | NatsSinkConfig
    | AmqpSinkConfig
    | KafkaSinkConfig
    | SmtpSinkConfig,
    Field(discriminator="type"),
]
SINK_TYPES: Final = ("webhook", "redis", "nats", "amqp", "kafka", "smtp")


class WebhooksConfig(_Model):
    """Settings of every webhook, per-request ones included."""

    allow_private: bool = False
    timeout_s: float = Field(default=10.0, gt=0)
    secret_env: EnvName = "FREIGHT_WEBHOOK_SECRET"
    previous_secrets_env: EnvName = "FREIGHT_WEBHOOK_PREVIOUS_SECRETS"


class NotificationsConfig(_Model):
    webhooks: WebhooksConfig = WebhooksConfig()
    sinks: list[SinkConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> NotificationsConfig:
        seen: set[str] = set()
        for sink in self.sinks:
            if sink.name in seen:
                raise ValueError(f"two sinks are named {sink.name!r}")
            seen.add(sink.name)
        return self


def _where(loc: tuple[int | str, ...], raw: Mapping[str, Any]) -> str:
    """``sinks[2] (mail): to`` from a pydantic location (the type tag dropped)."""
    if len(loc) >= 2 and loc[0] == "sinks" and isinstance(loc[1], int):
        entries = raw.get("sinks")
        entry = entries[loc[1]] if isinstance(entries, list) and loc[1] < len(entries) else {}
        name = entry.get("name", "?") if isinstance(entry, Mapping) else "?"
        rest = [str(p) for p in loc[2:] if p not in SINK_TYPES]
        head = f"sinks[{loc[1]}] ({name})"
        return ": ".join([head, ".".join(rest)]) if rest else head
    return ".".join(str(p) for p in loc) or "notifications"


def parse_notifications(raw: Any) -> NotificationsConfig:
    """Validate the section (None or absent: no sinks); ConfigError naming each fault."""
    if raw is None:
        return NotificationsConfig()
    if not isinstance(raw, Mapping):
        raise ConfigError("notifications: expected a mapping", section="notifications")
    try:
        return NotificationsConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{_where(tuple(err['loc']), raw)}: {err['msg'].removeprefix('Value error, ')}"
            for err in exc.errors()
        )
        raise ConfigError(f"notifications: {problems}", section="notifications") from None


def load_notifications(project_dir: Path | str = ".") -> NotificationsConfig:
    """The section from ``<project_dir>/freight.yaml`` (none there: no sinks)."""
    return parse_notifications(read_yaml(Path(project_dir)).get("notifications"))


def allow_private(config: NotificationsConfig, env: Mapping[str, str] = os.environ) -> bool:
    """``webhooks.allow_private``, overridden by ``FREIGHT_WEBHOOK_ALLOW_PRIVATE``."""
    text = env.get(ALLOW_PRIVATE_ENV)
    if text is None:
        return config.webhooks.allow_private
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(
        f"{ALLOW_PRIVATE_ENV} must be true or false, not {text!r}", setting=ALLOW_PRIVATE_ENV
    )
