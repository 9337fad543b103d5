"""The ``freight`` commands: run the server, and drive it through the Python client.

Server commands import ``freight.server`` only when run, so client-side
commands start fast and work where the server's dependencies are absent.
Client commands build their client through :func:`_base.command_client` (the
seam tests swap is ``_base.client_factory``).
"""

from __future__ import annotations

import importlib
import json
import mimetypes
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from freight.cli import _render
from freight.cli._base import (
    DirArgument,
    HostOption,
    PortOption,
    UrlOption,
    app,
    err,
    out,
)
from freight.cli._base import command_client as _client
from freight.cli._batch import batch_app
from freight.cli._follow import follow
from freight.client import Client, Prediction, PredictionHandle
from freight.errors import FreightError

# -- server ----------------------------------------------------------------------------------


def _serve(entry: str, project_dir: Path, host: str | None, port: int | None) -> None:
    server: Any = importlib.import_module("freight.server")
    code = getattr(server, entry)(project_dir=project_dir, host=host, port=port)
    raise typer.Exit(int(code or 0))


@app.command()
def serve(
    project_dir: DirArgument = Path("."), host: HostOption = None, port: PortOption = None
) -> None:
    """Serve a project on this machine: API, queue, and model runners in one command."""
    _serve("serve", project_dir, host, port)


@app.command()
def api(
    project_dir: DirArgument = Path("."), host: HostOption = None, port: PortOption = None
) -> None:
    """Run only the HTTP API (cluster shape: state in PostgreSQL, payloads in S3)."""
    _serve("serve_api", project_dir, host, port)


@app.command()
def worker(
    project_dir: DirArgument = Path("."),
    host: HostOption = None,
    port: Annotated[
        int | None,
        typer.Option(
            "--port",
            help="Serve /healthz, /readyz and /metrics on this port (Kubernetes probes, "
            "Prometheus); without it the worker opens no port.",
        ),
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            help="Serve only this model (repeat for several); default: every model of the "
            "project. Kubernetes: one worker Deployment per model.",
        ),
    ] = None,
) -> None:
    """Run only a worker node: the agent and its model runners (cluster shape)."""
    server: Any = importlib.import_module("freight.server")
    code = server.serve_worker(project_dir=project_dir, host=host, port=port, models=model)
    raise typer.Exit(int(code or 0))


@app.command()
def migrate(project_dir: DirArgument = Path(".")) -> None:
    """Bring the database schema to this version of freight, then exit (servers also
    migrate at start-up; run this first when several start at once)."""
    server: Any = importlib.import_module("freight.server")
    raise typer.Exit(int(server.migrate_only(project_dir=project_dir)))


# -- predictions ----------------------------------------------------------------------------


def parse_input(value: str) -> tuple[Any, Path | None]:
    """``--input``: inline JSON if it parses, else a file (JSON files are read as JSON).

    Returns ``(json_value, None)`` or ``(None, path_to_upload)``.
    """
    try:
        return json.loads(value), None
    except ValueError:
        pass
    path = Path(value)
    if not path.is_file():
        raise typer.BadParameter(f"{value!r} is neither valid JSON nor an existing file")
    if mimetypes.guess_type(path.name)[0] == "application/json":
        try:
            return json.loads(path.read_text()), None
        except ValueError as exc:
            raise typer.BadParameter(f"{path} is not valid JSON: {exc}") from exc
    return None, path


@contextmanager
def _transfer_bar(client: Client, what: str, size: int | None) -> Iterator[None]:
    """A Rich progress bar on stderr while a file uploads or downloads (1 MiB and more)."""
    if size is not None and size < 1 << 20:
        yield
        return
    columns = (
        TextColumn(what),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task(what, total=size)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total or None)

        setattr(client, f"{what}_progress", update)
        try:
            yield
        finally:
            setattr(client, f"{what}_progress", None)


