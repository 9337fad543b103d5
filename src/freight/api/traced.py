"""The request's span: one SERVER span per HTTP request, continuing the caller's
``traceparent`` (W3C) or starting a trace, current while the route runs.

Installed only while tracing is on (:data:`freight.tracing.ENABLED`), as plain
ASGI (no per-request objects of Starlette's middleware). The span is named by the
route's template (``POST /v1/predictions``), never by the URL: a query string may
hold a signature.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from freight import tracing

_TRACEPARENT = b"traceparent"


class TraceMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not tracing.ENABLED:
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        header = next((v for k, v in scope["headers"] if k == _TRACEPARENT), None)
        parent = tracing.context_of(header.decode("latin-1") if header else None)
        span = tracing.start(
            method, parent, kind=tracing.SERVER, attributes={"http.request.method": method}
        )
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            with tracing.current(span):
                await self.app(scope, receive, sending)
        finally:
            path = getattr(scope.get("route"), "path", None)
            if path:
                span.update_name(f"{method} {path}")
                span.set_attribute("http.route", path)
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                tracing.failed(span, f"HTTP {status}")
            span.end()


__all__ = ["TraceMiddleware"]
