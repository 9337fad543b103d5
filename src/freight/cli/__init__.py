"""The ``freight`` command line (Typer + Rich).

``main`` is the console-script entry point (``freight = "freight.cli:main"``).
The app and what every command module shares live in ``_base.py``; the commands in
``_app.py`` (with ``_batch.py``), ``_notify.py``, ``_usage.py`` and ``_callback.py``,
registered on import. Tests swap ``_base.client_factory`` to point the CLI at a scripted
server.
"""

from __future__ import annotations

from freight.cli import _access, _app, _callback, _notify, _usage  # register their commands
from freight.cli._base import app

__all__ = ["_access", "_app", "_callback", "_notify", "_usage", "app", "main"]


def main() -> None:
    """Run the CLI; Typer turns exceptions into exit codes."""
    app()
