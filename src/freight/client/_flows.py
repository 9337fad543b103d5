"""Every client operation, written once as a flow (see ``_protocol.py``).

A flow is a generator: it yields the requests to make (and pauses), receives
the responses, and returns the result. ``Client`` and ``AsyncClient`` run the
same flows with blocking and async transports respectively.
"""

from __future__ import annotations

import json
import mimetypes
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypedDict, Unpack
from urllib.parse import quote

from freight.client._events import deliveries_from, delivery_from
from freight.client._models import (
    BatchJob,
    CallbackAnswered,
    Created,
    Delivery,
    FreightClientError,
    ModelInfo,
    PipelineInfo,
    Prediction,
    UsageLine,
)
from freight.client._protocol import (
    Call,
    Flow,
    answered_from,
    batch_job_from,
    batch_page_from,
    check,
    held_for,
    json_body,
    model_from,
    models_from,
    number,
    outcome_error,
    output_from,
    page_from,
    pause,
    pipeline_from,
    pipelines_from,
    prediction_from,
    request,
    usage_from,
)

# the longest a single long-poll asks the server to hold (its max_wait_s may be larger)
LONG_POLL_S = 60.0
OCTET_STREAM = "application/octet-stream"


def _path(prediction_id: str) -> str:
    return f"/v1/predictions/{quote(prediction_id, safe='')}"


def create(
    target: str,
    input: Any = None,
    *,
    data: bytes | None = None,
    file: Path | None = None,
    content_type: str | None = None,
    input_uri: str | None = None,
    metadata: dict[str, Any] | None = None,
    priority: int | None = None,
    ttl_s: float | None = None,
    idempotency_key: str | None = None,
    wait: float | None = None,
    webhook: str | None = None,
    webhook_events: Sequence[str] | None = None,
) -> Flow[Prediction]:
    """Create a prediction; for ``data``/``file``, create it awaiting input then upload.

    ``wait`` asks the server to hold the answer until the prediction is
    terminal or ``wait`` seconds pass (after the upload, when there is one).
    """
    given = [
        name
        for name, v in (("input", input), ("data", data), ("file", file), ("input_uri", input_uri))
        if v is not None
    ]
    if len(given) > 1:
        raise ValueError(f"give at most one of input, data, file, input_uri (got {given})")
    uploading = data is not None or file is not None
    body: dict[str, Any] = {"target": target}
    extras = {
        "input": input,
        "input_uri": input_uri,
        "metadata": metadata,
        "priority": priority,
        "ttl_s": ttl_s,
    }
    body.update({k: v for k, v in extras.items() if v is not None})
    if webhook is not None:
        body["webhook"] = {"url": webhook, **_events_field(webhook_events)}
    elif webhook_events is not None:
        raise ValueError("webhook_events needs webhook")
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    if wait is not None and not uploading:
        headers["Prefer"] = f"wait={number(wait)}"
    call = Call(
        "POST",
        "/v1/predictions",
        headers=headers,
        json=body,
        has_json=True,
        timeout=held_for(wait) if "Prefer" in headers else None,
    )
    prediction = prediction_from((yield from request(call)))
    # a retried idempotent create may find the upload already done
    if uploading and prediction.status == "awaiting_input":
        prediction = yield from upload(prediction, data=data, file=file, content_type=content_type)
        if wait is not None and not prediction.terminal:
            prediction = yield from get(prediction.id, wait=wait)
    return prediction


#: the most predictions one bulk request carries (the server's bound)
MAX_BULK = 1000


def create_many(items: Sequence[Mapping[str, Any]]) -> Flow[list[Created]]:
    """Create many predictions, ``MAX_BULK`` per request: each item a single create's
    body (``target``, ``input`` or ``input_uri``, ``metadata``, ``priority``, ``ttl_s``,
    ``webhook``) plus its own ``idempotency_key``; one result per item, in order."""
    out: list[Created] = []
    for start in range(0, len(items), MAX_BULK):
        page = [dict(item) for item in items[start : start + MAX_BULK]]
        call = Call("POST", "/v1/predictions/bulk", json={"predictions": page}, has_json=True)
        body = json_body((yield from request(call)))
        out += [Created.model_validate({**r, "index": r["index"] + start}) for r in body["data"]]
    return out


def _events_field(events: Sequence[str] | None) -> dict[str, Any]:
    """``events`` of a webhook, left to the server's default (completed) when None."""
    return {} if events is None else {"events": list(events)}


