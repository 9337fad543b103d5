"""The ``freight`` command line (Typer + Rich).

``main`` is the console-script entry point (``freight = "freight.cli:main"``).
The commands live in ``_app.py``; tests swap ``_app.client_factory`` to point
the CLI at a scripted server.
"""

from __future__ import annotations

from freight.cli import _notify  # registers the notification commands
from freight.cli._app import app

__all__ = ["_notify", "app", "main"]


def main() -> None:
    """Run the CLI; Typer turns exceptions into exit codes."""
    app()
