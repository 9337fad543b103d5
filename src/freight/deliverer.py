"""The delivery process: ``python -m freight.deliverer PROJECT_DIR HOST PORT GRACE_S``.

Part of the composition root: started by a node's agent
(:class:`~freight.agent.delivery_process.DeliveryProcess`, built in ``server.py``), it
builds what its deliverer needs from the same project and environment as its parent
(settings, its own store handle, the storage, the sinks of ``freight.yaml``) and
delivers until its standard input ends. Nothing secret is on its command line: the
secrets come from the environment and the files it shares with its parent.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import uuid
from pathlib import Path

from freight import logsetup, tracing
from freight.agent.delivery import Deliverer, deliverer_for
from freight.agent.delivery_process import read_wakes
from freight.agent.delivery_thread import serve
from freight.api.routes import objects
from freight.config import Settings, load_settings
from freight.notify.config import allow_private, load_notifications
from freight.sagemaker import AsyncResults
from freight.signing import UrlSigner
from freight.storage import open_storage
from freight.store import Store, open_store
from freight.wiring import SinkFactory

log = logging.getLogger("freight.delivery")


def command(settings: Settings, grace_s: float) -> list[str]:
    """How a node starts its delivery process (this interpreter, this module)."""
    return [
        sys.executable,
        "-m",
        "freight.deliverer",
        str(Path(settings.project_dir).resolve()),
        settings.host,
        str(settings.port),
        str(grace_s),
    ]


async def _deliver(settings: Settings, grace_s: float) -> None:
    project_dir = Path(settings.project_dir)
    notifications = load_notifications(project_dir)
    private = settings.webhook_allow_private or allow_private(notifications)
    storage = open_storage(
        settings.resolved_storage_url, presign=objects.presigner(UrlSigner(settings.secret()))
    )
    worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    halted = asyncio.Event()
    deliverer: Deliverer | None = None

    def make(store: Store) -> Deliverer:
        sinks = SinkFactory(settings, notifications, private, AsyncResults(store, storage))
        return deliverer_for(settings, store, storage, sinks, worker_id)

    def ready(made: Deliverer | None) -> None:
        nonlocal deliverer
        deliverer = made

    def wake() -> None:
        if deliverer is not None:
            deliverer.wake()

    read_wakes(sys.stdin.fileno(), wake, halted.set)
    await serve(
        halted,
        lambda: open_store(settings.resolved_database_url),
        make,
        ready,
        lambda: grace_s,
    )


def main(argv: list[str]) -> int:
    # a terminal's Ctrl-C reaches the whole process group: the parent decides the end
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    project_dir, host, port, grace_s = argv[1], argv[2], int(argv[3]), float(argv[4])
    settings = load_settings(Path(project_dir), host=host, port=port)
    logsetup.configure(settings.log_level, settings.log_format)
    tracing.configure("freight-deliverer")  # only where OTEL_* variables ask for it
    from freight.server import tune_gc  # not at the top: server.py imports this module

    tune_gc()  # as the server's: py-spy saw default-threshold collections take 6 %
    try:
        asyncio.run(_deliver(settings, grace_s))
    finally:
        tracing.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
