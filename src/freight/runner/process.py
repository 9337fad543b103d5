"""The runner process: load one model once, then serve batches until told to stop.

Why a process per replica: models are CPU/GPU-bound and must not share the
agent's GIL, and interrupting arbitrary model code (cancel, timeout) is only
safe as a SIGKILL of the process. The protocol pipe is a private duplicate of
the original stdout; fd 1 is pointed at stderr so that a model's ``print``
cannot corrupt the frames.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from freight.logs import DEFAULT_MAX_LOG_BYTES, LOAD, Printed
from freight.model import InputKind, Model, PredictionContext, running
from freight.prediction import ErrorCode
from freight.runner import protocol
from freight.runner.capture import Capture, Tee, install
from freight.runner.chunks import ChunkRunner, is_chunk
from freight.runner.payloads import PayloadIO, TensorModel
from freight.runner.protocol import (
    Batch,
    BatchItem,
    Failed,
    LoadFailed,
    Logs,
    Ready,
    Result,
    Stop,
    Streamed,
)
from freight.runner.tracebacks import error_detail, error_message
from freight.streaming import ChunkError, Part, join, part_of

#: the code of a load that raised (the agent adds load_timeout and load_crashed)
LOAD_ERROR = "load_error"


class BatchMismatchError(Exception):
    """predict_batch did not return a list of one output per input."""


def die_with_parent() -> None:
    """Linux: get SIGKILL when the agent dies, so no runner outlives a killed server."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
    except (OSError, AttributeError):
        pass


def _private_pipes() -> tuple[BinaryIO, BinaryIO]:
    proto_out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return sys.stdin.buffer, proto_out


def _call_model(
    model: Any,
    batch_mode: bool,
    inputs: list[Any],
    contexts: list[PredictionContext] | None = None,
) -> list[Any]:
    """Outputs (or BaseException instances) per input, in input order; ``contexts``
    (one per input) are what ``freight.context()``/``contexts()`` read meanwhile."""
    if not batch_mode:
        results: list[Any] = []
        for n, value in enumerate(inputs):
            try:
                with running([contexts[n]] if contexts is not None else ()):
                    results.append(_drained(model, model.predict(value)))
            except Exception as exc:
                results.append(exc)
        return results
    try:
        with running(contexts if contexts is not None else (), batch=True):
            outputs = model.predict_batch(inputs)
    except Exception as exc:
        return [exc] * len(inputs)
    if not isinstance(outputs, list) or len(outputs) != len(inputs):
        count = f"{len(outputs)} items" if isinstance(outputs, list) else "no list"
        mismatch = BatchMismatchError(
            f"predict_batch returned {type(outputs).__name__} ({count}) for {len(inputs)} "
            "inputs: it must return a list of one output per input, in order"
        )
        return [mismatch] * len(inputs)
    return outputs


def _drained(model: Any, output: Any) -> Any:
    """A streaming model's chunks joined, where nobody follows them (a batch job's
    records); any other output as it is."""
    if inspect.isgenerator(output):
        parts = [part_of(chunk, 0.0) for chunk in output]
        return join(parts, type(model).stream_output)
    if inspect.isasyncgen(output):
        raise TypeError("an async generator model cannot run a batch job's records")
    return output


class BatchServer:
    """Runs batches through the loaded model; every failure is its item's ``Failed``.

    A streaming model (``predict`` a generator) runs each prediction by itself: each
    chunk it yields goes to the agent at once (``send``: a :class:`Streamed` frame),
    and their join is its output (:mod:`freight.streaming`)."""

    #: where chunks go as they are yielded (the runner's frames; None: nowhere)
    send: Callable[[protocol.Frame], None] | None = None

    def __init__(self, model: Any, io: PayloadIO, project_dir: Path) -> None:
        self._model = model
        self._batch_mode = type(model).predict_batch is not Model.predict_batch
        self._streams = isinstance(model, Model) and type(model).streams()
        self._io = io
        self._project = project_dir
        # every record of a chunk runs as the chunk's prediction (one context)
        self._chunk = PredictionContext("")
        self._chunks = ChunkRunner(
            lambda inputs: _call_model(
                model, self._batch_mode, inputs, [self._chunk] * len(inputs)
            ),
            io,
            project_dir,
            {BatchMismatchError: ErrorCode.BATCH_MISMATCH},
        )

    def _failed(self, item_id: str, exc: BaseException, code: str) -> Failed:
        return Failed(item_id, code, error_message(exc), error_detail(exc, self._project))

    async def _output(self, item_id: str, output: Any) -> protocol.ResultItem:
        if isinstance(output, BatchMismatchError):
            return self._failed(item_id, output, ErrorCode.BATCH_MISMATCH)
        if isinstance(output, BaseException):
            return self._failed(item_id, output, ErrorCode.MODEL_ERROR)
        try:
            return await self._io.write_output(item_id, output)
        except Exception as exc:  # not JSON-able, storage failed: this item only
            return self._failed(item_id, exc, ErrorCode.OUTPUT_ERROR)

    async def _stream(
        self, item_id: str, value: Any, context: PredictionContext
    ) -> protocol.ResultItem:
        """Run one prediction of a streaming model: each chunk sent as it is yielded,
        their join written as its output. A model that raises ends its stream there
        (the chunks sent are kept) and fails ``model_error``; a chunk freight cannot
        stream, or chunks that do not join, ``output_error``."""
        parts: list[Part] = []
        try:
            with running([context]):
                produced = self._model.predict(value)
                if inspect.isasyncgen(produced):
                    async for chunk in produced:
                        self._emit(item_id, parts, chunk)
                else:
                    for chunk in produced:
                        self._emit(item_id, parts, chunk)
            output = join(parts, type(self._model).stream_output)
        except ChunkError as exc:
            return self._failed(item_id, exc, ErrorCode.OUTPUT_ERROR)
        except Exception as exc:
            return self._failed(item_id, exc, ErrorCode.MODEL_ERROR)
        return await self._output(item_id, output)

    def _emit(self, item_id: str, parts: list[Part], chunk: Any) -> None:
        part = part_of(chunk, time.time())
        parts.append(part)
        if self.send is not None:
            self.send(Streamed(item_id, (part,)))

    async def serve(self, batch: Batch) -> Result:
        started = time.perf_counter()
        marks = [time.time()]  # the phases' bounds, for the agent's spans
        results: dict[str, protocol.ResultItem] = {}
        inputs: list[Any] = []
        accepted: list[BatchItem] = []
        # chunk predictions (batch jobs) run by themselves, after the others
        chunks = [i for i in batch.items if is_chunk(i)]
        singles = [i for i in batch.items if not is_chunk(i)] if chunks else batch.items
        for item in singles:
            try:
                inputs.append(await self._io.read_input(item))
                accepted.append(item)
            except Exception as exc:
                results[item.id] = self._failed(item.id, exc, ErrorCode.INPUT_ERROR)
        try:
            contexts = [_context_of(item) for item in accepted]
            marks.append(time.time())
            if self._streams:
                for item, value, context in zip(accepted, inputs, contexts, strict=True):
                    results[item.id] = await self._stream(item.id, value, context)
                outputs: list[Any] = []
                accepted = []
            else:
                outputs = (
                    _call_model(self._model, self._batch_mode, inputs, contexts) if inputs else []
                )
            marks.append(time.time())
            for item, output in zip(accepted, outputs, strict=True):
                results[item.id] = await self._output(item.id, output)
            for item in chunks:
                self._chunk = _context_of(item)
                results[item.id] = await self._chunks.run(item)
        finally:
            self._io.cleanup()
        items = tuple(results[i.id] for i in batch.items if i.id in results)
        marks.append(time.time())
        return Result(items, (time.perf_counter() - started) * 1000, tuple(marks))