def webhook_params(url: str | None, events: Sequence[str] | None) -> dict[str, str]:
    """The real-time routes take the webhook as query parameters (the body is the input)."""
    if url is None:
        if events is not None:
            raise ValueError("webhook_events needs webhook")
        return {}
    return {"webhook": url, **({} if events is None else {"webhook_events": ",".join(events)})}


def upload(
    prediction: Prediction,
    *,
    data: bytes | None,
    file: Path | None,
    content_type: str | None,
) -> Flow[Prediction]:
    """PUT the input to the prediction's upload URL, with an explicit Content-Length."""
    if not prediction.upload_url:
        raise FreightClientError(
            0,
            "invalid_response",
            f"prediction {prediction.id} is awaiting input without an upload_url",
        )
    if file is not None:
        size = file.stat().st_size
        kind = content_type or mimetypes.guess_type(file.name)[0] or OCTET_STREAM
    else:
        size = len(data or b"")
        kind = content_type or OCTET_STREAM
    headers = {"Content-Type": kind, "Content-Length": str(size)}
    call = Call(
        "PUT",
        prediction.upload_url,
        headers=headers,
        content=data if file is None else None,
        upload=file,
        timeout=held_for(None),
    )
    return prediction_from((yield from request(call)))


def get(prediction_id: str, *, wait: float | None = None) -> Flow[Prediction]:
    params = {"wait": number(wait)} if wait else {}
    timeout = held_for(wait) if wait else None
    call = Call("GET", _path(prediction_id), params=params, timeout=timeout)
    return prediction_from((yield from request(call)))


def wait_for(
    prediction_id: str, *, timeout: float | None = None, poll_s: float = 0.5
) -> Flow[Prediction]:
    """Long-poll until the prediction is terminal; TimeoutError after ``timeout`` seconds.

    Each request asks the server to hold it until the prediction finishes. A
    server that answers early anyway (a proxy, an older server) is polled every
    ``poll_s`` seconds instead of hammered.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        remaining = LONG_POLL_S if deadline is None else deadline - time.monotonic()
        hold = max(0.0, min(LONG_POLL_S, remaining))
        asked = time.monotonic()
        prediction = yield from get(prediction_id, wait=hold)
        if prediction.terminal:
            return prediction
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(
                f"prediction {prediction_id} still {prediction.status} after {timeout} s"
            )
        if time.monotonic() - asked < hold / 2:
            left = poll_s if deadline is None else min(poll_s, deadline - time.monotonic())
            yield from pause(left)


def deliveries(prediction_id: str) -> Flow[list[Delivery]]:
    """The prediction's notifications: one per event and subscription, with their tries."""
    return deliveries_from((yield from request(Call("GET", _path(prediction_id) + "/deliveries"))))


def redeliver(delivery_id: str) -> Flow[Delivery]:
    """Send one of a prediction's notifications again now, with its original event id."""
    call = Call("POST", f"/v1/deliveries/{quote(delivery_id, safe='')}/redeliver")
    return delivery_from((yield from request(call)))


def cancel(prediction_id: str) -> Flow[Prediction]:
    return prediction_from((yield from request(Call("POST", _path(prediction_id) + "/cancel"))))


def redrive(prediction_id: str) -> Flow[Prediction]:
    """Restart a failed or canceled pipeline run where it stopped."""
    return prediction_from((yield from request(Call("POST", _path(prediction_id) + "/redrive"))))


#: where a callback step's answers live (``/v1/callbacks/{token}/{answer}``)
CALLBACKS = "/v1/callbacks/"


def callback_url(url_or_token: str, answer: str) -> str:
    """The URL of ``answer`` (success, failure, heartbeat) for a waiting callback step
    named by any of its three URLs (absolute, its server's), or by its bare token (on
    this client's server)."""
    text = url_or_token.strip()
    if CALLBACKS not in text:
        if not text or "/" in text:
            raise ValueError("give a callback step's URL or its token")
        return f"{CALLBACKS}{quote(text, safe='')}/{answer}"
    head, _, tail = text.partition(CALLBACKS)
    token = tail.split("?")[0].split("/")[0]
    if not token:
        raise ValueError("the URL names no callback token")
    return f"{head}{CALLBACKS}{token}/{answer}"


