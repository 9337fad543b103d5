"""Process entry points: ``serve`` (embedded: API + agent), ``serve_api``, ``serve_worker``.

The same parts run in every shape; only what one process hosts differs. The
embedded shape hosts both, which lets the API wake claim loops and waiters
through in-memory events instead of polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
import os
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import uvicorn
from fastapi import FastAPI

from freight import deliverer, logsetup, tracing
from freight.agent import Agent
from freight.agent.delivery import Deliverer, DeliveryHost, deliverer_for
from freight.agent.delivery_process import DeliveryProcess
from freight.agent.delivery_thread import DeliveryThread
from freight.api import create_app, create_probe_app
from freight.api.routes import objects
from freight.backlog import BacklogGauge
from freight.batch.service import BatchService
from freight.callbacks import CallbackService
from freight.config import Settings, load_settings
from freight.errors import ConfigError, FreightError
from freight.events import CompletionHub, WorkSignal
from freight.identity import TokenVerifier
from freight.insight import InsightService
from freight.keyring import Keyring
from freight.notify.config import NotificationsConfig, allow_private, load_notifications
from freight.project import Pipelines, load_pipelines
from freight.project import check as check_project
from freight.quotas import Quotas
from freight.registry import ModelSpec, discover
from freight.sagemaker import AsyncResults
from freight.service import PredictionService
from freight.signing import UrlSigner
from freight.sigv4 import Sealer
from freight.storage import open_storage
from freight.storage.base import Storage
from freight.store import Store, migrate, open_store
from freight.subscriptions import Subscriptions
from freight.system import SystemService
from freight.usage import UsageService
from freight.wiring import SinkFactory, check_sinks, server_sinks
from freight.wiring import keys_create as keys_create
from freight.wiring import keys_list as keys_list
from freight.wiring import keys_revoke as keys_revoke
from freight.wiring import webhook_secret as webhook_secret

log = logging.getLogger("freight")


@dataclass
class Parts:
    settings: Settings
    specs: dict[str, ModelSpec]
    pipelines: Pipelines = field(default_factory=Pipelines)
    notifications: NotificationsConfig = field(default_factory=NotificationsConfig)
    worker_port: int | None = None  # freight worker --port: serve probes and metrics

    @property
    def allow_private_webhooks(self) -> bool:
        """``FREIGHT_WEBHOOK_ALLOW_PRIVATE`` or ``notifications.webhooks.allow_private``."""
        return self.settings.webhook_allow_private or allow_private(self.notifications)


def prepare(project_dir: Path, **overrides: object) -> Parts:
    """Settings, models and an up-to-date schema; raises FreightError with a clear message."""
    settings = load_settings(project_dir, **overrides)
    logsetup.configure(settings.log_level, settings.log_format)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    specs = discover(project_dir, settings.models or None)
    if settings.serve_models:  # a worker of some models only (one Deployment per model)
        unknown = sorted(set(settings.serve_models) - set(specs))
        if unknown:
            raise ConfigError(
                f"no model named {', '.join(unknown)} in {project_dir} "
                f"(it has {', '.join(sorted(specs)) or 'none'})"
            )
        specs = {name: spec for name, spec in specs.items() if name in settings.serve_models}
    pipelines = load_pipelines(project_dir, specs, settings)
    notifications = load_notifications(project_dir)
    migrate(settings.resolved_database_url)
    return Parts(settings, specs, pipelines, notifications)


def check(project_dir: Path) -> list[str]:
    """``freight check``: every fault of a project's settings, models and pipelines."""
    try:
        settings = load_settings(project_dir)
    except FreightError as exc:
        return [exc.message]
    return check_project(project_dir, settings)


@dataclass
class Services:
    """What one process hosts, wired together: the faces get the services only."""

    predictions: PredictionService
    system: SystemService
    batch: BatchService
    signer: UrlSigner
    agent: Agent | None
    signal: WorkSignal
    hub: CompletionHub
    keyring: Keyring
    usage: UsageService
    insight: InsightService | None = None
    callbacks: CallbackService | None = None


