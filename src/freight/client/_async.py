"""The asyncio client: runs the shared flows over aiohttp (or an httpx transport in tests).

The twin of ``_sync.py``; the protocol itself lives in ``_flows.py``. File
uploads and downloads move their disk I/O to a thread chunk by chunk, so a
1 GB payload neither sits in memory nor blocks the event loop.
"""

from __future__ import annotations

import asyncio
import builtins
import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar

import httpx

from freight.client import _flows
from freight.client._aiohttp import AiohttpTransport
from freight.client._models import HandleBase, ModelInfo, PipelineInfo, Prediction
from freight.client._protocol import (
    CHUNK_BYTES,
    Call,
    Flow,
    Sleep,
    Step,
    partial_path,
    resolve_url,
    send_kwargs,
    transport_error,
)

T = TypeVar("T")


class AsyncPredictionHandle(HandleBase):
    """A prediction being followed with an :class:`AsyncClient`."""

    __slots__ = ("_client",)

    def __init__(self, client: AsyncClient, prediction: Prediction) -> None:
        super().__init__(prediction)
        self._client = client

    async def refresh(self) -> Prediction:
        self.prediction = await self._client.get(self.id)
        return self.prediction

    async def wait(self, timeout: float | None = None, poll_s: float = 0.5) -> Prediction:
        """Wait until terminal (TimeoutError after ``timeout`` seconds) and return it."""
        if not self.prediction.terminal:
            self.prediction = await self._client.wait(self.id, timeout=timeout, poll_s=poll_s)
        return self.prediction

    async def output(self, timeout: float | None = None) -> Any:
        """The output (JSON value, or bytes), waiting for it; raises if the prediction failed."""
        prediction = await self.wait(timeout)
        return await self._client._drive(_flows.output(prediction, timeout=timeout))

    async def download(self, path: str | Path, timeout: float | None = None) -> Path:
        """Stream the output into ``path`` without holding it in memory."""
        prediction = await self.wait(timeout)
        return await self._client._drive(_flows.download(prediction, Path(path), timeout=timeout))

    async def cancel(self) -> Prediction:
        self.prediction = await self._client.cancel(self.id)
        return self.prediction


