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

from freight.model import Model
from freight.runner import protocol
from freight.runner.payloads import PayloadIO


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


def _error(exc: BaseException, code: str) -> dict[str, Any]:
    return {
        "code": code,
        "message": f"{type(exc).__name__}: {exc}",
        "detail": {
            "type": type(exc).__name__,
            "traceback": "".join(traceback.format_exception(exc)[-8:]),
        },
    }


def _call_model(model: Any, batch_mode: bool, inputs: list[Any]) -> list[Any]:
    """Outputs (or BaseException instances) per input, in input order."""
    if batch_mode:
        try:
            outputs = model.predict_batch(inputs)
        except Exception as exc:
            return [exc] * len(inputs)
        if not isinstance(outputs, list) or len(outputs) != len(inputs):
            err = TypeError(
                f"predict_batch returned {type(outputs).__name__} of "
                f"{len(outputs) if hasattr(outputs, '__len__') else '?'} items "
                f"for {len(inputs)} inputs"
            )
            return [err] * len(inputs)
        return outputs
    results: list[Any] = []
    for value in inputs:
        try:
            results.append(model.predict(value))
        except Exception as exc:
            results.append(exc)
    return results


async def _serve_batch(
    model: Any,
    batch_mode: bool,
    io: PayloadIO,
    items: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    results: list[dict[str, Any] | None] = [None] * len(items)
    inputs: list[Any] = []
    positions: list[int] = []
    for i, item in enumerate(items):
        try:
            inputs.append(await io.read_input(item))
            positions.append(i)
        except Exception as exc:
            results[i] = {"id": item["id"], "ok": False, "error": _error(exc, "input_error")}
    outputs = _call_model(model, batch_mode, inputs) if inputs else []
    for pos, output in zip(positions, outputs, strict=True):
        item_id = items[pos]["id"]
        if isinstance(output, BaseException):
            results[pos] = {"id": item_id, "ok": False, "error": _error(output, "model_error")}
            continue
        try:
            results[pos] = {"id": item_id, "ok": True, **await io.write_output(item_id, output)}
        except Exception as exc:
            results[pos] = {"id": item_id, "ok": False, "error": _error(exc, "output_error")}
    io.cleanup()
    return [r for r in results if r is not None]


async def _run(args: argparse.Namespace, proto_in: BinaryIO, proto_out: BinaryIO) -> int:
    from freight.registry import import_model
    from freight.storage import open_storage

    try:
        model_cls = import_model(args.ref, Path(args.project))
        model = model_cls()
        started = time.perf_counter()
        model.load()
        load_ms = (time.perf_counter() - started) * 1000
        io = PayloadIO(
            open_storage(args.storage),
            model_cls.input_kind(),
            args.inline_output_max_bytes,
        )
    except Exception as exc:
        proto_out.write(
            protocol.encode({"type": "load_failed", "error": _error(exc, "load_error")})
        )
        return 1
    batch_mode = type(model).predict_batch is not Model.predict_batch
    proto_out.write(protocol.encode({"type": "ready", "load_ms": load_ms, "pid": os.getpid()}))
    while True:
        message = protocol.read_sync(proto_in)
        if message is None or message.get("type") == "stop":
            return 0
        started = time.perf_counter()
        results = await _serve_batch(model, batch_mode, io, message["items"])
        run_ms = (time.perf_counter() - started) * 1000
        proto_out.write(protocol.encode({"type": "result", "items": results, "run_ms": run_ms}))


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