def callback_answer(
    url_or_token: str, answer: str, body: Any = None, *, has_body: bool = False
) -> Flow[CallbackAnswered]:
    """Answer a waiting callback step (``success`` with its output, ``failure`` with
    ``{error, cause}``, ``heartbeat``): the token in the URL is the credential."""
    call = Call("POST", callback_url(url_or_token, answer), json=body, has_json=has_body)
    return answered_from((yield from request(call)))


def page(
    *, target: str | None, status: str | None, cursor: str | None, limit: int
) -> Flow[tuple[list[Prediction], str | None]]:
    params = {"target": target, "status": status, "cursor": cursor, "limit": str(limit)}
    call = Call("GET", "/v1/predictions", params={k: v for k, v in params.items() if v})
    return page_from((yield from request(call)))


def models() -> Flow[list[ModelInfo]]:
    return models_from((yield from request(Call("GET", "/v1/models"))))


def model(name: str) -> Flow[ModelInfo]:
    call = Call("GET", f"/v1/models/{quote(name, safe='')}")
    return model_from((yield from request(call)))


def pipelines() -> Flow[list[PipelineInfo]]:
    return pipelines_from((yield from request(Call("GET", "/v1/pipelines"))))


def pipeline(name: str) -> Flow[PipelineInfo]:
    call = Call("GET", f"/v1/pipelines/{quote(name, safe='')}")
    return pipeline_from((yield from request(call)))


#: a time a usage report takes: epoch seconds, a datetime (naive: UTC), or ISO 8601 text
When = float | datetime | str


def _when(value: When) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str):
        return value
    return number(value)


def usage(
    *,
    start: When | None = None,
    end: When | None = None,
    group_by: Sequence[str] = ("tenant", "target"),
    tenant: str | None = None,
) -> Flow[list[UsageLine]]:
    """The usage ledger summed over the whole hours covering ``[start, end)`` (the
    server's default: the last 24 hours), per ``group_by`` (any of tenant, target,
    kind, hour, status; empty: the total)."""
    if isinstance(group_by, str):
        raise ValueError("group_by is a sequence of names, e.g. ('tenant', 'target')")
    params = {"group_by": ",".join(group_by)}
    if start is not None:
        params["from"] = _when(start)
    if end is not None:
        params["to"] = _when(end)
    if tenant is not None:
        params["tenant"] = tenant
    return usage_from((yield from request(Call("GET", "/v1/usage", params=params))))


def health() -> Flow[dict[str, Any]]:
    response = check((yield from request(Call("GET", "/healthz"))))
    body = response.json()
    return body if isinstance(body, dict) else {"status": body}


def output(prediction: Prediction, *, timeout: float | None = None) -> Flow[Any]:
    """The output of a prediction, waiting for it to finish first when it has not.

    Inline JSON comes from the prediction object; anything else is fetched from
    ``output_url`` (parsed when JSON, else returned as bytes). A prediction that
    failed, was canceled or expired raises its error.
    """
    if not prediction.terminal:
        prediction = yield from wait_for(prediction.id, timeout=timeout)
    if not prediction.succeeded:
        raise outcome_error(prediction)
    if not prediction.output_url:
        return prediction.output
    return output_from((yield from request(Call("GET", prediction.output_url))))


def download(prediction: Prediction, path: Path, *, timeout: float | None = None) -> Flow[Path]:
    """Stream the output to ``path`` (inline JSON is written out as JSON)."""
    if not prediction.terminal:
        prediction = yield from wait_for(prediction.id, timeout=timeout)
    if not prediction.succeeded:
        raise outcome_error(prediction)
    if not prediction.output_url:
        path.write_bytes(json.dumps(prediction.output).encode())
        return path
    call = Call("GET", prediction.output_url, download_to=path, timeout=held_for(None))
    check((yield from request(call)))
    return path


def run(
    target: str,
    input: Any = None,
    *,
    data: bytes | None = None,
    content_type: str | None = None,
    timeout: float | None = None,
    webhook: str | None = None,
    webhook_events: Sequence[str] | None = None,
) -> Flow[Any]:
    """Real-time predict: the output inline, or — past the server's deadline — awaited.

    ``timeout`` is how long the server holds the request (its default when
    None); a 202 means the prediction is still going, and the flow then follows
    it through the asynchronous API until it finishes.
    """
    if input is not None and data is not None:
        raise ValueError("give input or data, not both")
    params = {"timeout": number(timeout)} if timeout is not None else {}
    params.update(webhook_params(webhook, webhook_events))
    call_url = f"/v1/models/{quote(target, safe='')}/predict"
    if data is not None:
        headers = {"Content-Type": content_type or OCTET_STREAM}
        call = Call(
            "POST",
            call_url,
            params=params,
            headers=headers,
            content=data,
            timeout=held_for(timeout),
        )
    else:
        call = Call(
            "POST", call_url, params=params, json=input, has_json=True, timeout=held_for(timeout)
        )
    return (yield from _realtime(call))


