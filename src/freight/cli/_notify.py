"""The notification commands: ``freight deliveries ID``, ``freight redeliver
DELIVERY_ID`` and ``freight webhooks secret``.

Kept apart from ``_app.py`` (the prediction commands) and registered on the same
Typer app when the CLI package is imported. ``webhooks secret`` reads the
server's database, so like the serve commands it imports ``freight.server``
only when run.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Annotated, Any

import typer

from freight.cli import _render
from freight.cli._base import DirArgument, UrlOption, app, err, out
from freight.cli._base import command_client as _client
from freight.errors import FreightError

webhooks = typer.Typer(name="webhooks", help="Webhook settings of a server.", no_args_is_help=True)
app.add_typer(webhooks)

VERIFY_HINT = (
    "receivers verify the webhook-signature header with this secret (Standard Webhooks: "
    "v1,<base64 HMAC-SHA256 of webhook-id.webhook-timestamp.body>; "
    "e.g. standardwebhooks.Webhook(secret).verify(body, headers))"
)


@app.command()
def deliveries(
    ctx: typer.Context,
    prediction_id: Annotated[str, typer.Argument(metavar="ID", help="Prediction id.")],
    redeliver_dead: Annotated[
        bool,
        typer.Option("--redeliver-dead", help="Send every dead one again now, then show them all."),
    ] = False,
    url: UrlOption = None,
) -> None:
    """Show a prediction's notifications: each event per sink (its id names it to
    ``freight redeliver``), its status, attempts, the receiver's last answer and when it
    is retried."""
    with _client(ctx, url) as client:
        found = client.deliveries(prediction_id)
        dead = [d for d in found if d.status == "dead"] if redeliver_dead else []
        for d in dead:
            client.redeliver(d.id)
        if dead:
            err.print(f"sent {len(dead)} dead notification(s) again")
            found = client.deliveries(prediction_id)
    if not found:
        out.print(
            f"no notifications for {prediction_id} (it was created without a webhook "
            "and no server sink matches it)"
        )
        return
    out.print(_render.deliveries_table(prediction_id, found))


@app.command()
def redeliver(
    ctx: typer.Context,
    delivery_id: Annotated[
        str,
        typer.Argument(metavar="DELIVERY_ID", help="A delivery's id (freight deliveries ID)."),
    ],
    url: UrlOption = None,
) -> None:
    """Send a notification again now, with its original event id (receivers de-duplicate
    on it): one that died, was stopped by a 410 or waits for its retry. Exits 1 with
    delivery_not_found (unknown) or invalid_state (being sent, or delivered)."""
    with _client(ctx, url) as client:
        again = client.redeliver(delivery_id)
    out.print(_render.redelivered(again))


@webhooks.command("secret")
def secret(
    project_dir: DirArgument = Path("."),
    rotate: Annotated[
        bool,
        typer.Option(
            "--rotate",
            help="Make a new secret; the old one keeps signing alongside it for the "
            "overlap (webhook_secret_overlap_s), so receivers can switch over.",
        ),
    ] = False,
    tenant: Annotated[
        str, typer.Option("--tenant", help="Whose secret: each tenant signs with its own.")
    ] = "default",
) -> None:
    """Print the secret a tenant's webhooks are signed with (created on first use)."""
    server: Any = importlib.import_module("freight.server")
    try:
        value = str(server.webhook_secret(project_dir=project_dir, rotate=rotate, tenant=tenant))
    except FreightError as exc:  # settings that do not load, a database that is down
        err.print(f"[bold red]error[/] [red]{exc.code}[/]: {exc.message}")
        raise typer.Exit(1) from None
    typer.echo(value)  # alone on stdout, so it pipes into a secret store
    typer.echo(VERIFY_HINT, err=True)
