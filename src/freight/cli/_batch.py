"""The batch-job commands: ``freight batch TARGET INPUT -o OUTPUT`` and its
``status``, ``list`` and ``cancel`` subcommands.

``freight batch`` is a group whose first word, when it is not one of its
commands, starts the hidden ``run`` command with every word given (see
:class:`BatchGroup`): the main form needs no subcommand name. A local input is
uploaded (a file, or every file of a directory, with a progress bar), the job
is then followed with a live bar polling ``GET /v1/batch-jobs/{id}``, and its
outputs are downloaded to a local OUTPUT at the end. Ctrl-C detaches: the job
keeps running on the server and ``freight batch status ID --follow`` comes back
to it.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

import typer
from annotated_types import Ge, Le
from rich import box
from rich.console import Group, RenderableType
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from freight.batch.options import Options
from freight.batch.spec import DEFAULT_PRIORITY
from freight.cli import _render
from freight.cli._base import UrlOption, err, out
from freight.cli._base import command_client as _client
from freight.client import BatchJob, BatchOutput, Client
from freight.client._flows import is_uri, local_inputs

#: seconds between two status requests while a job is followed
POLL_S = 0.5
RUN = "run"


class BatchGroup(TyperGroup):
    """``freight batch``: its commands by name, and anything else (a target name, or an
    option) the arguments of the hidden ``run`` command. A target that is named like
    a command is reached with ``freight batch run NAME ...``."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # typer's own click.Context
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [RUN, *args]
        return super().parse_args(ctx, args)


batch_app = typer.Typer(
    name="batch",
    cls=BatchGroup,
    help="Run a model or pipeline over whole files (batch jobs), and follow, list or cancel them.",
    epilog="freight batch TARGET INPUT [-o OUTPUT] [OPTIONS]: start a job, follow it, "
    "download its outputs (every option: freight batch run --help).",
    no_args_is_help=True,
    subcommand_metavar="TARGET INPUT [-o OUTPUT] | COMMAND [ARGS]...",
)


def _bounds(name: str) -> dict[str, int]:
    """An option's bounds as ``typer.Option`` takes them: those of the one definition,
    :class:`freight.batch.options.Options`."""
    bounds: dict[str, int] = {}
    for rule in Options.model_fields[name].metadata:
        if isinstance(rule, Ge):
            bounds["min"] = int(rule.ge)  # type: ignore[call-overload]
        elif isinstance(rule, Le):
            bounds["max"] = int(rule.le)  # type: ignore[call-overload]
    return bounds


# the choices of Options' literal fields (a test holds them together)
class Split(StrEnum):
    line = "line"
    none = "none"


class OnError(StrEnum):
    fail = "fail"
    continue_ = "continue"


class Join(StrEnum):
    none = "none"
    input = "input"


IdArgument = Annotated[str, typer.Argument(metavar="ID", help="Batch job id.")]


# -- where outputs go -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Destination:
    """A local OUTPUT: one file (the job has one input file) or a directory that gets
    each output under its input's name (``.gz`` dropped: outputs are not compressed;
    see :func:`local_name`), failed records beside it as ``<file>.errors``."""

    path: Path
    directory: bool

    def place(self, name: str, count: int) -> Path:
        if not self.directory:
            if count != 1:
                raise _DownloadError(
                    f"the job has {count} output files: give a directory as -o OUTPUT"
                )
            return self.path
        parts = PurePosixPath(name).parts
        if not parts or name.startswith("/") or ".." in parts:
            raise _DownloadError(f"refusing to write an output named {name!r}")
        return self.path.joinpath(*parts)


class _DownloadError(Exception):
    """An output that cannot be saved where asked: exit 1 with the message."""


def _run_destination(output: str | None, input: str, local: Path | None) -> Destination | None:
    """OUTPUT of ``freight batch``: None for none or a URI; a file when INPUT is one
    file (or one object), a directory when it is a directory or a URI prefix."""
    if output is None or is_uri(output):
        return None
    path = Path(output)
    one_file = local.is_file() if local is not None else not input.endswith("/")
    directory = path.is_dir() or output.endswith(("/", "\\")) or not one_file
    if local is not None and path.resolve() == local.resolve():
        raise typer.BadParameter("OUTPUT would overwrite INPUT", param_hint="-o/--output")
    return _checked(Destination(path, directory))


