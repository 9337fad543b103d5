"""How the CLI shows things: Rich tables and panels, kept apart from the commands.

Everything here is a pure function from client objects to Rich renderables,
so the commands stay short and the look can change without touching them.
"""

from __future__ import annotations

import json
from datetime import datetime

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from freight.client import ModelInfo, Prediction

STATUS_STYLES = {
    "awaiting_input": "magenta",
    "queued": "yellow",
    "running": "cyan",
    "succeeded": "bold green",
    "failed": "bold red",
    "canceled": "dim",
    "expired": "dim red",
}


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLES.get(status, ""))


def _time(value: datetime | None) -> str:
    return value.isoformat(timespec="milliseconds") if value else "-"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f} ms"


def prediction_panel(p: Prediction) -> Panel:
    """Everything an operator asks about one prediction: state, timings, attempts, error."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("id", p.id)
    table.add_row("target", f"{p.target} ({p.kind})")
    table.add_row("status", status_text(p.status))
    table.add_row("attempts", str(p.attempts))
    table.add_row("priority", str(p.priority))
    for label, value in (
        ("created", p.created_at),
        ("queued", p.queued_at),
        ("started", p.started_at),
        ("finished", p.finished_at),
    ):
        table.add_row(label, _time(value))
    m = p.metrics
    table.add_row("queue / run / total", f"{_ms(m.queue_ms)} / {_ms(m.run_ms)} / {_ms(m.total_ms)}")
    if m.batch_size is not None:
        table.add_row("batch size", str(m.batch_size))
    if p.input_content_type:
        table.add_row("input", f"{p.input_content_type}, {p.input_bytes or 0:,} bytes")
    if p.output_content_type:
        table.add_row("output", f"{p.output_content_type}, {p.output_bytes or 0:,} bytes")
    if p.output_url:
        table.add_row("output url", p.output_url)
    if p.error is not None:
        table.add_row("error", Text(f"{p.error.code}: {p.error.message}", style="red"))
    if p.metadata:
        table.add_row("metadata", json.dumps(p.metadata))
    return Panel(table, title=f"prediction {p.id}", expand=False)


def models_table(models: list[ModelInfo]) -> Table:
    table = Table(title="models")
    for column in ("name", "input", "batching", "replicas", "queued", "running"):
        table.add_column(column, justify="right" if column in ("queued", "running") else "left")
    for m in models:
        batching = f"≤{m.batching.max_size}, {m.batching.max_wait_ms:g} ms" if m.batching else "-"
        replicas = (
            f"{m.replicas.running} (min {m.replicas.min}, max {m.replicas.max})"
            if m.replicas
            else "-"
        )
        table.add_row(
            m.name,
            m.input_kind,
            batching,
            replicas,
            str(m.backlog.queued),
            str(m.backlog.running),
        )
    return table


def summary(p: Prediction) -> Group:
    """The one-line outcome printed after predict."""
    line = Text.assemble(("prediction ", "dim"), (p.id, "bold"), " ", status_text(p.status))
    if p.metrics.total_ms is not None:
        line.append(f"  ({p.metrics.total_ms:,.0f} ms)", style="dim")
    return Group(line)
