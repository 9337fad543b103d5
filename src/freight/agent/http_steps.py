"""The agent's http caller: makes the calls of pipelines' ``kind: http`` steps.

An http step's row (kind ``http``, target ``:http``: ``pipelines/http.py``) is queued
by its run's advancement like a model step's. Every agent runs one caller, beside its
deliverer (in the cluster shape: every ``freight worker``; embedded: the one
process), which claims those rows with the store's own claim (fair between tenants,
passing over rows in their retry back-off) and a lease the agent's heartbeat renews,
makes each call in its own task (at most ``concurrency`` at once), and completes the
row through the agent's :class:`~freight.agent.persist.Persist` — the same fenced
completion as a model's, whose transaction advances the run. It holds no replica.

Crashes: a caller that dies mid-call leaves its rows running until their lease
lapses; the reaper's sweeps requeue them (or fail them ``attempts_exhausted`` once
their attempts are spent), and any caller makes the call again: an http step is
called *at least once*. A drained caller waits ``grace_s`` for its calls, then gives
the rest back without counting an attempt.

The call goes through the webhook client (``notify/sinks/webhook.py``): the SSRF
guard resolves the host and connects only to an address it just checked, redirects
are not followed, environment proxies are ignored. Secrets: a header's ``{env:}``
value is read here, from this process's environment, when the call is made; it is
sent and never kept — struck out of the output and error this writes, and never
logged (the lines name the method and host only).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

import httpcore
import httpx
import orjson

from freight import keys, logsetup, metrics
from freight.agent.persist import Persist
from freight.errors import InvalidRequestError
from freight.events import WorkSignal
from freight.media import JSON
from freight.notify.addresses import check_url_text
from freight.notify.guarded_httpx import guarded_client
from freight.pipelines.http import (
    ANSWER_KEPT,
    MAX_BODY_BYTES,
    Answer,
    Request,
    StepFailure,
    answer_of,
    redact,
    resolve_headers,
    url_text,
)
from freight.pipelines.spec import PipelineSpec
from freight.pipelines.validate import BUILTIN_TARGETS
from freight.prediction import Completion, ErrorCode, Prediction, Release, Status
from freight.storage.base import Storage
from freight.store.base import Queue

log = logging.getLogger("freight.http_steps")

#: the queue the rows of http steps are claimed from
TARGET = BUILTIN_TARGETS["http"]
USER_AGENT = "freight-http-steps/1"
WHAT = "http step"  # how the SSRF guard names the URL in its refusals


class HttpCaller:
    """Claims queued http step rows and makes their calls (see the module docstring)."""

    name = "http-steps"

    def __init__(
        self,
        store: Queue,
        storage: Storage,
        persist: Persist,
        *,
        signal: WorkSignal,
        worker_id: str,
        lease_s: float,
        poll_s: float,
        concurrency: int = 32,
        allow_private: bool = False,
        inline_max_bytes: int = 256 * 1024,
        environ: Mapping[str, str] | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        """``environ``: where ``{env:}`` headers are read (default: this process's);
        ``client``: replaces the guarded client (tests)."""
        self._store = store
        self._storage = storage
        self._persist = persist
        self._signal = signal
        self._worker_id = worker_id
        self._lease_s = lease_s
        self._poll_s = poll_s
        self._concurrency = concurrency
        self._allow_private = allow_private
        self._inline_max_bytes = inline_max_bytes
        self._environ = os.environ if environ is None else environ
        self._client = client or guarded_client(
            allow_private=allow_private, what=WHAT, user_agent=USER_AGENT
        )
        self._calls: dict[str, tuple[Prediction, asyncio.Task[None]]] = {}
        self._stopping = False

    def running_ids(self) -> list[str]:
        """The rows this caller holds (their leases are the heartbeat's to renew)."""
        return list(self._calls)

    # -- the claim loop ----------------------------------------------------------------

    async def run(self) -> None:
        """Until stopped: claim as many rows as there is room for, call each."""
        while not self._stopping:
            room = self._concurrency - len(self._calls)
            if room <= 0:
                tasks = [task for _, task in self._calls.values()]
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                rows = await self._store.claim(
                    TARGET, room, worker_id=self._worker_id, lease_s=self._lease_s, now=time.time()
                )
            except Exception as exc:  # the store is down: try again after a poll
                log.warning("http steps: cannot claim (%s)", exc)
                rows = []
            for row in rows:
                task = asyncio.create_task(self._call(row), name=f"http-step:{row.id}")
                self._calls[row.id] = (row, task)
                task.add_done_callback(functools.partial(self._ended, row.id))
            if not rows:
                await self._signal.wait(TARGET, self._poll_s)

    def _ended(self, prediction_id: str, _task: asyncio.Task[None]) -> None:
        self._calls.pop(prediction_id, None)

    def stop_claiming(self) -> None:
        self._stopping = True
        self._signal.notify(TARGET)  # out of its wait for work

    async def drain(self, grace_s: float) -> None:
        """Claim nothing more; let calls in flight end within the grace, then give the
        rest back (requeued at once, the attempt not counted); close the client."""
        self.stop_claiming()
        held = dict(self._calls)
        if held:
            await asyncio.wait([task for _, task in held.values()], timeout=grace_s)
        left = [row for row, task in held.values() if not task.done()]
        for _, task in held.values():
            task.cancel()
        for _, task in held.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if left:
            back = [
                Release(row.id, row.attempts, self._worker_id, count_attempt=False) for row in left
            ]
            await self._persist.release(back)
        await self._client.aclose()

    async def interrupt(self, ids: set[str]) -> None:
        """Rows this caller no longer holds (canceled, lease lost): stop their calls."""
        for prediction_id in ids:
            held = self._calls.get(prediction_id)
            if held is not None:
                held[1].cancel()

    # -- one call ----------------------------------------------------------------------

    async def _call(self, row: Prediction) -> None:
        with logsetup.bound(prediction_id=row.id, run_id=row.run_id, tenant=row.tenant):
            try:
                completion = await self._attempt(row)
            except Exception:  # a bug, or the object store down: left to its lease
                log.exception("http step %s: the call could not be recorded", row.step)
                return
            await self._persist.complete([completion], outbox=True)
            metrics.record_batch(TARGET, [row], [completion])

    async def _attempt(self, row: Prediction) -> Completion:
        """The row's call, made once, as its completion (never an exception)."""
        secrets: list[str] = []
        host = "?"
        try:
            request = Request.loads(row.definition or "{}")
            url = url_text(request)
            host = urlsplit(url).hostname or "?"
            headers, secrets = resolve_headers(request.headers, self._environ)
            async with asyncio.timeout(row.timeout_s):
                answer = await self._send(row, request, url, host, headers, secrets)
            return await self._succeeded(row, answer)
        except StepFailure as failure:
            return self._failed(row, failure.code, failure.message, failure.detail, secrets)
        except InvalidRequestError as exc:  # refused by the SSRF guard
            return self._failed(row, ErrorCode.URL_REFUSED, exc.message, {}, secrets)
        except (TimeoutError, httpx.TimeoutException, httpcore.TimeoutException):
            message = f"{host} did not answer within {row.timeout_s:g} s"
            return self._failed(row, ErrorCode.TIMEOUT, message, {}, secrets)
        except (httpx.HTTPError, httpcore.NetworkError, httpcore.ProtocolError, OSError) as exc:
            message = f"the call to {host} failed: {type(exc).__name__}"
            return self._failed(row, ErrorCode.HTTP_ERROR, message, {}, secrets)

    async def _send(
        self,
        row: Prediction,
        request: Request,
        url: str,
        host: str,
        headers: dict[str, str],
        secrets: list[str],
    ) -> Answer:
        check_url_text(url, allow_private=self._allow_private, what=WHAT)
        content, content_type = await self._body(row)
        sent = dict(headers)
        lower = {name.lower() for name in sent}
        if content is not None and "content-type" not in lower:
            sent["content-type"] = content_type
        if row.trace_context and "traceparent" not in lower:
            sent["traceparent"] = row.trace_context  # the receiver's spans join the run's
        log.debug("http step %s: %s %s", row.step, request.method, host)
        async with self._client.stream(
            request.method, url, content=content, headers=sent, timeout=row.timeout_s
        ) as response:
            ok = 200 <= response.status_code < 300
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if not ok and len(body) >= 2 * ANSWER_KEPT:
                    break  # a failure keeps only the first KB of its answer
                if len(body) > MAX_BODY_BYTES:
                    raise StepFailure(
                        ErrorCode.OUTPUT_ERROR,
                        f"{host} answered more than {MAX_BODY_BYTES} bytes",
                        status=response.status_code,
                    )
            kind = response.headers.get("content-type")
            return answer_of(response.status_code, kind, bytes(body), host=host, secrets=secrets)

    async def _body(self, row: Prediction) -> tuple[bytes | None, str]:
        """What is sent: the rendered input as JSON (null: nothing), or the stored
        object a whole reference names, as its content type says."""
        if row.input_key is None:
            if row.input_json is None or row.input_json == "null":
                return None, JSON
            return row.input_json.encode(), JSON
        info = await self._storage.stat(row.input_key)
        if info is None or info.size > MAX_BODY_BYTES:
            why = "is gone" if info is None else f"is over {MAX_BODY_BYTES} bytes"
            raise StepFailure(ErrorCode.INPUT_ERROR, f"the body's object {why}")
        data = await self._storage.get(row.input_key)
        return data, row.input_content_type or info.content_type or "application/octet-stream"

    async def _succeeded(self, row: Prediction, answer: Answer) -> Completion:
        done = Completion(
            id=row.id,
            attempt=row.attempts,
            worker_id=self._worker_id,
            status=Status.SUCCEEDED,
            finished_at=time.time(),
        )
        data, content_type = answer.data, answer.content_type
        if data is None:
            text = orjson.dumps(answer.value)
            if len(text) <= self._inline_max_bytes:
                done.output_json, done.output_content_type = text.decode(), JSON
                done.output_bytes = len(text)
                return done
            data, content_type = text, JSON  # too large to keep inline: an object
        key = keys.output_key(row.id)
        await self._storage.put(key, data, content_type=content_type)
        done.output_key, done.output_content_type, done.output_bytes = key, content_type, len(data)
        done.finished_at = time.time()
        return done

    def _failed(
        self,
        row: Prediction,
        code: str,
        message: str,
        detail: dict[str, object],
        secrets: list[str],
    ) -> Completion:
        log.info("http step %s failed: %s", row.step, redact(message, secrets))
        return Completion(
            id=row.id,
            attempt=row.attempts,
            worker_id=self._worker_id,
            status=Status.FAILED,
            finished_at=time.time(),
            error_code=code,
            error_message=redact(message, secrets),
            error_detail=orjson.dumps(redact(detail, secrets)).decode() if detail else None,
        )


def warn_missing_secrets(specs: Iterable[PipelineSpec], environ: Mapping[str, str]) -> list[str]:
    """The variables http steps' headers read that ``environ`` lacks, each logged once
    (at start, rather than as every such call's ``missing_secret``)."""
    wanted = {
        header.env
        for spec in specs
        for step in spec.steps.values()
        if step.http is not None
        for header in step.http.headers
        if header.env is not None
    }
    missing = sorted(name for name in wanted if name not in environ)
    for name in missing:
        log.warning(
            "http steps: %s is not set in this worker's environment: the calls whose "
            "headers read it fail missing_secret",
            name,
        )
    return missing


__all__ = ["TARGET", "HttpCaller", "warn_missing_secrets"]
