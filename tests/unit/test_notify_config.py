"""The ``notifications:`` section: validation that names the sink, credentials only from
the environment (and never shown), the filters, and the factory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from freight.errors import ConfigError, InvalidRequestError, SinkError
from freight.notify.build import Sinks, build_sinks, request_webhook
from freight.notify.config import load_notifications, parse_notifications
from freight.notify.event import Event, Outcome
from freight.notify.signing import WebhookSecrets, generate_secret
from freight.notify.sinks.amqp import AmqpSink
from freight.notify.sinks.base import Subscription
from freight.notify.sinks.kafka import KafkaSink
from freight.notify.sinks.nats import NatsSink
from freight.notify.sinks.redis import RedisSink
from freight.notify.sinks.smtp import SmtpSink
from freight.notify.sinks.webhook import WebhookSink

EXAMPLE = """
notifications:
  webhooks: {allow_private: false, timeout_s: 10}
  sinks:
    - {name: ops, type: webhook, url: "https://hooks.example.com/freight", events: [completed],
       targets: [tabular]}
    - {name: stream, type: redis, url_env: FREIGHT_REDIS_URL, stream: freight-events}
    - {name: js, type: nats, servers_env: FREIGHT_NATS_URL, subject: freight.events}
    - {name: rabbit, type: amqp, url_env: FREIGHT_AMQP_URL, exchange: freight}
    - {name: bus, type: kafka, bootstrap_env: FREIGHT_KAFKA_BOOTSTRAP, topic: freight}
    - {name: mail, type: smtp, host: smtp.example.com, port: 587, sender: freight@example.com,
       to: [ops@example.com], username_env: FREIGHT_SMTP_USER, password_env: FREIGHT_SMTP_PASSWORD}
"""
WEBHOOK_SECRET = generate_secret()
SECRETS = {
    "FREIGHT_WEBHOOK_SECRET": WEBHOOK_SECRET,
    "FREIGHT_REDIS_URL": "redis://:R3dis-Secret-PW@127.0.0.1:6379/0",
    "FREIGHT_NATS_URL": "nats://natsuser:N4ts-Secret-PW@127.0.0.1:4222",
    "FREIGHT_AMQP_URL": "amqp://guest:Amqp-Secret-PW@127.0.0.1:5672/",
    "FREIGHT_KAFKA_BOOTSTRAP": "kafka-1.internal:9092",
    "FREIGHT_SMTP_USER": "mailer",
    "FREIGHT_SMTP_PASSWORD": "Smtp-Secret-PW",
}
SECRET_VALUES = [
    WEBHOOK_SECRET,
    WEBHOOK_SECRET.removeprefix("whsec_"),
    "R3dis-Secret-PW",
    "N4ts-Secret-PW",
    "Amqp-Secret-PW",
    "Smtp-Secret-PW",
]


def _section(text: str = EXAMPLE) -> dict[str, Any]:
    section: dict[str, Any] = yaml.safe_load(text)["notifications"]
    return section


def _sinks(raw: dict[str, Any], env: dict[str, str] | None = None) -> Sinks:
    return build_sinks(parse_notifications(raw), env=SECRETS if env is None else env)


def _config_error(raw: Any) -> str:
    with pytest.raises(ConfigError) as info:
        parse_notifications(raw)
    return info.value.message


def test_the_documented_example_builds_one_sink_of_each_type() -> None:
    """The README's example parses and builds the six sink types, by name."""
    sinks = _sinks(_section())
    kinds = {name: type(sink) for name, sink in sinks.items()}
    assert kinds == {
        "ops": WebhookSink,
        "stream": RedisSink,
        "js": NatsSink,
        "rabbit": AmqpSink,
        "bus": KafkaSink,
        "mail": SmtpSink,
    }


def test_events_and_targets_default_to_all_and_filter_otherwise() -> None:
    """``sinks_for`` returns the sinks subscribed to an event type and a target."""
    sinks = _sinks(_section())
    everyone = {"stream", "js", "rabbit", "bus", "mail"}
    assert {s.name for s in sinks.sinks_for("prediction.started", "tabular")} == everyone
    assert {s.name for s in sinks.sinks_for("prediction.completed", "tabular")} == everyone | {
        "ops"
    }
    assert {s.name for s in sinks.sinks_for("prediction.completed", "echo")} == everyone