def run_pipeline(
    name: str,
    input: Any,
    *,
    timeout: float | None = None,
    webhook: str | None = None,
    webhook_events: Sequence[str] | None = None,
) -> Flow[Any]:
    """A real-time pipeline run (JSON in, the run's output back), followed like
    :func:`run` past the deadline. Its own route rather than :func:`run` guessing:
    models and pipelines share one namespace, but only the caller knows which a
    name is without a request to ask."""
    params = {"timeout": number(timeout)} if timeout is not None else {}
    params.update(webhook_params(webhook, webhook_events))
    call = Call(
        "POST",
        f"/v1/pipelines/{quote(name, safe='')}/predict",
        params=params,
        json=input,
        has_json=True,
        timeout=held_for(timeout),
    )
    return (yield from _realtime(call))


def _realtime(call: Call) -> Flow[Any]:
    response = yield from request(call)
    if response.status_code == 202:
        pending = prediction_from(response)
        return (yield from output(pending))
    check(response)
    return output_from(response) if response.content else None


# -- batch jobs -------------------------------------------------------------------------

BATCH_JOBS = "/v1/batch-jobs"
#: how the file types a batch job reads are labelled when uploaded (mimetypes lacks them)
_UPLOAD_TYPES = {".jsonl": "application/jsonl", ".ndjson": "application/jsonl"}


def _job_path(job_id: str) -> str:
    return f"{BATCH_JOBS}/{quote(job_id, safe='')}"


def is_uri(value: str) -> bool:
    """An object URI (``freight://...``, ``s3://...``) rather than a local path."""
    return "://" in value


class BatchJobOptions(TypedDict, total=False):
    """The options of a batch job (``POST /v1/batch-jobs``); one left out takes the
    server's default. The sync and async clients take them as keywords. Besides
    ``output``, ``metadata`` and the webhook, the fields of the server's
    ``batch.options.Options``, typed alike (a unit test holds them together)."""

    output: str | None
    split: Literal["line", "none"] | None
    records_per_call: int | None
    max_call_bytes: int | None
    concurrency: int | None
    on_error: Literal["fail", "continue"] | None
    join: Literal["none", "input"] | None
    input_filter: str | None
    output_filter: str | None
    content_type: str | None
    priority: int | None
    metadata: dict[str, Any] | None
    webhook: str | None
    webhook_events: Sequence[str] | None


def batch_job_body(
    target: str, input: str | Sequence[str], **options: Unpack[BatchJobOptions]
) -> dict[str, Any]:
    """The body of ``POST /v1/batch-jobs``; options left None take the server's default.

    ``input``: a stored object's URI (a prefix ending in ``/`` for every file under
    it), or the names of the files to upload (``{"upload": [...]}``)."""
    if isinstance(input, str):
        job_input: Any = input
    else:
        names = list(input)
        if not names:
            raise ValueError("give the input as a URI or at least one name to upload")
        if len(set(names)) != len(names):
            raise ValueError("upload names must be unique")
        job_input = {"upload": names}
    body: dict[str, Any] = {"target": target, "input": job_input}
    webhook, events = options.get("webhook"), options.get("webhook_events")
    skip = {"webhook", "webhook_events"}
    body.update({k: v for k, v in options.items() if v is not None and k not in skip})
    if webhook is not None:
        body["webhook"] = {"url": webhook, **_events_field(events)}
    elif events is not None:
        raise ValueError("webhook_events needs webhook")
    return body


def create_batch_job(body: dict[str, Any]) -> Flow[BatchJob]:
    """Create a job from :func:`batch_job_body`; uploads are left to the caller."""
    call = Call("POST", BATCH_JOBS, json=body, has_json=True)
    return batch_job_from((yield from request(call)))


def get_batch_job(job_id: str) -> Flow[BatchJob]:
    return batch_job_from((yield from request(Call("GET", _job_path(job_id)))))


def cancel_batch_job(job_id: str) -> Flow[BatchJob]:
    return batch_job_from((yield from request(Call("POST", _job_path(job_id) + "/cancel"))))


