"""Sinks from the ``notifications:`` section: :func:`build_sinks`, and
:func:`request_webhook` for the webhook a caller names in a create body.

This is the one place that reads credential values from the environment; it
hands them to the sinks and forgets them. A missing variable raises SinkError
naming the sink and the variable (``sinks[2] (mail): missing environment
variable FREIGHT_SMTP_PASSWORD``), never a value.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import aiohttp

from freight.errors import InvalidRequestError, SinkError
from freight.notify import config as cfg
from freight.notify.addresses import Resolver, check_url_text
from freight.notify.envelope import default_source
from freight.notify.signing import WebhookSecrets
from freight.notify.sinks.base import Sink, Subscription
from freight.notify.sinks.kafka import ProducerFactory, aiokafka_producer
from freight.notify.sinks.webhook import WebhookSink

BROKER_TIMEOUT_S: Final = 10.0


class Sinks(dict[str, Sink]):
    """The configured sinks by name, with the filter the deliverer asks."""

    def sinks_for(self, event_type: str, target: str) -> list[Sink]:
        """The sinks subscribed to an event of ``event_type`` about ``target``."""
        return [s for s in self.values() if s.subscription.matches(event_type, target)]

    async def open_all(self) -> None:
        """Open every sink; on the first SinkError close those opened and raise it."""
        opened: list[Sink] = []
        try:
            for sink in self.values():
                await sink.open()
                opened.append(sink)
        except BaseException:
            for sink in opened:
                with contextlib.suppress(Exception):
                    await sink.close()
            raise

    async def close_all(self) -> None:
        for sink in self.values():
            with contextlib.suppress(Exception):
                await sink.close()


@dataclass(frozen=True)
class _Context:
    index: int
    name: str
    env: Mapping[str, str]
    public_url: str
    source: str
    webhooks: cfg.WebhooksConfig
    allow_private: bool
    fallback_secrets: WebhookSecrets | None
    resolver: Resolver | None
    kafka_producer_factory: ProducerFactory

    def fail(self, cause: str) -> SinkError:
        return SinkError(
            f"notifications: sinks[{self.index}] ({self.name}): {cause}",
            sink=self.name,
            index=self.index,
        )

    def need(self, var: str) -> str:
        value = self.env.get(var)
        if not value:
            raise self.fail(f"missing environment variable {var}")
        return value

    def maybe(self, var: str | None) -> str | None:
        return None if var is None else self.need(var)

    def timeout(self, sink: cfg.SinkBase) -> float:
        """The sink's own per-attempt timeout, else the webhooks' (for a webhook) or
        the brokers' default."""
        default = self.webhooks.timeout_s if sink.type == "webhook" else BROKER_TIMEOUT_S
        return sink.timeout_s or default


def _subscription(sink: cfg.SinkBase) -> Subscription:
    return Subscription.of(sink.events, sink.targets)


def webhook_secrets(
    env: Mapping[str, str],
    current_var: str,
    previous_var: str,
    fallback: WebhookSecrets | None = None,
) -> WebhookSecrets | None:
    """The secrets from ``current_var`` (and ``previous_var``), else ``fallback``;
    ValueError naming the variable (not its value) when one is malformed."""
    current = env.get(current_var, "").strip()
    if not current:
        return fallback
    try:
        return WebhookSecrets.parse(current, env.get(previous_var, ""))
    except ValueError as exc:
        raise ValueError(f"{current_var}/{previous_var}: {exc}") from None


def _webhook(sink: cfg.WebhookSinkConfig, ctx: _Context) -> Sink:
    url = sink.url if sink.url is not None else ctx.need(sink.url_env or "")
    try:
        check_url_text(url, allow_private=ctx.allow_private)
        secrets = webhook_secrets(
            ctx.env,
            sink.secret_env or ctx.webhooks.secret_env,
            sink.previous_secrets_env or ctx.webhooks.previous_secrets_env,
            ctx.fallback_secrets,
        )
    except InvalidRequestError as exc:
        raise ctx.fail(exc.message) from None
    except ValueError as exc:
        raise ctx.fail(str(exc)) from None
    if secrets is None:
        var = sink.secret_env or ctx.webhooks.secret_env
        raise ctx.fail(f"missing environment variable {var} (the signing secret)")
    return WebhookSink(
        sink.name,
        url,
        secrets=secrets,
        subscription=_subscription(sink),
        timeout_s=ctx.timeout(sink),
        allow_private=ctx.allow_private,
        resolver=ctx.resolver,
        format=sink.format,
    )


def _redis(sink: cfg.RedisSinkConfig, ctx: _Context) -> Sink:
    from freight.notify.sinks.redis import RedisSink

    return RedisSink(
        sink.name,
        ctx.need(sink.url_env),
        sink.stream,
        source=ctx.source,
        format=sink.format,
        subscription=_subscription(sink),
        maxlen=sink.maxlen,
        timeout_s=ctx.timeout(sink),
    )