def test_no_section_means_no_sinks(tmp_path: Path) -> None:
    """A project without the section (or without freight.yaml) has no sinks."""
    assert parse_notifications(None).sinks == []
    assert load_notifications(tmp_path).sinks == []
    (tmp_path / "freight.yaml").write_text(EXAMPLE)
    assert [s.name for s in load_notifications(tmp_path).sinks][:2] == ["ops", "stream"]


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            {
                "name": "mail",
                "type": "smtp",
                "host": "h",
                "sender": "a@b.c",
                "to": ["x@y.z"],
                "password": "hunter2-inline",
            },
            "sinks[0] (mail): 'password' must not be written inline; name an environment "
            "variable that holds it with 'password_env'",
        ),
        (
            {"name": "stream", "type": "redis", "url": "redis://:hunter2-inline@h", "stream": "s"},
            "sinks[0] (stream): 'url' must not be written inline",
        ),
        (
            {
                "name": "js",
                "type": "nats",
                "servers_env": "N",
                "subject": "s",
                "token": "hunter2-inline",
            },
            "sinks[0] (js): 'token' must not be written inline",
        ),
        (
            {
                "name": "ops",
                "type": "webhook",
                "url": "https://u:hunter2-inline@hooks.example.com/",
            },
            "sinks[0] (ops): the url carries credentials; put the URL in 'url_env'",
        ),
        (
            {
                "name": "stream",
                "type": "redis",
                "url_env": "redis://:hunter2-inline@h",
                "stream": "s",
            },
            "sinks[0] (stream): url_env: String should match pattern",
        ),
    ],
)
def test_inline_credentials_are_refused_without_echoing_them(
    entry: dict[str, Any], expected: str
) -> None:
    """A credential written inline is refused, naming the sink and the *_env key to use,
    and the value never appears in the message."""
    message = _config_error({"sinks": [entry]})
    assert expected in message and "hunter2-inline" not in message


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"name": "x", "type": "carrier-pigeon"}, "sinks[0] (x): Input tag 'carrier-pigeon'"),
        (
            {"name": "mail", "type": "smtp", "host": "h", "sender": "a@b.c", "to": []},
            "sinks[0] (mail): to: List should have at least 1 item",
        ),
        (
            {"name": "ops", "type": "webhook", "url": "ftp://hooks.example.com/"},
            "sinks[0] (ops): the webhook URL must be http or https, not 'ftp'",
        ),
        ({"name": "ops", "type": "webhook"}, "give exactly one of 'url' and 'url_env'"),
        (
            {
                "name": "js",
                "type": "nats",
                "servers_env": "N",
                "subject": "s",
                "create_stream": True,
            },
            "create_stream needs 'stream'",
        ),
        (
            {"name": "w", "type": "webhook", "url": "https://h.example.com/", "events": ["done"]},
            "sinks[0] (w): events.0: Input should be 'started', 'completed' or 'waiting'",
        ),
        (
            {
                "name": "bus",
                "type": "kafka",
                "bootstrap_env": "B",
                "topic": "t",
                "sasl_mechanism": "PLAIN",
            },
            "sasl_mechanism and username_env go together",
        ),
    ],
)
def test_validation_errors_name_the_sink(entry: dict[str, Any], expected: str) -> None:
    """Each structural fault is a ConfigError that says which sink and what is wrong."""
    assert expected in _config_error({"sinks": [entry]})


def test_duplicate_names_and_non_mappings_are_refused() -> None:
    """Names are unique; the section is a mapping."""
    twice = {"name": "a", "type": "redis", "url_env": "R", "stream": "s"}
    assert "two sinks are named 'a'" in _config_error({"sinks": [twice, twice]})
    assert "expected a mapping" in _config_error(["not", "a", "mapping"])


def test_a_missing_environment_variable_names_the_sink_and_the_variable() -> None:
    """``sinks[5] (mail): missing environment variable FREIGHT_SMTP_PASSWORD``."""
    env = {k: v for k, v in SECRETS.items() if k != "FREIGHT_SMTP_PASSWORD"}
    with pytest.raises(SinkError) as info:
        _sinks(_section(), env)
    assert info.value.message == (
        "notifications: sinks[5] (mail): missing environment variable FREIGHT_SMTP_PASSWORD"
    )
    assert info.value.detail["sink"] == "mail"


def test_a_webhook_sink_needs_a_signing_secret() -> None:
    """Without FREIGHT_WEBHOOK_SECRET (or secrets handed in) a webhook sink cannot sign."""
    raw = {"sinks": [{"name": "ops", "type": "webhook", "url": "https://hooks.example.com/"}]}
    with pytest.raises(SinkError, match="missing environment variable FREIGHT_WEBHOOK_SECRET"):
        _sinks(raw, env={})
    handed = WebhookSecrets.generate()
    sink = build_sinks(parse_notifications(raw), env={}, webhook_secrets=handed)["ops"]
    assert isinstance(sink, WebhookSink)