@app.command()
def predict(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="Model or pipeline name.")],
    input: Annotated[
        str, typer.Option("--input", "-i", help="Inline JSON, or a file (sent as bytes).")
    ],
    content_type: Annotated[
        str | None, typer.Option("--content-type", help="Content type of an input file.")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for the output.")] = True,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Give up waiting after S seconds.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Save the output to this file.")
    ] = None,
    webhook: Annotated[
        str | None,
        typer.Option("--webhook", help="POST the prediction's events to this http(s) URL."),
    ] = None,
    webhook_event: Annotated[
        list[str] | None,
        typer.Option(
            "--webhook-event",
            help="An event to send to --webhook: started, completed, waiting (a run's "
            "callback step waits) (repeatable; default completed).",
        ),
    ] = None,
    stream: Annotated[
        bool,
        typer.Option(
            "--stream",
            help="A streaming model (predict a generator): print each chunk as it comes "
            "(text as it is, JSON one per line, bytes as they are: use --output FILE).",
        ),
    ] = False,
    url: UrlOption = None,
) -> None:
    """Submit a prediction; with --wait, follow it and print its output."""
    value, path = parse_input(input)
    if path is None and value is None:
        raise typer.BadParameter("a null input cannot be sent; give a JSON value or a file")
    if webhook_event and webhook is None:
        raise typer.BadParameter("--webhook-event needs --webhook")
    if stream and (webhook is not None or not wait):
        raise typer.BadParameter("--stream waits for its chunks: no --webhook, no --no-wait")
    events = webhook_event or None
    if stream:
        with _client(ctx, url) as client:
            if path is None:
                chunks = client.stream(target, value, timeout=timeout)
            else:
                kind = content_type or mimetypes.guess_type(path.name)[0]
                chunks = client.stream(
                    target, data=path.read_bytes(), content_type=kind, timeout=timeout
                )
            _print_chunks(chunks, output)
        return
    with _client(ctx, url) as client:
        if path is None:
            handle = client.predict(target, value, webhook=webhook, webhook_events=events)
        else:
            with _transfer_bar(client, "upload", path.stat().st_size):
                handle = client.predict(
                    target,
                    file=path,
                    content_type=content_type,
                    webhook=webhook,
                    webhook_events=events,
                )
        if not wait:
            out.print(_render.summary(handle.prediction))
            return
        prediction = follow(client, handle, timeout, err)
        err.print(_render.summary(prediction))
        if prediction.steps and not prediction.succeeded:  # which step failed, then why
            err.print(_render.steps_table(prediction.steps))
        _show_output(client, handle, prediction, output)
        if prediction.steps and prediction.succeeded:
            err.print(_render.steps_table(prediction.steps))