def _checked(dest: Destination) -> Destination:
    if dest.directory and dest.path.exists() and not dest.path.is_dir():
        raise typer.BadParameter(
            f"{dest.path} is a file, and the job has many outputs: give a directory",
            param_hint="-o/--output",
        )
    return dest


def _job_destination(output: str | None, job: BatchJob) -> Destination | None:
    """-o of ``freight batch status``: a directory unless the job reads one file."""
    if output is None:
        return None
    if is_uri(output):
        raise typer.BadParameter(
            "a local path: the outputs are already in the store", param_hint="-o/--output"
        )
    path = Path(output)
    files = job.input.files
    one_file = files == 1 if files is not None else not (job.input.uri or "").endswith("/")
    directory = path.is_dir() or output.endswith(("/", "\\")) or not one_file
    return _checked(Destination(path, directory or len(job.outputs) > 1))


# -- the commands ---------------------------------------------------------------------------


SplitOption = Annotated[
    Split | None,
    typer.Option(
        "--split",
        help="line: a record per line (JSON Lines, CSV rows); none: each file is one input.",
    ),
]


@batch_app.command(RUN, hidden=True)
def run(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(metavar="TARGET", help="Model or pipeline name.")],
    input: Annotated[
        str,
        typer.Argument(
            metavar="INPUT",
            help="A local file or directory (uploaded), or an object URI "
            "(freight://..., a prefix ending in / for every file under it).",
        ),
    ],
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            help="A local file (one input file) or directory (downloaded at the end), or "
            "an object URI prefix the job writes to (nothing downloaded). Default: the "
            "outputs stay in the store under freight://batch/<id>/output/.",
        ),
    ] = None,
    split: SplitOption = None,
    records_per_call: Annotated[
        int | None,
        typer.Option(
            "--records-per-call", **_bounds("records_per_call"), help="Records per model call."
        ),
    ] = None,
    max_call_bytes: Annotated[
        int | None,
        typer.Option(
            "--max-call-bytes", **_bounds("max_call_bytes"), help="Bytes per model call, at most."
        ),
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option(
            "--concurrency", **_bounds("concurrency"), help="Chunks queued or running at once."
        ),
    ] = None,
    on_error: Annotated[
        OnError | None,
        typer.Option(
            "--on-error",
            help="fail: the first failed record fails the job; continue: failed records "
            "go to <file>.errors.",
        ),
    ] = None,
    join: Annotated[
        Join | None,
        typer.Option(
            "--join",
            help="input: each output record carries its input record.",
        ),
    ] = None,
    input_filter: Annotated[
        str | None, typer.Option("--input-filter", help="JMESPath applied to each record.")
    ] = None,
    output_filter: Annotated[
        str | None, typer.Option("--output-filter", help="JMESPath applied to each output.")
    ] = None,
    content_type: Annotated[
        str | None,
        typer.Option(
            "--content-type",
            help="Input format when file names do not tell it (text/csv, application/jsonl).",
        ),
    ] = None,
    priority: Annotated[
        int | None,
        typer.Option(
            "--priority",
            **_bounds("priority"),
            help=f"Queue priority of the chunks (default {DEFAULT_PRIORITY}).",
        ),
    ] = None,
    detach: Annotated[
        bool,
        typer.Option("--detach", help="Print the job id once it is created and uploaded; exit."),
    ] = False,
    url: UrlOption = None,
) -> None:
    """Run TARGET over every record of INPUT, with a live progress bar; download the
    outputs to a local OUTPUT at the end. Ctrl-C detaches (the job keeps running)."""
    local = None if is_uri(input) else Path(input)
    try:
        files = [] if local is None else local_inputs(local)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="INPUT") from None
    dest = _run_destination(output, input, local)
    options: dict[str, Any] = {
        "split": None if split is None else split.value,
        "records_per_call": records_per_call,
        "max_call_bytes": max_call_bytes,
        "concurrency": concurrency,
        "on_error": None if on_error is None else on_error.value,
        "join": None if join is None else join.value,
        "input_filter": input_filter,
        "output_filter": output_filter,
        "content_type": content_type,
        "priority": priority,
    }
    with _client(ctx, url) as client:
        job = client.create_batch_job(
            target,
            input if local is None else [name for name, _ in files],
            output=output if output is not None and is_uri(output) else None,
            **options,
        )
        try:
            if files:
                job = _upload(client, job, files, content_type)
        except KeyboardInterrupt:
            err.print(
                f"interrupted: batch job [bold]{escape(job.id)}[/] is waiting for its "
                f"input (cancel it: freight batch cancel {escape(job.id)})"
            )
            raise typer.Exit(130) from None
        if detach:
            typer.echo(job.id)  # alone on stdout, so it pipes
            err.print(f"follow it: {escape(_reattach(job.id, dest))}")
            return
        _follow_to_end(client, job, dest)