class AsyncClient:
    """An asyncio freight client. ``url``: argument, else ``$FREIGHT_URL``, else localhost:8000.

    The network is aiohttp (see ``_aiohttp.py`` for why); ``transport`` replaces it
    with an httpx transport (an ``httpx.MockTransport`` in tests).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        timeout_s: float = 30.0,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = resolve_url(url)
        self._http: httpx.AsyncClient | None = None
        self._net: AiohttpTransport | None = None
        if transport is not None:
            self._http = httpx.AsyncClient(
                base_url=self.url, timeout=timeout_s, headers=headers, transport=transport
            )
        else:
            self._net = AiohttpTransport(self.url, timeout_s, dict(headers or {}))

    # -- predictions ----------------------------------------------------------------------

    async def predict(
        self,
        target: str,
        input: Any = None,
        *,
        data: bytes | None = None,
        file: str | Path | None = None,
        content_type: str | None = None,
        input_uri: str | None = None,
        metadata: dict[str, Any] | None = None,
        priority: int | None = None,
        ttl_s: float | None = None,
        idempotency_key: str | None = None,
        wait: float | None = None,
    ) -> AsyncPredictionHandle:
        """Queue a prediction (uploading ``data``/``file`` when given) and return its handle."""
        flow = _flows.create(
            target,
            input,
            data=data,
            file=None if file is None else Path(file),
            content_type=content_type,
            input_uri=input_uri,
            metadata=metadata,
            priority=priority,
            ttl_s=ttl_s,
            idempotency_key=idempotency_key,
            wait=wait,
        )
        return AsyncPredictionHandle(self, await self._drive(flow))

    async def run(
        self,
        target: str,
        input: Any = None,
        *,
        data: bytes | None = None,
        content_type: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Predict in real time and return the output (awaited if past the server deadline)."""
        flow = _flows.run(target, input, data=data, content_type=content_type, timeout=timeout)
        return await self._drive(flow)

    async def run_pipeline(
        self, name: str, input: Any = None, *, timeout: float | None = None
    ) -> Any:
        """Run a pipeline in real time and return its output (awaited if past the server
        deadline). ``run`` is for models: a pipeline has its own route."""
        return await self._drive(_flows.run_pipeline(name, input, timeout=timeout))

    async def get(self, prediction_id: str, *, wait: float | None = None) -> Prediction:
        return await self._drive(_flows.get(prediction_id, wait=wait))

    async def handle(self, prediction_id: str) -> AsyncPredictionHandle:
        """A handle on an existing prediction (one request to fetch its state)."""
        return AsyncPredictionHandle(self, await self.get(prediction_id))

    async def wait(
        self, prediction_id: str, *, timeout: float | None = None, poll_s: float = 0.5
    ) -> Prediction:
        return await self._drive(_flows.wait_for(prediction_id, timeout=timeout, poll_s=poll_s))

    async def cancel(self, prediction_id: str) -> Prediction:
        return await self._drive(_flows.cancel(prediction_id))

    async def list(
        self, *, target: str | None = None, status: str | None = None, limit: int = 50
    ) -> AsyncIterator[Prediction]:
        """Every matching prediction, fetching pages of ``limit`` lazily via the cursor."""
        cursor: str | None = None
        while True:
            flow = _flows.page(target=target, status=status, cursor=cursor, limit=limit)
            items, cursor = await self._drive(flow)
            for item in items:
                yield item
            if cursor is None:
                return

    async def models(self) -> builtins.list[ModelInfo]:
        return await self._drive(_flows.models())

    async def pipelines(self) -> builtins.list[PipelineInfo]:
        """Every declared pipeline, by name."""
        return await self._drive(_flows.pipelines())

    async def pipeline(self, name: str) -> PipelineInfo:
        """One pipeline: its steps, their dependencies, and its graph (Mermaid)."""
        return await self._drive(_flows.pipeline(name))

    async def health(self) -> dict[str, Any]:
        return await self._drive(_flows.health())

    # -- lifecycle ------------------------------------------------------------------------

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        if self._net is not None:
            await self._net.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- transport ------------------------------------------------------------------------

    async def _drive(self, flow: Flow[T]) -> T:
        reply: httpx.Response | None = None
        while True:
            try:
                step = flow.send(reply)
            except StopIteration as stop:
                result: T = stop.value
                return result
            reply = await self._perform(step)

    async def _perform(self, step: Step) -> httpx.Response | None:
        if isinstance(step, Sleep):
            await asyncio.sleep(step.seconds)
            return None
        try:
            if step.upload is None:
                return await self._send(step, step.content)
            with step.upload.open("rb") as f:
                return await self._send(step, _chunks(f))
        except httpx.TransportError as exc:
            raise transport_error(exc, self.url) from exc

    async def _send(
        self, call: Call, content: bytes | AsyncIterator[bytes] | None
    ) -> httpx.Response:
        if self._net is not None:
            return await self._net.send(call, content)
        assert self._http is not None
        request = self._http.build_request(**send_kwargs(call), content=content)
        response = await self._http.send(request, stream=True)
        try:
            if call.download_to is not None and response.is_success:
                await _save(response, call.download_to)
            else:
                await response.aread()
        finally:
            await response.aclose()
        return response


async def _chunks(f: IO[bytes]) -> AsyncIterator[bytes]:
    while chunk := await asyncio.to_thread(f.read, CHUNK_BYTES):
        yield chunk


async def _save(response: httpx.Response, path: Path) -> None:
    """Stream the body to a temporary file, renamed into place only when complete."""
    part = partial_path(path)
    try:
        with part.open("wb") as f:
            async for chunk in response.aiter_bytes(CHUNK_BYTES):
                await asyncio.to_thread(f.write, chunk)
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