#: how long a stopping deliverer lets its sends in flight finish
DELIVERY_GRACE_S = 5.0


def _delivery_host(parts: Parts, store: Store, storage: Storage) -> DeliveryHost:
    """Where this node delivers notifications: a process of its own, or a thread (the
    ``delivery_process`` setting; a ``memory://`` store or storage is this process's
    alone, so a thread), each with its own store handle."""
    settings = parts.settings
    urls = (settings.resolved_database_url, settings.resolved_storage_url)
    if settings.delivery_process and not any(url.startswith("memory://") for url in urls):
        # started once something is to be delivered: most servers never need it
        return DeliveryProcess(
            deliverer.command(settings, DELIVERY_GRACE_S), due=store.deliveries_open
        )
    worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def make(own: Store) -> Deliverer:  # on the thread: its sinks are made on its loop
        sinks = SinkFactory(
            settings, parts.notifications, parts.allow_private_webhooks, AsyncResults(own, storage)
        )
        return deliverer_for(settings, own, storage, sinks, worker_id)

    return DeliveryThread(store, make)


def _wire(parts: Parts, store: Store, *, with_agent: bool) -> Services:
    settings = parts.settings
    signer = UrlSigner(settings.secret())
    storage = open_storage(settings.resolved_storage_url, presign=objects.presigner(signer))
    signal_, hub = WorkSignal(), CompletionHub()
    agent = (
        Agent(
            settings,
            parts.specs,
            store,
            storage,
            signal=signal_,
            hub=hub,
            storage_url=settings.resolved_storage_url,
            deliverer=_delivery_host(parts, store, storage),
            pipelines=parts.pipelines,
            allow_private=parts.allow_private_webhooks,  # http steps: the webhooks' guard
        )
        if with_agent
        else None
    )
    backlog = BacklogGauge(store, refresh_s=0.5)
    quotas = (
        Quotas(settings.tenants, store, lambda: [*parts.specs, *parts.pipelines.specs])
        if settings.tenants
        else None
    )
    predictions = PredictionService(
        settings,
        parts.specs,
        store,
        storage,
        signal=signal_,
        hub=hub,
        interrupt=agent.interrupt if agent else None,
        backlog=backlog,
        pipelines=parts.pipelines,
        subscriptions=Subscriptions(
            server_sinks(parts.notifications), allow_private=parts.allow_private_webhooks
        ),
        quotas=quotas,
    )
    system = SystemService(
        parts.specs,
        store,
        backlog,
        fleet=agent,
        pipelines=parts.pipelines.specs,
        roster=predictions.roster,
    )
    batch = BatchService(
        settings,
        parts.specs,
        store,
        storage,
        signal=signal_,
        pipelines=parts.pipelines,
        subscriptions=Subscriptions(
            server_sinks(parts.notifications), allow_private=parts.allow_private_webhooks
        ),
        quotas=quotas,
    )
    keyring = Keyring(
        store,
        verifier=TokenVerifier.from_settings(settings),
        cache_s=settings.key_cache_s,
        max_failures=settings.max_auth_failures,
        sealer=Sealer(settings.secret()),
    )
    usage = UsageService(store)
    insight = InsightService(store)
    callbacks = CallbackService(store, secret=settings.secret(), hub=hub)
    return Services(
        predictions, system, batch, signer, agent, signal_, hub, keyring, usage, insight, callbacks
    )


async def _run(parts: Parts, *, with_api: bool, with_agent: bool) -> int:
    await check_sinks(parts.settings, parts.notifications)
    store = open_store(parts.settings.resolved_database_url)
    await store.open()
    services = _wire(parts, store, with_agent=with_agent)
    hub = services.hub
    # other processes' work and completions wake this one (PostgreSQL LISTEN/NOTIFY)
    listener = asyncio.create_task(
        store.listen(
            services.signal.notify,
            lambda prediction_id: hub.publish([prediction_id]),
            services.agent.deliverer.wake
            if services.agent is not None and services.agent.deliverer is not None
            else None,
        ),
        name="store:listen",
    )
    try:
        if with_api:
            return await _serve_http(parts, services)
        return await _serve_worker(parts, services)
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
        await store.close()