def _context_of(item: BatchItem) -> PredictionContext:
    return item.context if item.context is not None else PredictionContext(item.id)


def _load(args: argparse.Namespace) -> tuple[BatchServer, float]:
    """Import and load the model: the server of its batches and load()'s duration."""
    from freight.registry import import_model
    from freight.storage import open_storage

    project = Path(args.project)
    model_cls = import_model(args.ref, project)
    model = model_cls()
    started = time.perf_counter()
    model.load()
    load_ms = (time.perf_counter() - started) * 1000
    kind = model_cls.input_kind()
    tensors = (
        TensorModel(model_cls.model_name(), tuple(model_cls.outputs), model_cls.takes_one_array())
        if kind == InputKind.TENSORS
        else None
    )
    io = PayloadIO(open_storage(args.storage), kind, args.inline_output_max_bytes, tensors)
    return BatchServer(model, io, project), load_ms


class _Frames:
    """Every frame to the agent, written under one lock (the log flusher writes too);
    the captured lines of a batch (or the load) always before its result."""

    def __init__(self, proto_out: BinaryIO, max_log_bytes: int) -> None:
        self._out = proto_out
        self.lock = threading.Lock()
        self.capture = Capture(self._logs, self.lock, max_log_bytes)
        self._tees: tuple[Tee, ...] = ()

    def _logs(self, lines: tuple[Printed, ...], dropped: int) -> None:
        self._out.write(protocol.encode(Logs(lines, dropped)))

    def install(self) -> None:
        self._tees = install(self.capture)

    def send(self, frame: protocol.Frame) -> None:
        """``frame`` now (a streamed chunk: the lines captured meanwhile follow on their
        own)."""
        with self.lock:
            self._out.write(protocol.encode(frame))

    def write(self, frame: protocol.Frame) -> None:
        """``frame``, after the lines captured since :meth:`Capture.begin`."""
        for tee in self._tees:
            tee.finish()
        lines, dropped = self.capture.end()
        with self.lock:
            if lines or dropped:
                self._logs(lines, dropped)
            self._out.write(protocol.encode(frame))


async def _run(args: argparse.Namespace, proto_in: BinaryIO, frames: _Frames) -> int:
    frames.capture.begin(LOAD)
    try:
        server, load_ms = _load(args)
    except Exception as exc:
        traceback.print_exc()  # the whole story for the server's log; the frame is trimmed
        detail = error_detail(exc, Path(args.project))
        frames.write(LoadFailed(LOAD_ERROR, error_message(exc), detail))
        return 1
    # the load's lines: in the worker's log (stderr) and, marked, on the first batch's
    server.send = frames.send
    frames.write(Ready(load_ms, os.getpid()))
    while True:
        frame = protocol.read_sync(proto_in)
        if frame is None or isinstance(frame, Stop):
            return 0
        if not isinstance(frame, Batch):
            raise protocol.ProtocolError(f"a runner takes batches, not {type(frame).__name__}")
        frames.capture.begin()
        result = await server.serve(frame)
        frames.write(result)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="freight-runner")
    parser.add_argument("--ref", required=True)
    parser.add_argument("--project", required=True)
    parser.add_argument("--storage", required=True)
    parser.add_argument("--inline-output-max-bytes", type=int, default=256 * 1024)
    parser.add_argument("--max-log-bytes", type=int, default=DEFAULT_MAX_LOG_BYTES)
    args = parser.parse_args(argv)
    die_with_parent()
    proto_in, proto_out = _private_pipes()
    frames = _Frames(proto_out, args.max_log_bytes)
    frames.install()
    return asyncio.run(_run(args, proto_in, frames))