def batch_page(
    *, status: str | None, target: str | None, cursor: str | None, limit: int
) -> Flow[tuple[list[BatchJob], str | None]]:
    params = {"status": status, "target": target, "cursor": cursor, "limit": str(limit)}
    call = Call("GET", BATCH_JOBS, params={k: v for k, v in params.items() if v})
    return batch_page_from((yield from request(call)))


def wait_batch_job(
    job_id: str, *, timeout: float | None = None, poll_s: float = 1.0
) -> Flow[BatchJob]:
    """Poll the job every ``poll_s`` seconds until it is terminal; TimeoutError after
    ``timeout`` seconds."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        job = yield from get_batch_job(job_id)
        if job.terminal:
            return job
        left = poll_s if deadline is None else deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"batch job {job_id} still {job.status} after {timeout} s")
        yield from pause(min(poll_s, left))


def upload_type(name: str, content_type: str | None = None) -> str:
    """The Content-Type an input file is uploaded with: the job's ``content_type``
    when given, else what its name says (gzip for ``.gz``), else octet-stream."""
    if content_type:
        return content_type
    kind, encoding = mimetypes.guess_type(name, strict=False)
    if encoding == "gzip":
        return "application/gzip"
    suffix = Path(name).suffix.lower()
    return _UPLOAD_TYPES.get(suffix) or kind or OCTET_STREAM


def upload_batch_input(
    job: BatchJob,
    name: str,
    path: Path,
    *,
    content_type: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Flow[BatchJob]:
    """PUT one input file to the job's signed ``upload_urls[name]``, streamed from disk."""
    url = (job.upload_urls or {}).get(name)
    if not url:
        raise FreightClientError(
            0,
            "invalid_response",
            f"batch job {job.id} ({job.status}) has no upload URL for {name!r}",
        )
    headers = {
        "Content-Type": upload_type(name, content_type),
        "Content-Length": str(path.stat().st_size),
    }
    call = Call("PUT", url, headers=headers, upload=path, timeout=held_for(None), progress=progress)
    return batch_job_from((yield from request(call)))


def download_url(
    url: str, path: Path, *, progress: Callable[[int, int], None] | None = None
) -> Flow[Path]:
    """Stream ``url`` (a presigned download, or a path on the server) into ``path``."""
    call = Call("GET", url, download_to=path, timeout=held_for(None), progress=progress)
    check((yield from request(call)))
    return path


def local_inputs(path: Path) -> list[tuple[str, Path]]:
    """The files to upload for a local input: a file under its own name, or every
    regular file of a directory (recursively) under its name relative to it, in order."""
    if path.is_file():
        return [(path.name, path)]
    if not path.is_dir():
        raise ValueError(f"{path} is neither a file nor a directory")
    found = sorted((p.relative_to(path).as_posix(), p) for p in path.rglob("*") if p.is_file())
    if not found:
        raise ValueError(f"{path} holds no files")
    return found


def batch_uploads(
    job: BatchJob,
    files: Sequence[tuple[str, Path]],
    *,
    content_type: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> Flow[BatchJob]:
    """Upload each ``(name, path)`` of a job awaiting input; the last one queues it.
    ``progress(name, sent, total)`` follows each file."""
    signed = job  # its upload_urls sign every name; later answers need not repeat them
    for name, path in files:
        if job.status != "awaiting_input":
            break  # a retried run may find the uploads done
        each = None if progress is None else _progress_of(progress, name)
        job = yield from upload_batch_input(
            signed, name, path, content_type=content_type, progress=each
        )
    return job


def batch(
    target: str,
    source: str | Path,
    *,
    progress: Callable[[str, int, int], None] | None,
    options: BatchJobOptions,
) -> Flow[BatchJob]:
    """Create a job over ``source`` (an object URI, or a local file or directory whose
    files are uploaded) and return it, queued: the convenience behind ``client.batch``."""
    if isinstance(source, str) and is_uri(source):
        return (yield from create_batch_job(batch_job_body(target, source, **options)))
    files = local_inputs(Path(source))
    body = batch_job_body(target, [name for name, _ in files], **options)
    job = yield from create_batch_job(body)
    return (
        yield from batch_uploads(
            job, files, content_type=options.get("content_type"), progress=progress
        )
    )


def _progress_of(
    progress: Callable[[str, int, int], None], name: str
) -> Callable[[int, int], None]:
    def update(sent: int, total: int) -> None:
        progress(name, sent, total)

    return update
