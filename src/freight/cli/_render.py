"""How the CLI shows things: Rich tables and panels, kept apart from the commands.

Everything here is a pure function from client objects to Rich renderables,
so the commands stay short and the look can change without touching them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from freight.client import (
    Delivery,
    ModelInfo,
    Notifications,
    PipelineInfo,
    Prediction,
    StepInfo,
    StreamEvent,
)

STATUS_STYLES = {
    "pending": "dim yellow",
    "skipped": "dim",
    "awaiting_input": "magenta",
    "queued": "yellow",
    "running": "cyan",
    "succeeded": "bold green",
    "failed": "bold red",
    "canceled": "dim",
    "expired": "dim red",
}


DELIVERY_STYLES = {
    "pending": "yellow",
    "sending": "cyan",
    "delivered": "bold green",
    "dead": "bold red",
    "stopped": "dim",
}


NOTIFICATION_STYLES = DELIVERY_STYLES | {"failing": "bold yellow"}


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLES.get(status, ""))


def _time(value: datetime | None) -> str:
    return value.isoformat(timespec="milliseconds") if value else "-"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f} ms"


def prediction_panel(p: Prediction) -> RenderableType:
    """Everything an operator asks about one prediction: state, timings, attempts, error;
    a pipeline run's steps below it, and on a step the run it belongs to."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("id", p.id)
    table.add_row("target", f"{p.target} ({p.kind})")
    table.add_row("status", status_text(p.status))
    if p.waiting_reason is not None:
        table.add_row("waiting", Text(f"{p.waiting_reason}: {p.waiting_message or ''}"))
    if p.run_id is not None:
        element = "" if p.item_index is None else f" [{p.item_index}]"
        table.add_row("run", Text(f"{p.run_id}, step {p.step}{element}"))
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
    if p.notifications is not None:
        table.add_row("notifications", notifications_text(p.notifications))
    panel = Panel(table, title=f"prediction {p.id}", expand=False)
    return panel if not p.steps else Group(panel, steps_table(p.steps))


def notifications_text(n: Notifications) -> Text:
    """``dead (1 delivered, 1 dead of 2)``: the state, then the counts that are not zero."""
    counts = ("delivered", "pending", "failing", "dead", "stopped")
    parts = [f"{getattr(n, name)} {name}" for name in counts if getattr(n, name)]
    text = Text(n.state, style=NOTIFICATION_STYLES.get(n.state, ""))
    text.append(f" ({', '.join(parts)} of {n.deliveries})" if parts else " (none owed)")
    return text


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


def model_detail(m: ModelInfo) -> Table:
    """One model: its replicas and what its autoscaler decided, and why."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("name", m.name)
    table.add_row("input", m.input_kind)
    if m.replicas is not None:
        r = m.replicas
        desired = "-" if r.desired is None else str(r.desired)
        table.add_row(
            "replicas",
            f"{r.running} ready, {r.starting} starting, desired {desired}"
            f" (min {r.min}, max {r.max}, target backlog {r.target_backlog}, idle {r.idle_s} s"
            f"{f', {r.gpus} GPU each' if r.gpus else ''})",
        )
    table.add_row("backlog", f"{m.backlog.queued} queued, {m.backlog.running} running")
    scaling = m.scaling
    if scaling is not None:
        if not scaling.served:
            table.add_row("served", f"no: {scaling.not_served}")
        table.add_row("autoscaler", scaling.reason or "-")
        change = scaling.last_change
        if change is not None:
            table.add_row(
                "last change", f"{change.from_} -> {change.to} ({change.reason}) at {change.at}"
            )
        for start in scaling.cold_starts:
            load = f", load() {start.load_s:g} s" if start.load_s is not None else ""
            table.add_row("cold start", f"{start.seconds:g} s{load} at {start.at}")
    return table


def summary(p: Prediction) -> Group:
    """The one-line outcome printed after predict."""
    line = Text.assemble(("prediction ", "dim"), (p.id, "bold"), " ", status_text(p.status))
    if p.metrics.total_ms is not None:
        line.append(f"  ({p.metrics.total_ms:,.0f} ms)", style="dim")
    return Group(line)


def _step_detail(step: StepInfo) -> Text:
    """Why a step failed, how far a for_each step's elements got, or why it waits."""
    if step.error is not None:
        return Text(f"{step.error.code}: {step.error.message}", style="red")
    if step.items is not None:
        done = sum(item.status == "succeeded" for item in step.items)
        return Text(f"{done}/{len(step.items)} elements succeeded")
    if step.kind == "pipeline":
        return Text(f"freight status {step.prediction_id}", style="dim")
    if step.callback is not None:  # a waiting callback step: how to answer it
        url = step.callback.urls.get("success", "")
        return Text(f"awaiting its callback: freight callback succeed {url} OUTPUT", "yellow")
    if step.waiting_reason is not None:
        return Text(f"waiting: {step.waiting_reason}", style="yellow")
    return Text("")