@app.command()
def submit(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="Model or pipeline name.")],
    inputs: Annotated[
        Path, typer.Argument(help="JSON Lines: one input per line ('-': standard input).")
    ],
    key_prefix: Annotated[
        str | None,
        typer.Option(
            "--key-prefix",
            help="Give line N the idempotency key PREFIX-N: submitting the file again "
            "creates nothing twice.",
        ),
    ] = None,
    priority: Annotated[int | None, typer.Option("--priority", help="Of every one.")] = None,
    url: UrlOption = None,
) -> None:
    """Queue one prediction per line of a JSON Lines file, 1,000 per request; print
    each line's prediction id (or its error) as a JSON line; exit 1 if any failed."""
    text = sys.stdin.read() if str(inputs) == "-" else inputs.read_text()
    items: list[dict[str, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise typer.BadParameter(f"line {number} is not JSON: {exc}") from None
        item: dict[str, Any] = {"target": target, "input": value}
        if key_prefix is not None:
            item["idempotency_key"] = f"{key_prefix}-{number}"
        if priority is not None:
            item["priority"] = priority
        items.append(item)
    if not items:
        raise typer.BadParameter("no inputs: the file has no lines")
    with _client(ctx, url) as client:
        results = client.create_many(items)
    failed = 0
    for result in results:
        if result.error is None:
            typer.echo(json.dumps({"index": result.index, "id": result.id}))
        else:
            failed += 1
            error = {"code": result.error.code, "message": result.error.message}
            typer.echo(json.dumps({"index": result.index, "error": error}))
    err.print(f"{len(results) - failed:,} queued, {failed:,} refused")
    if failed:
        raise typer.Exit(1)


def _print_chunks(chunks: Iterator[Any], output: Path | None) -> None:
    """Each chunk as it comes, on stdout (or into ``output``): text as it is, bytes as
    they are, a JSON value on a line of its own; a failure raises after the chunks
    printed before it."""
    sink = output.open("wb") if output is not None else None
    std = typer.get_binary_stream("stdout")
    try:
        for chunk in chunks:
            if isinstance(chunk, str):
                data = chunk.encode()
            elif isinstance(chunk, bytes):
                if sink is None and std.isatty():
                    raise typer.BadParameter("the chunks are bytes: use --output FILE")
                data = chunk
            else:
                data = json.dumps(chunk).encode() + b"\n"
            (sink or std).write(data)
            (sink or std).flush()
    finally:
        if sink is not None:
            sink.close()
        elif std.isatty():  # the shell's prompt on a line of its own
            std.write(b"\n")
            std.flush()


def _show_output(
    client: Client, handle: PredictionHandle, prediction: Prediction, output: Path | None
) -> None:
    """Save the output to ``output``, or print it as JSON on stdout (alone there, so it
    pipes); a failed prediction raises its error here."""
    if output is not None:
        with _transfer_bar(client, "download", prediction.output_bytes):
            saved = handle.download(output)
        err.print(f"output saved to [bold]{saved}[/] ({saved.stat().st_size:,} bytes)")
        return
    result = handle.output()
    if isinstance(result, bytes):
        kind = prediction.output_content_type or "binary"
        err.print(f"output is {kind}, {len(result):,} bytes: use --output FILE to save it")
        return
    out.print_json(json.dumps(result))


@app.command()
def status(
    ctx: typer.Context,
    prediction_id: Annotated[str, typer.Argument(metavar="ID", help="Prediction id.")],
    url: UrlOption = None,
) -> None:
    """Show a prediction: status, timings, attempts, error; a pipeline run's steps."""
    with _client(ctx, url) as client:
        out.print(_render.prediction_panel(client.get(prediction_id)))


@app.command()
def cancel(
    ctx: typer.Context,
    prediction_id: Annotated[str, typer.Argument(metavar="ID", help="Prediction id.")],
    url: UrlOption = None,
) -> None:
    """Cancel a prediction that has not finished yet."""
    with _client(ctx, url) as client:
        out.print(_render.summary(client.cancel(prediction_id)))


@app.command()
def redrive(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(metavar="ID", help="Pipeline run id.")],
    url: UrlOption = None,
) -> None:
    """Restart a failed, timed-out or canceled pipeline run where it stopped: the steps
    that succeeded are kept, the others run again."""
    with _client(ctx, url) as client:
        run = client.redrive(run_id)
    out.print(_render.summary(run))
    err.print(f"redriven ({run.redrives} in all): follow it with [bold]freight status {run.id}[/]")


@app.command()
def logs(
    ctx: typer.Context,
    prediction_id: Annotated[str, typer.Argument(metavar="ID", help="Prediction id.")],
    follow_: Annotated[
        bool,
        typer.Option("--follow", "-f", help="Print lines as they come, until it ends."),
    ] = False,
    url: UrlOption = None,
) -> None:
    """Print what the model printed or logged while it handled a prediction."""
    with _client(ctx, url) as client:
        if follow_:
            for line in client.follow_logs(prediction_id):
                typer.echo(line.text)
            return
        after = 0
        while page := client.logs(prediction_id, after=after):
            for line in page:
                typer.echo(line.text)
            after = page[-1].seq


@app.command()
def models(
    ctx: typer.Context,
    name: Annotated[
        str | None,
        typer.Argument(help="One model: its replicas and its autoscaler's decisions."),
    ] = None,
    url: UrlOption = None,
) -> None:
    """List the served models with their batching, replicas and backlog."""
    with _client(ctx, url) as client:
        if name is None:
            out.print(_render.models_table(client.models()))
        else:
            out.print(_render.model_detail(client.model(name)))


# -- pipelines ----------------------------------------------------------------------------


@app.command()
def pipelines(
    ctx: typer.Context,
    name: Annotated[
        str | None, typer.Argument(help="A pipeline: show its steps (all pipelines if left out).")
    ] = None,
    graph: Annotated[
        bool, typer.Option("--graph", help="Print only the pipeline's DAG as Mermaid text.")
    ] = False,
    url: UrlOption = None,
) -> None:
    """List the pipelines, or show one's steps (needs, when, for_each, optional)."""
    if graph and name is None:
        raise typer.BadParameter("--graph needs a pipeline NAME")
    with _client(ctx, url) as client:
        if name is None:
            out.print(_render.pipelines_table(client.pipelines()))
            return
        info = client.pipeline(name)
    if graph:  # verbatim, no Rich markup or wrapping: it is piped into Markdown files
        typer.echo(info.graph, nl=False)
        return
    out.print(_render.pipeline_table(info))


@app.command()
def check(project_dir: DirArgument = Path(".")) -> None:
    """Validate a project without serving it: settings, models and pipelines, every
    fault at once; exit status 1 when there is any (for CI and pre-commit)."""
    server: Any = importlib.import_module("freight.server")
    try:
        faults = [str(fault) for fault in server.check(project_dir)]
        counts = None if faults else _counts(project_dir)
    except FreightError as exc:  # one the check could not turn into a fault message
        faults, counts = [exc.message], None
    for fault in faults:
        err.print(Text("fault: ", style="bold red") + Text(fault), soft_wrap=True)  # greppable
    if counts is None:
        err.print(f"[bold red]{_plural(len(faults), 'fault')}[/]")
        raise typer.Exit(1)
    models, pipelines = counts
    out.print(f"[green]ok[/]: {_plural(models, 'model')}, {_plural(pipelines, 'pipeline')}")


def _counts(project_dir: Path) -> tuple[int, int]:
    """How many models and pipelines a valid project serves. The check returns faults
    only; its imports are cached, so reading the project again costs little."""
    from freight.config import load_settings
    from freight.project import declared
    from freight.registry import discover

    models = discover(project_dir, load_settings(project_dir).models or None)
    return len(models), len(declared(project_dir))


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


# -- batch jobs: ``freight batch ...`` (its commands use the helpers of ``_base``) ---------

app.add_typer(batch_app, name="batch")
