"""How every freight process logs: text or JSON lines, with the ids of what it handles.

``log_format: json`` (``FREIGHT_LOG_FORMAT=json``) makes each line one JSON object
(python-json-logger): ``time``, ``level``, ``logger``, ``message``, and, when known,
``prediction_id``, ``run_id``, ``tenant``, ``trace_id``, ``span_id``. Text lines
carry the same ids after the message. uvicorn's own loggers go through the same
handler (the server passes it no configuration of its own).

The ids come from context variables: a route sets the tenant (once the caller is
authenticated) and the prediction it creates, a worker the prediction it runs
(:func:`bind`); the trace ids from the current span when tracing is on. A record
that already carries an id (``extra=``) keeps its own.

Nothing secret is added: ids only, never keys, webhook secrets or URLs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Final, Literal

from freight import tracing

LogFormat = Literal["text", "json"]
#: the ids a line may carry, in the order text lines show them
IDS: Final = ("prediction_id", "run_id", "tenant", "trace_id", "span_id")
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s %(message)s"
_HANDLER: Final = "freight"

_prediction: ContextVar[str | None] = ContextVar("freight_log_prediction", default=None)
_run: ContextVar[str | None] = ContextVar("freight_log_run", default=None)
_tenant: ContextVar[str | None] = ContextVar("freight_log_tenant", default=None)


def bind(
    *, prediction_id: str | None = None, run_id: str | None = None, tenant: str | None = None
) -> None:
    """Name what this task handles from now on (until it ends: each request and each
    of the agent's tasks has its own context). None leaves a name as it was."""
    if prediction_id is not None:
        _prediction.set(prediction_id)
    if run_id is not None:
        _run.set(run_id)
    if tenant is not None:
        _tenant.set(tenant)


@contextmanager
def bound(
    *, prediction_id: str | None = None, run_id: str | None = None, tenant: str | None = None
) -> Iterator[None]:
    """:func:`bind` for the block only."""
    tokens = [
        (var, var.set(value))
        for var, value in ((_prediction, prediction_id), (_run, run_id), (_tenant, tenant))
        if value is not None
    ]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class IdsFilter(logging.Filter):
    """Puts the known ids on each record (as attributes; absent when unknown)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in (("prediction_id", _prediction), ("run_id", _run), ("tenant", _tenant)):
            value = var.get()
            if value is not None and not hasattr(record, name):
                setattr(record, name, value)
        if tracing.ENABLED and not hasattr(record, "trace_id"):
            found = tracing.ids()
            if found is not None:
                record.trace_id, record.span_id = found
        return True


class TextFormatter(logging.Formatter):
    """The plain line, then ``name=value`` for each known id."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        known = [f"{n}={getattr(record, n)}" for n in IDS if getattr(record, n, None) is not None]
        return f"{line} {' '.join(known)}" if known else line


def formatter(fmt: LogFormat) -> logging.Formatter:
    """The formatter of ``fmt``."""
    if fmt == "text":
        return TextFormatter(TEXT_FORMAT)
    from pythonjsonlogger.json import JsonFormatter

    return JsonFormatter(
        "{levelname}{name}{message}",
        style="{",
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp="time",  # ISO 8601, UTC, from the record's own time
    )


def configure(level: str, fmt: LogFormat = "text") -> None:
    """This process's logging: one stderr handler on the root logger, formatted as
    ``fmt``, every record given its ids; uvicorn's loggers sent to it."""
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(fmt))
    handler.addFilter(IdsFilter())
    handler.set_name(_HANDLER)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER]:
        root.removeHandler(old)  # configured again (tests start servers in-process)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn = logging.getLogger(name)
        uvicorn.handlers.clear()
        uvicorn.propagate = True


__all__ = ["IDS", "IdsFilter", "LogFormat", "TextFormatter", "bind", "bound", "configure"]