@batch_app.command("status")
def status(
    ctx: typer.Context,
    job_id: IdArgument,
    follow: Annotated[
        bool,
        typer.Option("--follow", "-f", help="Follow the job with a progress bar until it ends."),
    ] = False,
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            help="Download the outputs of a succeeded job to this file or directory.",
        ),
    ] = None,
    url: UrlOption = None,
) -> None:
    """Show a batch job: status, counts, rate, locations, options, finished files."""
    with _client(ctx, url) as client:
        job = client.batch_job(job_id)
        dest = _job_destination(output, job)
        if follow:
            _follow_to_end(client, job, dest)
            return
        out.print(job_panel(job))
        if dest is None:
            return
        if not job.succeeded:
            err.print(f"nothing downloaded: the job is {job.status} (--follow waits for it)")
            raise typer.Exit(1 if job.terminal else 0)
        _save_outputs(client, job, dest)


@batch_app.command("list")
def list_jobs(
    ctx: typer.Context,
    status: Annotated[
        str | None,
        typer.Option("--status", help="Only jobs in this status (running, succeeded, ...)."),
    ] = None,
    target: Annotated[
        str | None, typer.Option("--target", help="Only jobs of this target.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most N jobs.")] = 20,
    url: UrlOption = None,
) -> None:
    """List batch jobs, newest first."""
    with _client(ctx, url) as client:
        jobs = list(
            itertools.islice(client.batch_jobs(status=status, target=target, limit=limit), limit)
        )
    if not jobs:
        out.print("no batch jobs")
        return
    out.print(jobs_table(jobs))


@batch_app.command("cancel")
def cancel(ctx: typer.Context, job_id: IdArgument, url: UrlOption = None) -> None:
    """Cancel a batch job; the records done so far stay in its outputs."""
    with _client(ctx, url) as client:
        out.print(summary(client.cancel_batch_job(job_id)))


# -- uploading, following, downloading ------------------------------------------------------


def _quiet() -> bool:
    """No live bars where stderr is no terminal (a log file, CI): they would only
    leave blank lines there."""
    return not err.is_terminal


def _transfer_columns() -> tuple[Any, ...]:
    return (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )


def _upload(
    client: Client, job: BatchJob, files: Sequence[tuple[str, Path]], content_type: str | None
) -> BatchJob:
    """Upload each file with its own bar (under one for them all); the last one queues
    the job."""
    sizes = [path.stat().st_size for _, path in files]
    signed = job  # its upload_urls sign every name
    with Progress(*_transfer_columns(), console=err, transient=True, disable=_quiet()) as bar:
        overall = bar.add_task(f"upload {len(files)} file(s)", total=sum(sizes) or None)
        before = 0
        for (name, path), size in zip(files, sizes, strict=True):
            if job.status != "awaiting_input":
                break
            task = bar.add_task(escape(name), total=size or None)

            def update(sent: int, total: int, task: TaskID = task, before: int = before) -> None:
                bar.update(task, completed=sent)
                bar.update(overall, completed=before + sent)

            job = client.upload_batch_input(signed, name, path, update, content_type=content_type)
            bar.remove_task(task)
            before += size
    err.print(f"uploaded {len(files)} file(s), {sum(sizes):,} bytes: batch job {escape(job.id)}")
    return job


def _follow_to_end(client: Client, job: BatchJob, dest: Destination | None) -> None:
    """Follow the job to its end, then download and summarise it; exit 1 unless it
    succeeded, 130 (detached, the job untouched) on Ctrl-C."""
    try:
        job = watch(client, job)
        if not job.succeeded:
            err.print(Text.assemble(("batch job ", ""), summary(job)))
            if job.error is not None:
                err.print(
                    f"[bold red]error[/] [red]{escape(job.error.code)}[/]: "
                    f"{escape(job.error.message)}"
                )
            raise typer.Exit(1)
        saved = _save_outputs(client, job, dest) if dest is not None else []
    except KeyboardInterrupt:
        state = "its outputs are kept" if job.terminal else "it keeps running"
        err.print(f"detached from batch job [bold]{escape(job.id)}[/] ({state})")
        err.print(f"re-attach: {escape(_reattach(job.id, dest))}")
        raise typer.Exit(130) from None
    where = str(dest.path) if dest is not None else job.output.uri or "the store"
    counts = job.counts
    total = counts.total if counts.total is not None else counts.done + counts.failed
    line = Text(f"batch job {job.id} succeeded: {total:,} records, {counts.failed:,} failed -> ")
    line.append(where, style="bold")
    if saved:
        line.append(f" ({len(saved)} file(s) saved)")
    out.print(line, soft_wrap=True)