def _lifespan(
    parts: Parts, agent: Agent | None
) -> Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]:
    settings = parts.settings

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if agent is not None:
            await agent.start()
        yield
        if agent is not None:
            log.info(
                "draining: finishing running predictions (grace %.0fs)", settings.drain_grace_s
            )
            await agent.drain()

    return lifespan


async def _serve_http(parts: Parts, services: Services) -> int:
    await _check_exposure(parts.settings, services.keyring)
    app = create_app(
        services.predictions,
        services.system,
        services.signer,
        lifespan=_lifespan(parts, services.agent),
        batch=services.batch,
        keyring=services.keyring,
        usage=services.usage,
        insight=services.insight,
        callbacks=services.callbacks,
    )
    return await _uvicorn(app, parts, services, parts.settings.host, parts.settings.port)


async def _check_exposure(settings: Settings, keyring: Keyring) -> None:
    """Safe by default: without any key, serve loopback only (and say so), unless the
    user explicitly allows unauthenticated access."""
    if settings.admin_key:
        await keyring.adopt(settings.admin_key)
    if await keyring.required():
        return
    if not _loopback(settings.host) and not settings.allow_unauthenticated:
        raise ConfigError(
            f"refusing to serve {settings.host} without API keys: create one "
            "(freight keys create --tenant NAME --scope admin), or set "
            "allow_unauthenticated: true (FREIGHT_ALLOW_UNAUTHENTICATED=1) if a proxy "
            "in front authenticates callers"
        )
    print(
        "freight: no API key configured: every caller is the 'default' tenant with every "
        "scope (freight keys create adds one; from then on every call needs a key)",
        flush=True,
    )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _serve_worker(parts: Parts, services: Services) -> int:
    """An agent and its replicas; with ``--port``, its probes and metrics over HTTP."""
    agent = services.agent
    assert agent is not None
    if parts.worker_port is not None:
        app = create_probe_app(services.system, lifespan=_lifespan(parts, agent))
        return await _uvicorn(app, parts, services, parts.settings.host, parts.worker_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await agent.start()
    announce = asyncio.create_task(_announce(parts, services, None), name="announce")
    await stop.wait()
    announce.cancel()
    await agent.drain()
    return 0


async def _uvicorn(app: FastAPI, parts: Parts, services: Services, host: str, port: int) -> int:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        log_config=None,  # uvicorn's lines go through freight's handler (text or JSON)
        lifespan="on",
        timeout_graceful_shutdown=5,
        access_log=False,
    )
    server = _Server(config)
    agent = services.agent

    def on_signal() -> None:
        if agent is not None:  # before uvicorn's graceful wait for open requests
            agent.stop_claiming()
        server.request_exit()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    announce = asyncio.create_task(_announce(parts, services, server), name="announce")
    await server.serve()
    announce.cancel()
    return 0 if server.started else 1


