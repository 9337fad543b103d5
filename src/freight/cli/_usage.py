"""``freight usage``: what each tenant and model cost, from the server's usage ledger."""

from __future__ import annotations

import csv
import sys
from collections.abc import Sequence
from typing import Annotated

import typer
from rich.table import Table

from freight.cli._base import UrlOption, app, out
from freight.cli._base import command_client as _client
from freight.client import UsageLine

#: the columns of a key, in the order the server groups them
KEYS = ("tenant", "target", "kind", "hour", "status")
AMOUNTS = (
    "count",
    "compute_s",
    "gpu_s",
    "queue_s",
    "cold_start_s",
    "bytes_in",
    "bytes_out",
)
_ALIASES = {"model": "target", "pipeline": "target"}


def _groups(text: str) -> list[str]:
    names = [_ALIASES.get(g.strip(), g.strip()) for g in text.split(",") if g.strip()]
    unknown = sorted(set(names) - set(KEYS))
    if unknown:
        raise typer.BadParameter(
            f"unknown group {', '.join(unknown)}: give any of {', '.join(KEYS)} (model: target)",
            param_hint="--group-by",
        )
    return list(dict.fromkeys(names))


def _cell(line: UsageLine, name: str) -> str:
    value = getattr(line, name)
    if value is None:
        return ""
    if name == "hour":
        return str(value.strftime("%Y-%m-%d %H:00Z"))
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def usage_table(lines: Sequence[UsageLine], groups: Sequence[str]) -> Table:
    keys = [k for k in KEYS if k in groups]
    table = Table(*keys, *AMOUNTS)
    for column in table.columns[len(keys) :]:
        column.justify = "right"
    for line in lines:
        table.add_row(*(_cell(line, name) for name in (*keys, *AMOUNTS)))
    if len(lines) > 1:
        table.add_section()
        total = ["total", *([""] * (len(keys) - 1))] if keys else []
        for name in AMOUNTS:
            summed = sum(getattr(line, name) for line in lines)
            total.append(f"{summed:.3f}" if isinstance(summed, float) else str(summed))
        table.add_row(*total, style="bold")
    return table


def write_csv(lines: Sequence[UsageLine], groups: Sequence[str]) -> None:
    keys = [k for k in KEYS if k in groups]
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow([*keys, *AMOUNTS])
    for line in lines:
        row: list[object] = []
        for name in keys:
            value = getattr(line, name)
            row.append(value.isoformat() if name == "hour" and value is not None else value)
        row += [getattr(line, name) for name in AMOUNTS]
        writer.writerow(row)


@app.command()
def usage(
    ctx: typer.Context,
    start: Annotated[
        str | None,
        typer.Option("--from", help="Start: ISO 8601 or epoch seconds (default: 24 h ago)."),
    ] = None,
    end: Annotated[
        str | None, typer.Option("--to", help="End: ISO 8601 or epoch seconds (default: now).")
    ] = None,
    group_by: Annotated[
        str,
        typer.Option(
            "--group-by",
            help="Comma-separated: tenant, model (target), kind, hour, status; '' for the total.",
        ),
    ] = "tenant,model",
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="Only this tenant (another's: admin keys).")
    ] = None,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV on stdout, not a table.")] = False,
    url: UrlOption = None,
) -> None:
    """What ran and what it cost, per tenant and model: predictions by outcome, compute,
    GPU, queue and cold-start seconds, bytes in and out (whole hours)."""
    groups = _groups(group_by)
    with _client(ctx, url) as client:
        lines = client.usage(start=start, end=end, group_by=groups, tenant=tenant)
    if as_csv:
        write_csv(lines, groups)
        return
    if not lines:
        out.print("no usage in that window")
        return
    out.print(usage_table(lines, groups))