def _reattach(job_id: str, dest: Destination | None) -> str:
    where = "" if dest is None else f" -o {dest.path}{'/' if dest.directory else ''}"
    return f"freight batch status {job_id} --follow{where}"


def watch(client: Client, job: BatchJob) -> BatchJob:
    """A live bar (records done/total, records/s, ETA) until the job is terminal,
    polling its status every :data:`POLL_S` seconds."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(bar_width=20),
        TextColumn("{task.fields[records]}"),
        TextColumn("{task.fields[rate]}"),
        TextColumn("{task.fields[eta]}"),
    )
    err.print(f"following batch job {escape(job.id)} (Ctrl-C detaches, the job keeps running)")
    with Progress(*columns, console=err, transient=True, disable=_quiet()) as bar:
        task = bar.add_task("", total=None, records="", rate="", eta="")
        while True:
            _show(bar, task, job)
            if job.terminal:
                return job
            time.sleep(POLL_S)
            job = client.batch_job(job.id)


def _show(bar: Progress, task: TaskID, job: BatchJob) -> None:
    failed = job.counts.failed
    records = f"{_records(job).removesuffix('/?')} records"
    records += f", [red]{failed:,} failed[/]" if failed else ""
    rate = job.records_per_s
    style = _render.STATUS_STYLES.get(job.status, "default")
    bar.update(
        task,
        description=f"[{style}]{escape(job.status)}[/]",
        total=1.0 if job.status == "running" or job.terminal else None,
        completed=job.progress,
        records=records,
        rate="" if rate is None else f"{rate:,.0f} rec/s" if rate >= 100 else f"{rate:.1f} rec/s",
        eta="" if job.eta_s is None else f"ETA {_duration(job.eta_s)}",
        refresh=True,  # each answer drawn at once, not at the next tick
    )


def local_name(job: BatchJob, entry: BatchOutput) -> str:
    """An output's name in a local directory: its name under the job's output prefix
    without ``.out`` (``rows.csv.gz`` in: ``rows.csv``, uncompressed), kept whole when
    that would still end in ``.gz``; the input's name when the URIs do not tell."""
    prefix, uri = job.output.uri or "", entry.output_uri or ""
    if not prefix or not uri.startswith(prefix):
        return entry.name
    name = uri[len(prefix) :]
    plain = name.removesuffix(".out")
    return name if not plain or plain.lower().endswith(".gz") else plain


def _save_outputs(client: Client, job: BatchJob, dest: Destination) -> list[Path]:
    """Download every output (and errors file) of a succeeded job to ``dest``."""
    saved: list[Path] = []
    missing: list[str] = []
    count = len(job.outputs)
    try:
        with Progress(*_transfer_columns(), console=err, transient=True, disable=_quiet()) as bar:
            for entry in job.outputs:
                path = dest.place(local_name(job, entry), count)
                pairs = [(entry.output_url, entry.output_uri, path)]
                if entry.errors_uri or entry.errors_url:
                    errors = path.with_name(path.name + ".errors")
                    pairs.append((entry.errors_url, entry.errors_uri, errors))
                for link, uri, where in pairs:
                    if not link:
                        missing.append(uri or entry.name)
                        continue
                    where.parent.mkdir(parents=True, exist_ok=True)
                    saved.append(_download(client, bar, link, where))
    except _DownloadError as exc:
        err.print(f"[bold red]error[/]: {escape(str(exc))}")
        raise typer.Exit(1) from None
    if missing:
        for uri in missing:
            err.print(f"[bold red]not downloaded[/] (no download URL): {escape(uri)}")
        raise typer.Exit(1)
    return saved


