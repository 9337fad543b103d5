"""Settings: environment (``FREIGHT_*``) over ``freight.yaml`` over defaults.

Validated with pydantic at start-up; a wrong setting fails with a message that
names it (:func:`load_settings` raises ConfigError).
"""

from __future__ import annotations

import secrets
import sys
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import limits
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from freight.errors import ConfigError

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

#: the signature algorithms an identity provider's tokens may use (public keys only)
OIDC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


class Quota(BaseModel):
    """Bounds of one tenant (or of one tenant's use of one model); past one, 429 with
    ``Retry-After`` and a code naming it."""

    model_config = ConfigDict(extra="forbid")

    max_queued: int | None = Field(None, ge=1)  # queued or awaiting input
    max_in_flight: int | None = Field(None, ge=1)  # running
    rate: str | None = None  # creates per window: "20/second", "1000/hour", "5 per minute"

    @field_validator("rate")
    @classmethod
    def _rate(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                limits.parse(value)
            except ValueError:
                raise ValueError(f"{value!r}: give N/second, N/minute or N/hour") from None
        return value


class TenantQuota(Quota):
    """A tenant's bounds, and bounds per model or pipeline it uses."""

    models: dict[str, Quota] = Field(default_factory=dict)


class Settings(BaseSettings):
    """Every knob of freight. Units are in the names."""

    model_config = SettingsConfigDict(env_prefix="FREIGHT_", extra="forbid")

    project_dir: Path = Path(".")
    state_dir: Path = Path(".freight")
    database_url: str = ""  # default: sqlite:///<state_dir>/freight.db
    storage_url: str = ""  # default: file://<state_dir>/objects
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    secret_key: str = ""  # HMAC key for signed URLs; default: generated into state_dir
    public_url: str = ""  # base URL put in front of signed API routes; default from request

    models: list[str] = Field(default_factory=list)  # "module:Class"; empty = discover
    # model *names* this process serves (``freight worker --model NAME``); empty = all
    serve_models: list[str] = Field(default_factory=list)
    inline_output_max_bytes: int = Field(256 * KiB, ge=0)
    inline_input_max_bytes: int = Field(256 * KiB, ge=0)
    max_json_bytes: int = Field(32 * MiB, ge=1)
    max_payload_bytes: int = Field(1 * GiB, ge=1)
    max_run_s: float = Field(3600.0, gt=0)
    max_queued_per_model: int = Field(100_000, ge=1)
    max_attempts: int = Field(3, ge=1)
    realtime_timeout_s: float = Field(60.0, gt=0)
    max_wait_s: float = Field(300.0, gt=0)
    lease_s: float = Field(30.0, gt=0)
    load_timeout_s: float = Field(600.0, gt=0)  # a replica's load() longer than this fails
    # failed loads in a row after which a model's queued predictions fail
    # model_unavailable (loading is still retried); 0 = never give up
    max_load_attempts: int = Field(5, ge=0)
    # how a replica's runner process starts: forked from a template process that imported
    # the runner and the models' modules once (agent/forks.py; Linux), or a fresh
    # interpreter that imports them again
    runner_start: Literal["fork", "exec"] = "fork" if sys.platform == "linux" else "exec"
    # autoscaling (embedded and worker agents): replicas of all models together on this
    # node (None: no cap), how often the autoscaler looks, and the node's GPUs ("0,1",
    # "none"; empty: what nvidia-smi lists)
    max_replicas: int | None = Field(None, ge=1)
    autoscale_interval_s: float = Field(0.2, gt=0)
    gpus: str = ""
    reap_interval_s: float = Field(1.0, gt=0)
    # how often each worker node reports its replicas to the store (nodes table): the
    # reasons queued predictions wait, and the replicas of every node, read from it
    census_interval_s: float = Field(2.0, gt=0)
    # a prediction requeued after a failed attempt (its replica died, its lease lapsed)
    # waits this long per attempt made before it is claimed again (retry_backoff)
    retry_backoff_s: float = Field(1.0, ge=0)
    poll_interval_s: float = Field(0.5, gt=0)
    # server-sent event streams (GET /v1/predictions/{id}/events): how many one process
    # holds open (each holds a socket: 500 leaves half of the usual 1024 open files for
    # everything else; past it, 503 too_many_streams), and how often a stream reads its
    # rows when no completion woke it (a claim, `running`, sends no signal)
    max_event_streams: int = Field(500, ge=1)
    event_poll_s: float = Field(1.0, gt=0)
    # what a model prints or logs while it handles a prediction, kept per prediction
    # (freight/logs.py): past this many bytes of text, one marker line says how much
    # was dropped
    max_log_bytes: int = Field(64 * KiB, ge=0)
    drain_grace_s: float = Field(30.0, ge=0)
    upload_url_expires_s: int = Field(3600, ge=1)
    download_url_expires_s: int = Field(3600, ge=1)
    default_ttl_s: float | None = Field(None, gt=0)  # queued longer than this -> expired
    # finished predictions (rows and their stored input/output) are deleted this long
    # after they finished; 0 or None keeps them forever
    retention_s: float | None = Field(7 * 24 * 3600.0, ge=0)
    retention_interval_s: float = Field(60.0, gt=0)  # how often the agents purge
    retention_batch: int = Field(500, ge=1)  # rows deleted per transaction
    # notifications: delivery of the outbox (retries with exponential back-off and
    # full jitter for delivery_max_age_s, then dead)
    delivery_concurrency: int = Field(32, ge=1)
    delivery_timeout_s: float = Field(10.0, gt=0)  # one attempt
    # a claimed event is another deliverer's to send again after this (its sender died);
    # at least twice delivery_timeout_s, so a slow live attempt is never sent twice
    delivery_lease_s: float = Field(60.0, gt=0)
    delivery_backoff_s: float = Field(0.5, gt=0)  # the first retry's ceiling
    delivery_backoff_max_s: float = Field(600.0, gt=0)
    delivery_max_age_s: float = Field(24 * 3600.0, gt=0)
    # the node's deliverer in a process of its own (else a thread of the agent's: one
    # process less, but the API's GIL shared; memory:// stores always use a thread)
    delivery_process: bool = True
    webhook_secret_overlap_s: float = Field(24 * 3600.0, ge=0)  # old key signs this long
    webhook_allow_private: bool = False  # also `notifications: {webhooks: {allow_private}}`
    # pipelines' http steps (agent/http_steps.py): calls in flight per worker (their URLs
    # pass the webhook SSRF guard, webhook_allow_private included)
    http_step_concurrency: int = Field(32, ge=1)
    # access: with no key configured, a loopback server serves anyone on the machine
    # as the `default` tenant; on any other address it refuses to start unless this
    # says so explicitly (a trusted network, a proxy that authenticates)
    allow_unauthenticated: bool = False
    # the operator's admin key (`freight keys generate`), registered at start when new:
    # how a cluster gets its first key (from a secret) before anyone can call it
    admin_key: str = Field("", repr=False)
    key_cache_s: float = Field(2.0, gt=0)  # a revoked key works at most this long
    max_auth_failures: int = Field(20, ge=1)  # per source address and minute, then 429
    # quotas per tenant ("*": every tenant without its own), in freight.yaml `tenants:`
    tenants: dict[str, TenantQuota] = Field(default_factory=dict)
    # identity-provider tokens (OIDC JWTs), besides API keys: the issuer exactly as its
    # tokens' `iss` says it (empty = tokens off), the audience they must name, and where
    # its signing keys are (empty: the `jwks_uri` of <issuer>/.well-known/openid-configuration)
    oidc_issuer: str = ""
    oidc_audience: str = Field("", validate_default=True)  # required with oidc_issuer
    oidc_jwks_url: str = ""
    oidc_tenant_claim: str = Field("tenant", min_length=1)  # the claim naming the tenant
    # the claim granting scopes: "predict read" (OAuth2) or ["predict", "read"]
    oidc_scopes_claim: str = Field("scope", min_length=1)
    oidc_algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"])
    oidc_leeway_s: float = Field(30.0, ge=0)  # clock skew allowed on exp, nbf, iat
    log_level: str = "info"
    # every process's log lines: plain text, or one JSON object per line (with the
    # prediction, run, tenant and trace ids they concern: freight/logsetup.py)
    log_format: Literal["text", "json"] = "text"

    @field_validator("gpus", mode="before")
    @classmethod
    def _gpus_text(cls, value: Any) -> Any:
        """``gpus: [0, 1]`` or ``gpus: 0`` in freight.yaml mean what "0,1" and "0" do."""
        if isinstance(value, list | tuple):
            return ",".join(str(item) for item in value)
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("oidc_issuer", "oidc_jwks_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("an http:// or https:// URL")
        return value

    @field_validator("oidc_audience")
    @classmethod
    def _audience_with_issuer(cls, value: str, info: ValidationInfo) -> str:
        # without it, a token the issuer gave any other application would be accepted
        if info.data.get("oidc_issuer") and not value:
            raise ValueError("required when oidc_issuer is set")
        return value

    @field_validator("oidc_algorithms")
    @classmethod
    def _asymmetric(cls, value: list[str]) -> list[str]:
        # keys come from a published JWKS: "none" and shared-secret (HS*) algorithms
        # would let anyone who reads it sign
        wrong = [name for name in value if name not in OIDC_ALGORITHMS]
        if wrong or not value:
            raise ValueError(f"one or more of {', '.join(sorted(OIDC_ALGORITHMS))}")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # explicit arguments (CLI flags) > environment > freight.yaml > defaults
        return (init_settings, env_settings, _YamlSource(settings_cls))

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.state_dir / 'freight.db').resolve()}"

    @property
    def resolved_storage_url(self) -> str:
        return self.storage_url or f"file://{(self.state_dir / 'objects').resolve()}"

    def secret(self) -> bytes:
        """The HMAC key: configured, or generated once and kept in the state directory."""
        if self.secret_key:
            return self.secret_key.encode()
        path = self.state_dir / "secret.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_hex(32))
            path.chmod(0o600)
        return path.read_text().strip().encode()


_yaml_values: ContextVar[dict[str, Any] | None] = ContextVar("freight_yaml_values", default=None)


class _YamlSource(PydanticBaseSettingsSource):
    """The settings read from ``freight.yaml`` by :func:`load_settings` (lowest precedence)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return (_yaml_values.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_yaml_values.get() or {})


def read_yaml(project_dir: Path) -> dict[str, Any]:
    path = project_dir / "freight.yaml"
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}", path=str(path)) from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level", path=str(path))
    return data


# freight.yaml sections owned by later features (pipelines, notifications, ...)
_NON_SETTINGS = {"pipelines", "notifications", "sinks"}


def load_settings(project_dir: Path | str = ".", **overrides: Any) -> Settings:
    """Build the settings for a project directory; raise ConfigError naming the bad field."""
    project_dir = Path(project_dir)
    from_yaml = {k: v for k, v in read_yaml(project_dir).items() if k not in _NON_SETTINGS}
    from_yaml.setdefault("project_dir", project_dir)
    explicit = {k: v for k, v in overrides.items() if v is not None}
    token = _yaml_values.set(from_yaml)
    try:
        return Settings(**explicit)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '?'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}", errors=exc.errors()) from exc
    finally:
        _yaml_values.reset(token)