class _Server(uvicorn.Server):
    """uvicorn re-raises a captured SIGTERM after shutting down, which would make a
    clean drain exit with -15; freight handles the signals itself and exits 0."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def request_exit(self) -> None:
        self.should_exit = True


async def _announce(parts: Parts, services: Services, server: uvicorn.Server | None) -> None:
    """One line per fact a user needs at start: where to reach it, where its state
    lives, and (once loaded) which models are ready here."""
    if server is not None:
        while not server.started:
            await asyncio.sleep(0.05)
        for sock in server.servers[0].sockets if server.servers else []:
            host, port = sock.getsockname()[:2]
            url = f"http://{host}:{port}"
            what = "API" if services.agent is None or parts.worker_port is None else "probes"
            docs = f"  docs {url}/docs" if what == "API" else ""
            print(f"freight: {what} {url}{docs}", flush=True)
    settings = parts.settings
    print(
        f"freight: state {_shown(settings.resolved_database_url)}"
        f"  objects {_shown(settings.resolved_storage_url)}",
        flush=True,
    )
    agent = services.agent
    if agent is None:
        return
    if server is None or parts.worker_port is not None:
        print(f"freight: worker {agent.worker_id}", flush=True)
    # a model scaled to zero (min 0) or not served on this node has nothing to wait for
    idle = {n for n, spec in parts.specs.items() if spec.replicas.min == 0}
    while True:
        states = agent.model_states()
        pending = [
            n
            for n, s in states.items()
            if s.served and n not in idle and s.ready_replicas == 0 and s.load_error is None
        ]
        if not pending:
            break
        await asyncio.sleep(0.1)
    ready = sorted(n for n, s in states.items() if s.ready_replicas)
    failed = sorted(n for n, s in states.items() if s.load_error is not None)
    print(f"freight: models ready: {', '.join(ready) or 'none'}", flush=True)
    at_zero = sorted(n for n in idle if n in states and states[n].served)
    if at_zero:
        print(f"freight: models at zero until work arrives: {', '.join(at_zero)}", flush=True)
    if failed:
        print(f"freight: models failing to load: {', '.join(failed)}", flush=True)


def _shown(url: str) -> str:
    """A URL without its credentials or query (which may hold secrets)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


def _exit_during_start(signum: int, frame: object) -> None:
    raise SystemExit(0)


def tune_gc() -> None:
    """Fewer, later collections: everything imported so far lives for the whole run
    (frozen out of the collector's scans), and a request makes thousands of short-lived
    objects, so the default gen-0 threshold of 700 triggered collections mid-request."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 50)


def _main(
    project_dir: Path,
    with_api: bool,
    with_agent: bool,
    worker_port: int | None = None,
    **overrides: object,
) -> int:
    # a SIGTERM during start-up (before the loop's handlers) is a clean exit: nothing
    # has been claimed yet
    signal.signal(signal.SIGTERM, _exit_during_start)
    try:
        parts = prepare(project_dir, **overrides)
        parts.worker_port = worker_port
        shape = "serve" if with_api and with_agent else "api" if with_api else "worker"
        tracing.configure(f"freight-{shape}")  # only where OTEL_* variables ask for it
        tune_gc()
        return asyncio.run(_run(parts, with_api=with_api, with_agent=with_agent))
    except FreightError as exc:
        print(f"freight: error: {exc.message}", file=sys.stderr)
        return 2
    finally:
        tracing.shutdown()  # what is buffered is exported before the process ends


def migrate_only(project_dir: Path) -> int:
    """``freight migrate``: the schema at head, nothing else."""
    try:
        settings = load_settings(project_dir)
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        migrate(settings.resolved_database_url)
    except FreightError as exc:
        print(f"freight: error: {exc.message}", file=sys.stderr)
        return 2
    print(f"freight: schema of {settings.resolved_database_url.split('@')[-1]} is current")
    return 0


def serve(project_dir: Path, host: str | None = None, port: int | None = None) -> int:
    """The embedded shape: API and agent (with its runner processes) in one command."""
    return _main(project_dir, True, True, host=host, port=port)


def serve_api(project_dir: Path, host: str | None = None, port: int | None = None) -> int:
    """Cluster shape: the HTTP API only (workers run elsewhere)."""
    return _main(project_dir, True, False, host=host, port=port)


def serve_worker(
    project_dir: Path,
    host: str | None = None,
    port: int | None = None,
    models: list[str] | None = None,
) -> int:
    """Cluster shape: an agent and its replicas; with ``port``, ``/healthz``, ``/readyz``
    and ``/metrics`` on ``host:port`` for Kubernetes probes and Prometheus; with
    ``models``, only those models (by name)."""
    extra: dict[str, object] = {"serve_models": models} if models else {}
    return _main(project_dir, False, True, worker_port=port, host=host, **extra)