def test_a_malformed_secret_is_named_by_variable_not_value() -> None:
    """A bad secret in the environment fails naming the variable, not echoing the value."""
    raw = {"sinks": [{"name": "ops", "type": "webhook", "url": "https://hooks.example.com/"}]}
    with pytest.raises(SinkError) as info:
        _sinks(raw, env={"FREIGHT_WEBHOOK_SECRET": "hunter2-not-whsec"})
    assert "FREIGHT_WEBHOOK_SECRET" in info.value.message
    assert "hunter2" not in info.value.message


def test_the_allow_private_environment_variable_overrides_the_file() -> None:
    """FREIGHT_WEBHOOK_ALLOW_PRIVATE=true admits a loopback webhook; false refuses it."""
    raw = {"sinks": [{"name": "local", "type": "webhook", "url": "http://127.0.0.1:9/h"}]}
    secret = {"FREIGHT_WEBHOOK_SECRET": WEBHOOK_SECRET}
    with pytest.raises(SinkError, match=r"sinks\[0\] \(local\): the webhook host 127.0.0.1 is a"):
        _sinks(raw, env=secret)
    sink = _sinks(raw, env=secret | {"FREIGHT_WEBHOOK_ALLOW_PRIVATE": "true"})["local"]
    assert isinstance(sink, WebhookSink) and sink.allow_private
    raw_private = {"webhooks": {"allow_private": True}, **raw}
    with pytest.raises(SinkError, match="loopback"):
        _sinks(raw_private, env=secret | {"FREIGHT_WEBHOOK_ALLOW_PRIVATE": "false"})
    with pytest.raises(ConfigError, match="must be true or false"):
        _sinks(raw, env=secret | {"FREIGHT_WEBHOOK_ALLOW_PRIVATE": "maybe"})


def test_a_webhook_url_can_come_from_the_environment() -> None:
    """``url_env`` keeps a URL with credentials out of the file."""
    raw = {"sinks": [{"name": "ops", "type": "webhook", "url_env": "OPS_HOOK"}]}
    url = "https://bot:H00k-Secret@hooks.example.com/x"
    sink = _sinks(raw, env={"FREIGHT_WEBHOOK_SECRET": WEBHOOK_SECRET, "OPS_HOOK": url})["ops"]
    assert "H00k-Secret" not in repr(sink) and "hooks.example.com" in repr(sink)


def test_secrets_never_appear_in_reprs_of_sinks_or_config() -> None:
    """No repr or str of a sink, of the sinks, or of the parsed section shows a secret."""
    config = parse_notifications(_section())
    sinks = build_sinks(config, env=SECRETS)
    texts = [repr(config), str(config), config.model_dump_json(), repr(sinks), str(sinks)]
    for sink in sinks.values():
        texts += [repr(sink), str(sink), f"{sink}"]
    for text in texts:
        leaked = [s for s in SECRET_VALUES if s in text]
        assert leaked == [], text


def test_request_webhooks_check_the_url_text_with_the_sections_settings() -> None:
    """A caller's webhook is refused plainly at create time, or built with the settings."""
    config = parse_notifications({"webhooks": {"timeout_s": 3}})
    secrets = WebhookSecrets.generate()
    with pytest.raises(InvalidRequestError) as info:
        request_webhook(config, "http://10.0.0.1/hook", secrets=secrets, env={})
    assert info.value.code == "webhook_refused"
    sink = request_webhook(
        config, "https://hooks.example.com/h", secrets=secrets, events=["completed"], env={}
    )
    assert sink.timeout_s == 3 and sink.subscription == Subscription.of(["completed"])
    private = request_webhook(
        config, "http://127.0.0.1:1/h", secrets=secrets, env={"FREIGHT_WEBHOOK_ALLOW_PRIVATE": "1"}
    )
    assert private.allow_private


class _Fake:
    """A sink that records open/close and can fail to open."""

    type = "fake"

    def __init__(self, name: str, log: list[str], fail: bool = False) -> None:
        self.name, self.subscription, self._log, self._fail = name, Subscription(), log, fail

    async def open(self) -> None:
        if self._fail:
            raise SinkError(f"sink {self.name!r} (fake): unreachable")
        self._log.append(f"open {self.name}")

    async def send(self, event: Event) -> Outcome:
        return Outcome.ok()

    async def close(self) -> None:
        self._log.append(f"close {self.name}")


async def test_open_all_closes_what_it_opened_when_one_fails() -> None:
    """A sink that cannot start fails start-up, and the ones already open are closed."""
    log: list[str] = []
    sinks = Sinks(a=_Fake("a", log), b=_Fake("b", log, fail=True), c=_Fake("c", log))
    with pytest.raises(SinkError, match="'b'"):
        await sinks.open_all()
    assert log == ["open a", "close a"]
