"""HTTP steps (``kind: http``): a pipeline step that calls an HTTP endpoint, like Step
Functions' HTTP task, holding no model replica.

Declared with ``method`` (default POST), ``url`` (a URL, or a reference rendered like
the input: ``$input.callback_url``, ``"$join('', ['https://api.example.com/items/',
input.id])"``), ``headers`` (each a literal string, or ``{env: NAME}`` /
``{env: NAME, prefix: "Bearer "}``: a secret read from the environment of the
worker that makes the call, never written anywhere), ``input`` (the JSON body; no
``input``: no body) and ``timeout_s`` (the whole call; default
:data:`DEFAULT_TIMEOUT_S`).

How it runs, and why so: the plan renders ``{"url": …, "body": …}`` as the step's
template (:func:`template_of`), so a URL's references are dependencies like an
input's. ``pipelines/runs.py`` splits the rendered value (:func:`request_fields`):
the body becomes the row's input (what ``GET`` shows), and the :class:`Request`
(method, rendered URL, headers *as declared*: env variable names, never their
values) the row's ``definition``. The row (kind ``http``, target ``:http``) is
queued, claimed with a lease and completed like a model's prediction, by the
executor that runs beside the deliverer (``agent/http_steps.py``); a dead executor's
row is requeued by the lease sweeps. The pure rules of a call are here: headers
resolved (:func:`resolve_headers`), an answer made an output or an error
(:func:`answer_of`), secrets struck out of whatever is kept (:func:`redact`).

Outcomes: a 2xx answer is the step's output — JSON parsed (a JSON content type),
text as a JSON string (``text/*``, or no content type and valid UTF-8), anything
else stored as an object (a reference, like a model's bytes), no body as null; any
other status fails the step ``http_error`` (the status and the first KB of the
answer in its detail; redirects are not followed); no answer within ``timeout_s``
fails it ``timeout``; a refused address (the webhook SSRF guard:
``notify/addresses.py``) ``url_refused``; a header's unset variable
``missing_secret``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson

from freight.media import base_type, is_json_value_type
from freight.prediction import ErrorCode

#: the keys only an http step takes
HTTP_KEYS = frozenset({"method", "url", "headers"})
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
DEFAULT_METHOD = "POST"
#: an http step's timeout_s when it gives none (the run's would be far too long)
DEFAULT_TIMEOUT_S = 30.0
#: the most bytes of a body sent, or of an answer read
MAX_BODY_BYTES = 32 * 1024 * 1024
#: how much of a failed answer the step's error keeps
ANSWER_KEPT = 1024
#: a secret shorter than this is not struck out of outputs (it would mangle them)
MIN_REDACTED = 4
REDACTED = "[redacted]"
#: headers the connection owns: never declared
RESERVED = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te",
     "trailer"}
)  # fmt: skip
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_ENV = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MAX_URL = 2048


@dataclass(frozen=True, slots=True)
class Header:
    """One declared header: a literal ``value``, or ``prefix`` + the variable ``env``."""

    name: str
    value: str | None = None
    env: str | None = None
    prefix: str = ""

    def declared(self) -> str | dict[str, str]:
        """As written in ``freight.yaml`` (an env header: its variable's name only)."""
        if self.env is None:
            return self.value or ""
        return {"env": self.env, "prefix": self.prefix} if self.prefix else {"env": self.env}

    def to_json(self) -> dict[str, str]:
        if self.env is None:
            return {"name": self.name, "value": self.value or ""}
        return {"name": self.name, "env": self.env, "prefix": self.prefix}


@dataclass(frozen=True, slots=True)
class HttpStep:
    """What a checked http step declares besides its body: its method, its URL (a URL or
    a reference, as declared) and its headers."""

    method: str = DEFAULT_METHOD
    url: str = ""
    headers: tuple[Header, ...] = ()


@dataclass(frozen=True, slots=True)
class Request:
    """The call an http step row makes, kept in its ``definition`` (no secret in it)."""

    method: str
    url: Any  # rendered: a string unless a reference gave something else
    headers: tuple[Header, ...] = ()

    def dumps(self) -> str:
        headers = [h.to_json() for h in self.headers]
        return orjson.dumps({"method": self.method, "url": self.url, "headers": headers}).decode()

    @classmethod
    def loads(cls, text: str) -> Request:
        raw = orjson.loads(text)
        headers = tuple(
            Header(h["name"], h.get("value"), h.get("env"), h.get("prefix", ""))
            for h in raw.get("headers", ())
        )
        return cls(raw.get("method", DEFAULT_METHOD), raw.get("url"), headers)


# -- declaring -------------------------------------------------------------------------


def _url_problem(url: Any) -> str | None:
    if not isinstance(url, str) or not url:
        return f"url must be a URL or a $reference, got {url!r}"
    if url.startswith("$") and not url.startswith("$$"):
        return None  # a reference: checked as a template
    text = url[1:] if url.startswith("$$") else url
    if len(text) > _MAX_URL:
        return f"url is {len(text)} characters long; at most {_MAX_URL} are taken"
    if any(ch.isspace() or ord(ch) < 0x20 for ch in text):
        return "url contains whitespace or control characters"
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return f"url {text!r} is not a valid URL"
    if parts.scheme.lower() not in ("http", "https"):
        return f"url must be http:// or https://, not {parts.scheme or '(no scheme)'!r}"
    if not parts.hostname:
        return "url has no host"
    return None


def _header_problems(headers: Any) -> list[str]:
    if not isinstance(headers, Mapping):
        return [f"headers must be a mapping of names to values, got {type(headers).__name__}"]
    faults: list[str] = []
    for name, value in headers.items():
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            faults.append(f"headers: {name!r} is not a valid header name")
            continue
        if name.lower() in RESERVED:
            faults.append(f"headers: {name} is set by the connection, not declared")
        if isinstance(value, str):
            if "\r" in value or "\n" in value:
                faults.append(f"headers: {name}: a value holds no line break")
            continue
        if not isinstance(value, Mapping):
            faults.append(
                f"headers: {name}: a value is a string or {{env: NAME, prefix: …}}, "
                f"got {type(value).__name__}"
            )
            continue
        unknown = sorted(str(k) for k in value if k not in ("env", "prefix"))
        if unknown:
            faults.append(f"headers: {name}: unknown key(s) {', '.join(unknown)} (env, prefix)")
        env = value.get("env")
        if not isinstance(env, str) or not _ENV.fullmatch(env):
            faults.append(f"headers: {name}: env must name an environment variable, got {env!r}")
        prefix = value.get("prefix", "")
        if not isinstance(prefix, str) or "\r" in prefix or "\n" in prefix:
            faults.append(f"headers: {name}: prefix must be a string without line breaks")
    return faults


def check_http(raw: Mapping[str, Any]) -> list[str]:
    """Every fault of a step's http keys, in words: on an http step, its ``url``,
    ``method`` and ``headers``; on any other step, their presence."""
    if raw.get("kind") != "http":
        return [
            f"{key} applies only to a kind: http step" for key in sorted(HTTP_KEYS) if key in raw
        ]
    faults: list[str] = []
    if "url" not in raw:
        faults.append("an http step needs url:")
    else:
        problem = _url_problem(raw["url"])
        if problem is not None:
            faults.append(problem)
    method = raw.get("method", DEFAULT_METHOD)
    if not isinstance(method, str) or method.upper() not in METHODS:
        faults.append(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if raw.get("headers") is not None:
        faults += _header_problems(raw["headers"])
    return faults


def parse_http(raw: Mapping[str, Any]) -> HttpStep | None:
    """An http step's method and headers (None for any other step); checked already."""
    if raw.get("kind") != "http":
        return None
    headers = []
    for name, value in (raw.get("headers") or {}).items():
        if isinstance(value, str):
            headers.append(Header(name, value=value))
        else:
            headers.append(Header(name, env=value["env"], prefix=value.get("prefix", "")))
    method = str(raw.get("method", DEFAULT_METHOD)).upper()
    return HttpStep(method, str(raw["url"]), tuple(headers))


def template_of(step: HttpStep, body: Any) -> dict[str, Any]:
    """What an http step's plan renders: its URL and its body, together."""
    return {"url": step.url, "body": body}


def request_fields(step: HttpStep, value: Any) -> tuple[str, Any]:
    """The rendered ``{"url", "body"}`` of an http step as ``(definition, body)``."""
    rendered = value if isinstance(value, Mapping) else {}
    request = Request(step.method, rendered.get("url"), step.headers)
    return request.dumps(), rendered.get("body")


# -- calling -----------------------------------------------------------------------------


class StepFailure(Exception):
    """An http step's call failed: its code, a message, and what its detail keeps."""

    def __init__(self, code: str, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail = detail


def url_text(request: Request) -> str:
    """The request's URL, or ``input_error`` when its reference gave no string."""
    if not isinstance(request.url, str) or not request.url:
        raise StepFailure(
            ErrorCode.INPUT_ERROR,
            f"the url rendered to {orjson.dumps(request.url).decode()[:200]}, not a URL",
        )
    return request.url


def resolve_headers(
    headers: tuple[Header, ...], environ: Mapping[str, str]
) -> tuple[dict[str, str], list[str]]:
    """The headers to send, and the secrets among their values (to strike out of what
    is kept). ``missing_secret`` naming the variable when one is not set here."""
    out: dict[str, str] = {}
    secrets: list[str] = []
    for header in headers:
        if header.env is None:
            out[header.name] = header.value or ""
            continue
        secret = environ.get(header.env)
        if secret is None:
            raise StepFailure(
                ErrorCode.MISSING_SECRET,
                f"header {header.name}: the environment variable {header.env} is not set "
                "on the worker that ran this step",
                header=header.name,
                env=header.env,
            )
        out[header.name] = header.prefix + secret
        if len(secret) >= MIN_REDACTED:
            secrets.append(secret)
    return out, secrets


def redact(value: Any, secrets: list[str]) -> Any:
    """``value`` with every secret struck out of its strings (keys included)."""
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, dict):
        return {redact(k, secrets): redact(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, secrets) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class Answer:
    """A 2xx answer as the step's output: a JSON value, or bytes stored as an object."""

    value: Any = None
    data: bytes | None = None  # not JSON nor text: stored, passed by reference
    content_type: str | None = None


def _text(body: bytes) -> str | None:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return None


def excerpt(body: bytes, secrets: list[str]) -> str:
    """The first KB of an answer, as text, its secrets struck out (no NUL: PostgreSQL)."""
    text = body[: ANSWER_KEPT * 2].decode("utf-8", "replace")
    kept: str = redact(text, secrets)
    return kept[:ANSWER_KEPT].replace("\x00", "\ufffd")


def answer_of(
    status: int,
    content_type: str | None,
    body: bytes,
    *,
    host: str,
    secrets: list[str],
) -> Answer:
    """What an answer makes of the step: its output (2xx), else :class:`StepFailure`
    ``http_error`` with the status and the first KB of the answer."""
    if not 200 <= status < 300:
        why = ": redirects are not followed" if 300 <= status < 400 else ""
        raise StepFailure(
            ErrorCode.HTTP_ERROR,
            f"{host} answered HTTP {status}{why}",
            status=status,
            response=excerpt(body, secrets),
        )
    if not body:
        return Answer()
    if is_json_value_type(content_type):
        try:
            return Answer(redact(orjson.loads(body), secrets))
        except orjson.JSONDecodeError:
            raise StepFailure(
                ErrorCode.OUTPUT_ERROR,
                f"{host} answered HTTP {status} with a body that is not valid JSON",
                status=status,
                response=excerpt(body, secrets),
            ) from None
    text = _text(body)
    base = base_type(content_type)
    if text is not None and (not base or base.startswith("text/")):
        return Answer(redact(text, secrets))
    for secret in secrets:
        body = body.replace(secret.encode(), REDACTED.encode())
    return Answer(data=body, content_type=content_type or "application/octet-stream")


__all__ = [
    "ANSWER_KEPT",
    "DEFAULT_METHOD",
    "DEFAULT_TIMEOUT_S",
    "HTTP_KEYS",
    "MAX_BODY_BYTES",
    "METHODS",
    "Answer",
    "Header",
    "HttpStep",
    "Request",
    "StepFailure",
    "answer_of",
    "check_http",
    "excerpt",
    "parse_http",
    "redact",
    "request_fields",
    "resolve_headers",
    "template_of",
    "url_text",
]