def _download(client: Client, bar: Progress, link: str, path: Path) -> Path:
    task = bar.add_task(f"download {escape(path.name)}", total=None)

    def update(received: int, total: int) -> None:
        bar.update(task, completed=received, total=total or None)

    try:
        return client.download(link, path, update)
    finally:
        bar.remove_task(task)


# -- rendering ------------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _time(value: datetime | None) -> str:
    """UTC, to the second: ``2025-01-01 00:00:00Z``."""
    if value is None:
        return "-"
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(sep=" ", timespec="seconds") + "Z"


def _records(job: BatchJob) -> str:
    """Records processed (succeeded or failed) of the total (``?`` until it is known;
    left out once they are all done)."""
    counts = job.counts
    processed = counts.done + counts.failed
    if counts.total is not None and processed == counts.total:
        return f"{processed:,}"
    total = "?" if counts.total is None else f"{counts.total:,}"
    return f"{processed:,}/{total}"


def summary(job: BatchJob) -> Text:
    """``<id> <status>: <done>/<total> records, <failed> failed``."""
    text = Text(f"{job.id} ")
    text.append_text(_render.status_text(job.status))
    text.append(f": {_records(job)} records, {job.counts.failed:,} failed")
    return text


def _options(job: BatchJob) -> str:
    o = job.options
    fields: list[tuple[str, Any]] = [
        ("split", o.split),
        ("records_per_call", o.records_per_call),
        ("max_call_bytes", o.max_call_bytes),
        ("concurrency", o.concurrency),
        ("on_error", o.on_error),
        ("join", o.join),
        ("input_filter", o.input_filter),
        ("output_filter", o.output_filter),
        ("content_type", o.content_type),
        ("priority", o.priority),
    ]
    return "  ".join(f"{k}={v}" for k, v in fields if v is not None)


def job_panel(job: BatchJob) -> RenderableType:
    """One batch job: state, counts, rate, locations, options, error; its finished
    files below."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("id", Text(job.id))
    table.add_row("target", Text(f"{job.target} ({job.target_kind})"))
    table.add_row("status", _render.status_text(job.status))
    failed = f", {job.counts.failed:,} failed" if job.counts.failed else ""
    table.add_row("records", Text(f"{_records(job)}{failed}"))
    rate = "" if job.records_per_s is None else f", {job.records_per_s:,.1f} records/s"
    eta = "" if job.eta_s is None else f", ETA {_duration(job.eta_s)}"
    table.add_row("progress", Text(f"{job.progress:.0%}{rate}{eta}"))
    for label, value in (
        ("created", job.created_at),
        ("started", job.started_at),
        ("finished", job.finished_at),
    ):
        table.add_row(label, _time(value))
    files = "" if job.input.files is None else f" ({job.input.files} file(s))"
    table.add_row("input", Text(f"{job.input.uri or '-'}{files}"))
    table.add_row("output", Text(job.output.uri or "-"))
    if job.output.manifest_uri:
        table.add_row("manifest", Text(job.output.manifest_uri))
    table.add_row("options", Text(_options(job)))
    if job.error is not None:
        table.add_row(
            "error", Text.assemble((job.error.code, "bold red"), f": {job.error.message}")
        )
    if job.metadata:
        table.add_row("metadata", Text(str(job.metadata)))
    if not job.outputs:
        return table
    files_table = Table(title="finished files", title_justify="left")
    for column in ("name", "records", "failed", "output", "errors"):
        files_table.add_column(
            column, justify="right" if column in ("records", "failed") else "left"
        )
    for entry in job.outputs:
        files_table.add_row(
            Text(entry.name),
            f"{entry.records:,}",
            Text(f"{entry.failed:,}", style="red" if entry.failed else ""),
            Text(entry.output_uri or "-"),
            Text(entry.errors_uri or "-"),
        )
    return Group(table, files_table)


def jobs_table(jobs: Sequence[BatchJob]) -> Table:
    """One row per job. Ids are copied from here: never cut, the rest wraps."""
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("id", no_wrap=True, min_width=max(len(job.id) for job in jobs))
    table.add_column("target")
    table.add_column("status")
    table.add_column("records", justify="right")
    table.add_column("failed", justify="right")
    table.add_column("created")
    for job in jobs:
        records = _records(job)
        if job.counts.total is None and job.status == "running":
            records += f" ({job.progress:.0%})"
        table.add_row(
            Text(job.id),
            Text(job.target),
            _render.status_text(job.status),
            records,
            f"{job.counts.failed:,}",
            _time(job.created_at),
        )
    return table