def _nats(sink: cfg.NatsSinkConfig, ctx: _Context) -> Sink:
    from freight.notify.sinks.nats import NatsSink

    servers = [s.strip() for s in ctx.need(sink.servers_env).split(",") if s.strip()]
    return NatsSink(
        sink.name,
        servers,
        sink.subject,
        source=ctx.source,
        format=sink.format,
        subscription=_subscription(sink),
        stream=sink.stream,
        create_stream=sink.create_stream,
        user=ctx.maybe(sink.user_env),
        password=ctx.maybe(sink.password_env),
        token=ctx.maybe(sink.token_env),
        timeout_s=ctx.timeout(sink),
    )


def _amqp(sink: cfg.AmqpSinkConfig, ctx: _Context) -> Sink:
    from freight.notify.sinks.amqp import AmqpSink

    return AmqpSink(
        sink.name,
        ctx.need(sink.url_env),
        sink.exchange,
        source=ctx.source,
        format=sink.format,
        subscription=_subscription(sink),
        exchange_type=sink.exchange_type,
        declare=sink.declare,
        mandatory=sink.mandatory,
        timeout_s=ctx.timeout(sink),
    )


def _kafka(sink: cfg.KafkaSinkConfig, ctx: _Context) -> Sink:
    from freight.notify.sinks.kafka import KafkaSink

    return KafkaSink(
        sink.name,
        ctx.need(sink.bootstrap_env),
        sink.topic,
        source=ctx.source,
        format=sink.format,
        subscription=_subscription(sink),
        security_protocol=sink.security_protocol,
        sasl_mechanism=sink.sasl_mechanism,
        username=ctx.maybe(sink.username_env),
        password=ctx.maybe(sink.password_env),
        timeout_s=ctx.timeout(sink),
        producer_factory=ctx.kafka_producer_factory,
    )


def _smtp(sink: cfg.SmtpSinkConfig, ctx: _Context) -> Sink:
    from freight.notify.sinks.smtp import SmtpSink

    return SmtpSink(
        sink.name,
        sink.host,
        sink.port,
        sink.sender,
        sink.to,
        public_url=ctx.public_url,
        subscription=_subscription(sink),
        security=sink.security,
        username=ctx.maybe(sink.username_env),
        password=ctx.maybe(sink.password_env),
        timeout_s=ctx.timeout(sink),
    )


_BUILDERS: dict[str, Callable[[Any, _Context], Sink]] = {
    "webhook": _webhook,
    "redis": _redis,
    "nats": _nats,
    "amqp": _amqp,
    "kafka": _kafka,
    "smtp": _smtp,
}


def build_sinks(
    config: cfg.NotificationsConfig,
    *,
    env: Mapping[str, str] = os.environ,
    public_url: str = "",
    webhook_secrets: WebhookSecrets | None = None,
    source: str | None = None,
    resolver: Resolver | None = None,
    kafka_producer_factory: ProducerFactory = aiokafka_producer,
) -> Sinks:
    """The configured sinks by name, not yet opened (``Sinks.open_all``).

    ``public_url``: the API's base URL (links in mails; the CloudEvents source);
    ``webhook_secrets``: signing secrets for webhook sinks whose environment names
    none (e.g. ones generated into the state directory); ``resolver`` and
    ``kafka_producer_factory``: seams for tests. SinkError on a missing variable.
    """
    private = cfg.allow_private(config, env)
    sinks = Sinks()
    for index, sink in enumerate(config.sinks):
        ctx = _Context(
            index=index,
            name=sink.name,
            env=env,
            public_url=public_url,
            source=source or default_source(public_url),
            webhooks=config.webhooks,
            allow_private=private,
            fallback_secrets=webhook_secrets,
            resolver=resolver,
            kafka_producer_factory=kafka_producer_factory,
        )
        sinks[sink.name] = _BUILDERS[sink.type](sink, ctx)
    return sinks


def request_webhook(
    config: cfg.NotificationsConfig,
    url: str,
    *,
    secrets: WebhookSecrets,
    events: Iterable[str] | None = None,
    env: Mapping[str, str] = os.environ,
    client: aiohttp.ClientSession | None = None,
    name: str = "request",
    resolver: Resolver | None = None,
) -> WebhookSink:
    """The webhook a create body names, with the section's ``webhooks`` settings.
    Its URL's text is checked here (InvalidRequestError ``webhook_refused``); its
    addresses at each delivery. ``client``: one shared by all per-request webhooks
    (``sinks.webhook.webhook_session`` with the same allow_private)."""
    private = cfg.allow_private(config, env)
    check_url_text(url, allow_private=private)
    return WebhookSink(
        name,
        url,
        secrets=secrets,
        subscription=Subscription.of(events),
        timeout_s=config.webhooks.timeout_s,
        allow_private=private,
        client=client,
        resolver=resolver,
    )
