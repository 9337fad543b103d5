"""A scripted HTTP server for client and CLI unit tests, through httpx.MockTransport.

Answers are queued per (method, path) and the last one repeats; every request is
recorded, so a test can assert exactly what the client sent and in what order.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx

Handler = Callable[[httpx.Request], httpx.Response]


def error(status: int, code: str, headers: dict[str, str] | None = None) -> httpx.Response:
    """A freight error body with ``code``."""
    body = {"error": {"code": code, "message": f"{code} happened", "detail": {"k": 1}}}
    return httpx.Response(status, json=body, headers=headers)


class Api:
    """A scripted server: answers queued per (method, path), records every request."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], list[Handler | httpx.Response]] = {}
        self.requests: list[httpx.Request] = []

    def on(self, method: str, path: str, *answers: Handler | httpx.Response) -> None:
        self.routes.setdefault((method, path), []).extend(answers)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answers = self.routes.get((request.method, request.url.path))
        if not answers:
            return error(404, "not_found")
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        return answer(request) if callable(answer) else answer

    def paths(self) -> list[str]:
        return [r.url.path for r in self.requests]
