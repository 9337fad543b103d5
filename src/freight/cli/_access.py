"""``freight keys create|list|revoke``: API keys, on the server's own database.

Like ``freight webhooks secret``, these act as the server's operator: they open the
database the project's settings name (so the first key can be made before any key
exists) and import ``freight.server`` only when run. A key's token is printed once,
alone on stdout; only its hash is kept.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from freight.access import ApiKey, Scope, new_key
from freight.cli._base import DirArgument, app, err, out
from freight.errors import FreightError
from freight.views import iso

keys = typer.Typer(name="keys", help="API keys: create, list, revoke.", no_args_is_help=True)
app.add_typer(keys)

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90d``, ``12h``, ``30m``, ``45s`` -> seconds."""
    match = _DURATION.match(text.strip())
    if not match:
        raise typer.BadParameter("give a duration like 90d, 12h, 30m or 45s")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def _server() -> Any:
    return importlib.import_module("freight.server")


def _fail(exc: FreightError) -> typer.Exit:
    err.print(f"[bold red]error[/] [red]{exc.code}[/]: {exc.message}")
    return typer.Exit(1)


@keys.command("create")
def create(
    tenant: Annotated[str, typer.Option("--tenant", help="The tenant the key acts as.")],
    scope: Annotated[
        list[Scope] | None,
        typer.Option("--scope", help="predict, read, batch, admin, metrics (repeatable)."),
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option("--model", help="Only this model or pipeline (repeatable)."),
    ] = None,
    expires: Annotated[
        str | None, typer.Option("--expires", help="Lifetime: 90d, 12h, 30m.")
    ] = None,
    name: Annotated[str, typer.Option("--name", help="What the key is for.")] = "",
    sigv4: Annotated[
        bool,
        typer.Option(
            "--sigv4",
            help="An access-key pair for AWS clients (boto3 sagemaker-runtime) instead.",
        ),
    ] = False,
    project_dir: DirArgument = Path("."),
) -> None:
    """Make a key and print it once (store it now: only its hash is kept). With --sigv4,
    an access key id and its secret access key, one per line (the secret is kept sealed
    with the server's secret_key)."""
    expires_in_s = parse_duration(expires) if expires else None
    try:
        key, token = _server().keys_create(
            project_dir,
            tenant=tenant,
            name=name,
            scopes=scope or [Scope.PREDICT, Scope.READ],
            targets=model,
            expires_in_s=expires_in_s,
            sigv4=sigv4,
        )
    except FreightError as exc:
        raise _fail(exc) from None
    if sigv4:
        err.print(
            f"SigV4 pair for tenant {key.tenant} ({', '.join(sorted(key.scopes))}); the "
            "secret is shown once: aws_access_key_id on the first line, "
            "aws_secret_access_key on the second"
        )
        typer.echo(key.key_id)
        typer.echo(token)
        return
    err.print(
        f"key {key.key_id} for tenant {key.tenant} ({', '.join(sorted(key.scopes))}); "
        "shown once: send it as `Authorization: Bearer <key>`"
    )
    typer.echo(token)  # alone on stdout, so it pipes into a secret store


def _keys_table(found: list[ApiKey]) -> Table:
    table = Table("id", "tenant", "name", "scopes", "models", "created", "expires", "revoked")
    table.columns[0].no_wrap = True  # revoke takes it whole
    for k in found:
        table.add_row(
            k.key_id,
            k.tenant,
            k.name,
            ",".join(sorted(k.scopes)),
            "all" if k.targets is None else ",".join(sorted(k.targets)),
            iso(k.created_at) or "",
            iso(k.expires_at) or "never",
            iso(k.revoked_at) or "",
        )
    return table


@keys.command("generate")
def generate() -> None:
    """Print a new, well-formed key without storing it: the operator's ``admin_key``
    (FREIGHT_ADMIN_KEY, from a secret), registered by the API when it starts."""
    typer.echo(new_key().token)


@keys.command("list")
def list_(
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant's.")] = None,
    project_dir: DirArgument = Path("."),
) -> None:
    """Every key (never its token): id, tenant, scopes, models, expiry, revocation."""
    try:
        found = _server().keys_list(project_dir, tenant)
    except FreightError as exc:
        raise _fail(exc) from None
    out.print(_keys_table(found))


@keys.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(metavar="KEY_ID", help="The key's id (not its token).")],
    project_dir: DirArgument = Path("."),
) -> None:
    """Revoke a key: every API process refuses it within key_cache_s (2 s)."""
    try:
        key = _server().keys_revoke(project_dir, key_id)
    except FreightError as exc:
        raise _fail(exc) from None
    out.print(f"revoked {key.key_id} (tenant {key.tenant})")
