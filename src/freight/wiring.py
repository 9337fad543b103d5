"""The notification side of a process, wired: sinks, subscriptions, the secret.

Part of the composition root (``server.py``): it builds what the deliverer and
the prediction service are given from ``freight.yaml``'s ``notifications:``
section and the settings, and is the ``freight webhooks secret`` command.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import getpass
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from freight.access import DEFAULT_TENANT, ApiKey, Principal, Scope
from freight.config import Settings, load_settings
from freight.errors import ConfigError
from freight.keyring import Keyring, local_operator
from freight.notify.build import build_sinks
from freight.notify.config import NotificationsConfig
from freight.notify.event import COMPLETED, Event, Outcome
from freight.notify.sagemaker import FORMAT as SAGEMAKER_FORMAT
from freight.notify.signing import WebhookSecrets
from freight.notify.sinks.base import Sink, Subscription
from freight.notify.sinks.webhook import WebhookSink, webhook_session
from freight.sagemaker import ASYNC_RESULTS_SINK, METADATA_KEY, AsyncResults
from freight.sigv4 import Sealer
from freight.store import migrate, open_store
from freight.subscriptions import EVENTS, ServerSink

T = TypeVar("T")


class AsyncResultsSink:
    """The subscription ``@sagemaker-async`` of every async SageMaker invocation: its
    output (or failure) written where its 202 said, when it completes."""

    name = ASYNC_RESULTS_SINK
    type = "sagemaker-results"
    subscription = Subscription.of(["completed"])

    def __init__(self, results: AsyncResults) -> None:
        self._results = results

    async def open(self) -> None:
        return None

    async def send(self, event: Event) -> Outcome:
        if event.type != COMPLETED:
            return Outcome.ok()
        try:
            await self._results.write(event.prediction_id)
        except Exception as exc:  # the store or the storage is down: retried
            return Outcome.failed(f"cannot write the result: {type(exc).__name__}: {exc}")
        return Outcome.ok()

    async def close(self) -> None:
        return None


class SageMakerFormatSink:
    """A sink of ``format: sagemaker``: before it tells of an async invocation's end,
    the result is written (a consumer told finds its object) and its locations are put
    in the event, where the notification reads them."""

    def __init__(self, inner: Sink, results: AsyncResults) -> None:
        self._inner, self._results = inner, results
        self.name, self.type, self.subscription = inner.name, inner.type, inner.subscription

    async def open(self) -> None:
        await self._inner.open()

    async def send(self, event: Event) -> Outcome:
        if event.type == COMPLETED:
            try:
                locations = await self._results.write(event.prediction_id)
            except Exception as exc:
                return Outcome.failed(f"cannot write the result: {type(exc).__name__}: {exc}")
            if locations is not None:
                event = _with_locations(event, locations)
        return await self._inner.send(event)

    async def close(self) -> None:
        await self._inner.close()


def _with_locations(event: Event, locations: dict[str, str]) -> Event:
    data = dict(event.data)
    metadata = dict(data.get("metadata") or {})
    metadata[METADATA_KEY] = {**(metadata.get(METADATA_KEY) or {}), **locations}
    data["metadata"] = metadata
    return dataclasses.replace(event, data=data)


class SinkFactory:
    """How the deliverer reaches one subscription: a caller's webhook (one shared,
    address-guarded aiohttp session, made on the first webhook: on the deliverer's own
    loop), or a sink of ``freight.yaml``, built with the signing keys of the moment
    (the deliverer asks again after a rotation); ``results``: who writes SageMaker
    async results (``@sagemaker-async``, and before a ``format: sagemaker`` sink
    sends)."""

    def __init__(
        self,
        settings: Settings,
        config: NotificationsConfig,
        allow: bool,
        results: AsyncResults | None = None,
    ) -> None:
        self._settings, self._config, self._allow = settings, config, allow
        self._results = results
        self._formats = {sink.name: sink.format for sink in config.sinks}
        self._session: aiohttp.ClientSession | None = None

    def __call__(self, entry: dict[str, Any], secrets: WebhookSecrets) -> Sink:
        results = self._results
        if entry.get("sink") == ASYNC_RESULTS_SINK and results is not None:
            return AsyncResultsSink(results)
        if "url" in entry:
            return WebhookSink(
                "webhook",
                str(entry["url"]),
                secrets=secrets,
                timeout_s=self._settings.delivery_timeout_s,
                allow_private=self._allow,
                client=self._webhooks(),
            )
        sinks = build_sinks(
            self._config, public_url=self._settings.public_url, webhook_secrets=secrets
        )
        name = str(entry.get("sink"))
        if name not in sinks:
            raise ConfigError(f"no sink named {name!r} is configured", sink=name)
        if self._formats.get(name) == SAGEMAKER_FORMAT and results is not None:
            return SageMakerFormatSink(sinks[name], results)
        return sinks[name]

    def _webhooks(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = webhook_session(
                timeout_s=self._settings.delivery_timeout_s, allow_private=self._allow
            )
        return self._session

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            with contextlib.suppress(Exception):
                await session.close()


async def check_sinks(settings: Settings, config: NotificationsConfig) -> None:
    """Start-up: every configured sink can be built and opened (a missing credential
    or an unreachable broker stops the start, naming the sink)."""
    sinks = build_sinks(
        config,
        public_url=settings.public_url,
        webhook_secrets=WebhookSecrets.generate(),
    )
    try:
        await sinks.open_all()
    finally:
        await sinks.close_all()


def server_sinks(config: NotificationsConfig) -> list[ServerSink]:
    return [
        ServerSink(
            sink.name,
            frozenset(sink.events or EVENTS),
            None if sink.targets is None else frozenset(sink.targets),
        )
        for sink in config.sinks
    ]


def webhook_secret(project_dir: Path, rotate: bool = False, tenant: str = DEFAULT_TENANT) -> str:
    """``freight webhooks secret``: a tenant's current webhook signing secret (created
    when none exists); ``rotate``: a new one, the previous keeps signing for
    ``webhook_secret_overlap_s`` so receivers can switch without missing an event."""
    return _with_keyring(
        project_dir,
        lambda ring: ring.webhook_secret(_operator(), tenant=tenant, rotate=rotate),
    )


# -- API keys (``freight keys``): on the server's database, as its operator ------------


def _with_keyring(project_dir: Path, act: Callable[[Keyring], Awaitable[T]]) -> T:
    settings = load_settings(project_dir)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    migrate(settings.resolved_database_url)

    async def run() -> T:
        store = open_store(settings.resolved_database_url)
        await store.open()
        try:
            return await act(Keyring(store, sealer=Sealer(settings.secret())))
        finally:
            await store.close()

    return asyncio.run(run())


def _operator() -> Principal:
    return local_operator(getpass.getuser())


def keys_create(
    project_dir: Path,
    *,
    tenant: str,
    name: str,
    scopes: list[Scope],
    targets: list[str] | None,
    expires_in_s: float | None,
    sigv4: bool = False,
) -> tuple[ApiKey, str]:
    """``freight keys create``: a new key and its token (shown once); ``sigv4``: an
    access-key pair, the token its secret access key."""
    return _with_keyring(
        project_dir,
        lambda ring: ring.create(
            _operator(),
            tenant=tenant,
            name=name,
            scopes=scopes,
            targets=targets,
            expires_in_s=expires_in_s,
            sigv4=sigv4,
        ),
    )


def keys_list(project_dir: Path, tenant: str | None) -> list[ApiKey]:
    return _with_keyring(project_dir, lambda ring: ring.keys(_operator(), tenant))


def keys_revoke(project_dir: Path, key_id: str) -> ApiKey:
    return _with_keyring(project_dir, lambda ring: ring.revoke(_operator(), key_id))