def steps_table(steps: dict[str, StepInfo]) -> Table:
    """A run's steps in run order: status, target, run time, and what went wrong."""
    table = Table(title="steps")
    for column in ("step", "status", "target", "run", "detail"):
        table.add_column(column, justify="right" if column == "run" else "left")
    for name, step in steps.items():
        table.add_row(
            Text(name),
            status_text(step.status),
            Text(f"{step.target} ({step.kind})"),
            _ms(step.metrics.run_ms),
            _step_detail(step),
        )
    return table


def pipelines_table(pipelines: list[PipelineInfo]) -> Table:
    table = Table(title="pipelines")
    for column in ("name", "steps", "targets", "timeout"):
        table.add_column(column, justify="right" if column == "steps" else "left")
    for p in pipelines:
        targets = ", ".join(sorted({step.target for step in p.steps}))
        timeout = "-" if p.timeout_s is None else f"{p.timeout_s:g} s"
        table.add_row(Text(p.name), str(len(p.steps)), Text(targets), timeout)
    return table


def pipeline_table(p: PipelineInfo) -> Table:
    """One pipeline's steps in dependency order, with what each waits for and when it runs."""
    timeout = "" if p.timeout_s is None else f", timeout {p.timeout_s:g} s"
    table = Table(title=f"pipeline {p.name}{timeout}")
    for column in ("step", "target", "needs", "when", "for_each", "optional"):
        table.add_column(column)
    for step in p.steps:
        table.add_row(
            Text(step.name),
            Text(f"{step.target} ({step.kind})"),
            Text(", ".join(step.needs) or "-"),
            Text(step.when or "-"),
            Text(step.for_each or "-"),
            "yes" if step.optional else "-",
        )
    return table


def progress(event: StreamEvent) -> str:
    """What the spinner says on an event: the status, or which step reached what."""
    if event.type.startswith("step."):
        return f"running; step {event.prediction.step} {event.type.removeprefix('step.')}"
    return event.type


def _last(d: Delivery) -> Text:
    """The receiver's last answer: its status code, its error, or both."""
    parts = [str(d.last_code)] if d.last_code is not None else []
    if d.last_error:
        parts.append(d.last_error)
    return Text(" ".join(parts) or "-", style="red" if d.last_error else "")


def _next_retry(at: datetime | None, now: datetime) -> str:
    if at is None:
        return "-"
    seconds = (at - now).total_seconds()
    when = "due" if seconds <= 0 else f"in {seconds:,.0f} s"
    return f"{at.astimezone(UTC):%H:%M:%S} UTC ({when})"


def problems(detail: dict[str, Any]) -> list[str]:
    """A validation error's problems as ``field: why`` lines (nothing for other errors)."""
    found = detail.get("errors")
    if not isinstance(found, list):
        return []
    lines = []
    for problem in found:
        if isinstance(problem, dict):
            where = ".".join(str(part) for part in problem.get("loc") or [] if part != "body")
            lines.append(f"{where or 'request'}: {problem.get('msg', '')}")
    return lines


def redelivered(d: Delivery) -> Text:
    """What ``freight redeliver`` says: which event goes where again, and its status."""
    text = Text(f"{d.event} to {d.sink}: ")
    text.append(d.status, style=DELIVERY_STYLES.get(d.status, ""))
    text.append(f" (event id {d.event_id}, {d.attempts} attempt(s) so far)")
    return text


def deliveries_table(prediction_id: str, deliveries: list[Delivery]) -> Table:
    """A prediction's notifications: where each event goes and how its delivery went."""
    table = Table(title=f"deliveries of {prediction_id}")
    now = datetime.now(UTC)
    for column in ("id", "sink", "event", "status", "attempts", "last", "next retry"):
        table.add_column(column, justify="right" if column == "attempts" else "left")
    for d in deliveries:
        table.add_row(
            Text(d.id, overflow="fold"),
            Text(d.sink),
            Text(d.event),
            Text(d.status, style=DELIVERY_STYLES.get(d.status, "")),
            str(d.attempts),
            _last(d),
            _next_retry(d.next_at, now),
        )
    return table
