"""Traces: OpenTelemetry, configured by the standard ``OTEL_*`` variables, off by default.

On only when the environment asks for it (:func:`wanted`): ``OTEL_TRACES_EXPORTER``
names an exporter (``otlp``, ``console``), or an OTLP endpoint is set
(``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``); never
with ``OTEL_SDK_DISABLED=true``. Spans leave through a batch processor (its
``OTEL_BSP_*`` variables) to OTLP over HTTP/protobuf; the service name is
``OTEL_SERVICE_NAME`` or the process's own (``freight-serve``, ``freight-api``,
``freight-worker``).

Off, nothing of OpenTelemetry is imported and every hot path asks one module-level
flag, :data:`ENABLED`, before building anything: callers write
``if tracing.ENABLED:`` around their spans.

A prediction's trace crosses processes through its row: the API stores the W3C
``traceparent`` of the request's span in ``predictions.trace_context``
(:func:`traceparent`), and whoever works on the row later -- a worker, the
deliverer, perhaps on another machine -- parents its spans on it
(:func:`context_of`). Spans of work done elsewhere (the queue wait, a runner's
phases) are recorded afterwards with explicit times (:func:`record`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, SpanKind, Tracer

log = logging.getLogger("freight.tracing")

#: whether this process traces: the one check of every hot path
ENABLED: bool = False
#: span kinds by name (the module imports no OpenTelemetry while off)
SERVER: Final = "server"
CLIENT: Final = "client"
PRODUCER: Final = "producer"
CONSUMER: Final = "consumer"
INTERNAL: Final = "internal"

_EXPORTERS: Final = frozenset({"otlp", "console"})
_tracer: Tracer | None = None
_provider: TracerProvider | None = None


def wanted(environ: Mapping[str, str]) -> list[str]:
    """The exporters the standard variables ask for (empty: tracing off). Unknown
    names are skipped (and said so at :func:`configure`)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    named = [n.strip().lower() for n in environ.get("OTEL_TRACES_EXPORTER", "").split(",")]
    named = [n for n in named if n]
    if named:
        return [] if "none" in named else named
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    return ["otlp"] if endpoint else []


def service_name(environ: Mapping[str, str], default: str) -> str:
    """``OTEL_SERVICE_NAME``, else the process's own name."""
    return environ.get("OTEL_SERVICE_NAME", "").strip() or default


def configure(
    default_service: str,
    environ: Mapping[str, str] | None = None,
    *,
    exporter: SpanExporter | None = None,
) -> bool:
    """Turn tracing on when the environment asks for it (or ``exporter`` is given:
    tests' in-memory exporter, spans exported one by one); True when on."""
    global ENABLED, _tracer, _provider
    environ = os.environ if environ is None else environ
    names = wanted(environ) if exporter is None else ["given"]
    if not names:
        return False
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    resource = Resource.create({SERVICE_NAME: service_name(environ, default_service)})
    provider = TracerProvider(resource=resource)
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    for name in names if exporter is None else []:
        made = _exporter(name, environ)
        if made is not None:
            provider.add_span_processor(BatchSpanProcessor(made))
    # freight's own provider, not the global one: recent FastAPI traces requests on
    # its own once a global provider is set, which would double the request's span
    _provider, _tracer = provider, provider.get_tracer("freight")
    ENABLED = True
    return True


def _exporter(name: str, environ: Mapping[str, str]) -> SpanExporter | None:
    if name not in _EXPORTERS:
        log.warning("OTEL_TRACES_EXPORTER=%s: freight exports otlp or console only", name)
        return None
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    if protocol != "http/protobuf":
        log.warning("OTEL_EXPORTER_OTLP_PROTOCOL=%s: freight exports http/protobuf", protocol)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()  # its endpoint, headers, timeout: the OTEL_EXPORTER_OTLP_* ones


def shutdown() -> None:
    """Export what is buffered and stop (the end of a process); tracing is off after."""
    global ENABLED, _tracer, _provider
    provider, _provider, _tracer, ENABLED = _provider, None, None, False
    if provider is not None:
        provider.shutdown()


def tracer() -> Tracer:
    """The process's tracer (only while :data:`ENABLED`)."""
    assert _tracer is not None, "tracing is off"
    return _tracer


def _kind(name: str) -> SpanKind:
    from opentelemetry.trace import SpanKind

    return SpanKind[name.upper()]


def context_of(traceparent: str | None) -> Context | None:
    """The context a stored or received ``traceparent`` names (None: none, or not a
    valid one: the span then starts a trace of its own)."""
    if not traceparent:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    context = TraceContextTextMapPropagator().extract({"traceparent": traceparent})
    from opentelemetry.trace import get_current_span

    return context if get_current_span(context).get_span_context().is_valid else None


def traceparent(span: Span | None = None) -> str | None:
    """The W3C ``traceparent`` of ``span`` (default: the current one); None when there
    is none or tracing is off."""
    if not ENABLED:
        return None
    from opentelemetry.trace import get_current_span

    context = (span or get_current_span()).get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def ids() -> tuple[str, str] | None:
    """The current span's trace and span ids, as hex (for log lines); None without one."""
    if not ENABLED:
        return None
    from opentelemetry.trace import get_current_span

    context = get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def ns(epoch_s: float) -> int:
    """Epoch seconds as OpenTelemetry's nanoseconds."""
    return int(epoch_s * 1e9)


def start(
    name: str,
    parent: Context | Span | None = None,
    *,
    kind: str = INTERNAL,
    at: float | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> Span:
    """A started span (ended by the caller), a child of ``parent`` (a context or a
    span; None: a new trace), started at ``at`` (epoch seconds) or now."""
    from opentelemetry.trace import Span, set_span_in_context

    context = set_span_in_context(parent) if isinstance(parent, Span) else parent
    return tracer().start_span(
        name,
        context=context,
        kind=_kind(kind),
        attributes=attributes,
        start_time=ns(at) if at is not None else None,
    )


def record(
    name: str,
    parent: Context | Span | None,
    began: float,
    ended: float,
    *,
    kind: str = INTERNAL,
    attributes: Mapping[str, Any] | None = None,
) -> Span:
    """A span of work already done, from ``began`` to ``ended`` (epoch seconds)."""
    span = start(name, parent, kind=kind, at=began, attributes=attributes)
    span.end(end_time=ns(max(began, ended)))
    return span


@contextmanager
def current(span: Span) -> Iterator[Span]:
    """``span`` as the current one inside the block (log lines carry its ids)."""
    from opentelemetry.trace import use_span

    with use_span(span, end_on_exit=False):
        yield span


def failed(span: Span, message: str) -> None:
    """Mark ``span`` as failed with ``message`` (no secrets: an error code and text)."""
    from opentelemetry.trace import Status, StatusCode

    span.set_status(Status(StatusCode.ERROR, message))


__all__ = [
    "CLIENT",
    "CONSUMER",
    "ENABLED",
    "INTERNAL",
    "PRODUCER",
    "SERVER",
    "configure",
    "context_of",
    "current",
    "failed",
    "ids",
    "ns",
    "record",
    "service_name",
    "shutdown",
    "start",
    "traceparent",
    "tracer",
    "wanted",
]
