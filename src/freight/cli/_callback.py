"""The callback commands: ``freight callback succeed|fail|heartbeat URL_OR_TOKEN``.

What a person (or a script) answering a pipeline's waiting callback step runs: the
URL is any of the three the step published (its ``step.waiting`` event, ``freight
status RUN``), or its bare token on the ``--url`` server. The token is the credential:
no API key is needed, and it is never printed back.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from freight.cli._base import UrlOption, app, err, out
from freight.cli._base import command_client as _client
from freight.client import CallbackAnswered

callback = typer.Typer(
    name="callback",
    help="Answer a pipeline's waiting callback step (kind: callback).",
    no_args_is_help=True,
)
app.add_typer(callback)

Target = Annotated[
    str,
    typer.Argument(metavar="URL_OR_TOKEN", help="One of the step's callback URLs, or its token."),
]


def _value(text: str) -> Any:
    """The output as given: JSON text, ``@file`` (its JSON), or ``-`` (stdin's JSON)."""
    if text == "-":
        text = sys.stdin.read()
    elif text.startswith("@"):
        text = Path(text[1:]).read_text()
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"the output is not JSON: {exc}") from None


def _show(answered: CallbackAnswered) -> None:
    line = f"step {answered.step} ({answered.prediction_id}): {answered.status}"
    if answered.deadline is not None and answered.status == "running":
        line += f", waits until {answered.deadline.isoformat()}"
    out.print(line)
    if answered.run_id:
        err.print(f"follow the run with [bold]freight status {answered.run_id}[/]")


@callback.command()
def succeed(
    ctx: typer.Context,
    target: Target,
    output: Annotated[
        str,
        typer.Argument(help="The step's output: JSON text, @file, or - for stdin."),
    ] = "null",
    url: UrlOption = None,
) -> None:
    """The step succeeds with OUTPUT as its output (checked against its schema)."""
    value = _value(output)
    with _client(ctx, url) as client:
        _show(client.callback_success(target, value))


@callback.command()
def fail(
    ctx: typer.Context,
    target: Target,
    error: Annotated[str, typer.Option("--error", help="A short error name.")] = "",
    cause: Annotated[str, typer.Option("--cause", help="Why, in words.")] = "",
    url: UrlOption = None,
) -> None:
    """The step fails with callback_failed (its retry and catch apply)."""
    with _client(ctx, url) as client:
        _show(client.callback_failure(target, error, cause))


@callback.command()
def heartbeat(ctx: typer.Context, target: Target, url: UrlOption = None) -> None:
    """The answer is being worked on: the step's deadline moves on by its heartbeat_s."""
    with _client(ctx, url) as client:
        _show(client.callback_heartbeat(target))
