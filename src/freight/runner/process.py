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
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, BinaryIO

from freight.model import Model, PredictionContext, running
from freight.prediction import ErrorCode
from freight.runner import protocol
from freight.runner.chunks import ChunkRunner, is_chunk
from freight.runner.payloads import PayloadIO
from freight.runner.protocol import Batch, BatchItem, Failed, LoadFailed, Ready, Result, Stop
from freight.runner.tracebacks import error_detail, error_message

#: the code of a load that raised (the agent adds load_timeout and load_crashed)
LOAD_ERROR = "load_error"


class BatchMismatchError(Exception):
    """predict_batch did not return a list of one output per input."""


def _die_with_parent() -> None:
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
                    results.append(model.predict(value))
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


class BatchServer:
    """Runs batches through the loaded model; every failure is its item's ``Failed``."""

    def __init__(self, model: Any, io: PayloadIO, project_dir: Path) -> None:
        self._model = model
        self._batch_mode = type(model).predict_batch is not Model.predict_batch
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

    async def serve(self, batch: Batch) -> Result:
        started = time.perf_counter()
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
            outputs = _call_model(self._model, self._batch_mode, inputs, contexts) if inputs else []
            for item, output in zip(accepted, outputs, strict=True):
                results[item.id] = await self._output(item.id, output)
            for item in chunks:
                self._chunk = _context_of(item)
                results[item.id] = await self._chunks.run(item)
        finally:
            self._io.cleanup()
        items = tuple(results[i.id] for i in batch.items if i.id in results)
        return Result(items, (time.perf_counter() - started) * 1000)


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
    io = PayloadIO(open_storage(args.storage), model_cls.input_kind(), args.inline_output_max_bytes)
    return BatchServer(model, io, project), load_ms


async def _run(args: argparse.Namespace, proto_in: BinaryIO, proto_out: BinaryIO) -> int:
    try:
        server, load_ms = _load(args)
    except Exception as exc:
        traceback.print_exc()  # the whole story for the server's log; the frame is trimmed
        detail = error_detail(exc, Path(args.project))
        proto_out.write(protocol.encode(LoadFailed(LOAD_ERROR, error_message(exc), detail)))
        return 1
    proto_out.write(protocol.encode(Ready(load_ms, os.getpid())))
    while True:
        frame = protocol.read_sync(proto_in)
        if frame is None or isinstance(frame, Stop):
            return 0
        if not isinstance(frame, Batch):
            raise protocol.ProtocolError(f"a runner takes batches, not {type(frame).__name__}")
        proto_out.write(protocol.encode(await server.serve(frame)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="freight-runner")
    parser.add_argument("--ref", required=True)
    parser.add_argument("--project", required=True)
    parser.add_argument("--storage", required=True)
    parser.add_argument("--inline-output-max-bytes", type=int, default=256 * 1024)
    args = parser.parse_args(argv)
    _die_with_parent()
    proto_in, proto_out = _private_pipes()
    return asyncio.run(_run(args, proto_in, proto_out))
