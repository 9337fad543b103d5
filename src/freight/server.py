"""Process entry points: ``serve`` (embedded: API + agent), ``serve_api``, ``serve_worker``.

The same parts run in every shape; only what one process hosts differs. The
embedded shape hosts both, which lets the API wake claim loops and waiters
through in-memory events instead of polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from freight.agent import Agent
from freight.api import create_app
from freight.config import Settings, load_settings
from freight.errors import FreightError
from freight.events import CompletionHub, WorkSignal
from freight.registry import ModelSpec, discover
from freight.service import PredictionService
from freight.signing import UrlSigner
from freight.storage import open_storage
from freight.store import migrate, open_store

log = logging.getLogger("freight")


@dataclass
class Parts:
    settings: Settings
    specs: dict[str, ModelSpec]


def prepare(project_dir: Path, **overrides: object) -> Parts:
    """Settings, models and an up-to-date schema; raises FreightError with a clear message."""
    settings = load_settings(project_dir, **overrides)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    specs = discover(project_dir, settings.models or None)
    migrate(settings.resolved_database_url)
    return Parts(settings, specs)


async def _run(parts: Parts, *, with_api: bool, with_agent: bool) -> int:
    settings = parts.settings
    store = open_store(settings.resolved_database_url)
    await store.open()
    signer = UrlSigner(settings.secret())
    storage = open_storage(settings.resolved_storage_url, signer=signer)
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
        )
        if with_agent
        else None
    )
    service = PredictionService(
        settings,
        parts.specs,
        store,
        storage,
        signal=signal_,
        hub=hub,
        interrupt=agent.interrupt if agent else None,
    )
    # other processes' work and completions wake this one (PostgreSQL LISTEN/NOTIFY)
    listener = asyncio.create_task(
        store.listen(signal_.notify, lambda prediction_id: hub.publish([prediction_id])),
        name="store:listen",
    )
    try:
        if with_api:
            return await _serve_http(settings, service, signer, agent)
        assert agent is not None
        return await _serve_agent_only(agent)
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
        await store.close()


async def _serve_http(
    settings: Settings,
    service: PredictionService,
    signer: UrlSigner,
    agent: Agent | None,
) -> int:
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

    app = create_app(service, signer, agent, lifespan=lifespan)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=5,
        access_log=False,
    )
    server = _Server(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.request_exit)
    announce = asyncio.create_task(_announce(server), name="announce")
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


async def _announce(server: uvicorn.Server) -> None:
    while not server.started:
        await asyncio.sleep(0.05)
    for sock in server.servers[0].sockets if server.servers else []:
        host, port = sock.getsockname()[:2]
        url = f"http://{host}:{port}"
        print(f"freight: API {url}  docs {url}/docs", flush=True)


async def _serve_agent_only(agent: Agent) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await agent.start()
    print(f"freight: worker {agent.worker_id} serving {', '.join(agent.workers)}", flush=True)
    await stop.wait()
    await agent.drain()
    return 0


def _tune_gc() -> None:
    """Fewer, later collections: everything imported so far lives for the whole run
    (frozen out of the collector's scans), and a request makes thousands of short-lived
    objects, so the default gen-0 threshold of 700 triggered collections mid-request."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 50)


def _main(project_dir: Path, with_api: bool, with_agent: bool, **overrides: object) -> int:
    try:
        parts = prepare(project_dir, **overrides)
        _tune_gc()
        return asyncio.run(_run(parts, with_api=with_api, with_agent=with_agent))
    except FreightError as exc:
        print(f"freight: error: {exc.message}", file=sys.stderr)
        return 2


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


def serve_worker(project_dir: Path, host: str | None = None, port: int | None = None) -> int:
    """Cluster shape: an agent and its replicas, no HTTP."""
    return _main(project_dir, False, True)
