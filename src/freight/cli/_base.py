"""What every ``freight`` command module shares: the Typer app, the consoles, the
common options, and the client of a client-side command.

The command modules (``_app``, ``_batch``, ``_notify``) import this one and never
each other's helpers, so the package has no import cycle (tests/unit/test_layers.py
checks it). Client commands build their client through :data:`client_factory` —
the seam tests use to point the CLI at a scripted server. Every client error
becomes a red one-line message with its code and exit status 1, never a traceback.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from freight.cli import _render
from freight.client import Client, FreightClientError

app = typer.Typer(
    name="freight",
    help="Self-hosted asynchronous ML inference.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
out = Console()
err = Console(stderr=True)

client_factory: Callable[[str | None], Client] = Client
"""Builds the client for a command from the --url value (None: $FREIGHT_URL or default)."""

UrlOption = Annotated[
    str | None,
    typer.Option("--url", help="Server URL (default: global --url, $FREIGHT_URL, localhost)."),
]
HostOption = Annotated[str | None, typer.Option("--host", help="Interface to listen on.")]
PortOption = Annotated[int | None, typer.Option("--port", help="Port to listen on.")]
DirArgument = Annotated[Path, typer.Argument(help="Project directory holding the models.")]


@app.callback()
def _root(ctx: typer.Context, url: UrlOption = None) -> None:
    ctx.obj = {"url": url}
    _fit_consoles()


def _fit_consoles() -> None:
    """Rich reads ``COLUMNS`` once, when a console is made (here, at import): read it
    again for each command, so a width set for this run applies to it."""
    columns = os.environ.get("COLUMNS", "")
    for console in (out, err):
        console.width = int(columns) if columns.isdigit() else None  # type: ignore[assignment]


@contextmanager
def command_client(ctx: typer.Context, url: str | None) -> Iterator[Client]:
    """The command's client, with client errors turned into a message and exit code 1."""
    chosen = url or (ctx.obj or {}).get("url")
    try:
        with client_factory(chosen) as client:
            yield client
    except FreightClientError as exc:
        err.print(f"[bold red]error[/] [red]{exc.code}[/]: {exc.message}")
        for problem in _render.problems(exc.detail):  # which field, and why (a 422)
            err.print(Text(f"  {problem}"), soft_wrap=True)
        raise typer.Exit(1) from None
    except TimeoutError as exc:
        err.print(f"[bold yellow]timeout[/]: {exc}")
        raise typer.Exit(1) from None
