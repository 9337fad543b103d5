"""One runner process seen from the agent: spawn, wait ready, run a batch, kill.

The agent never waits on a model without a deadline: a batch that overruns
its timeout, or a prediction canceled while running, ends with a SIGKILL of
the process (:meth:`Replica.kill`) and a fresh replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from freight.logs import DEFAULT_MAX_LOG_BYTES
from freight.runner import protocol
from freight.runner.protocol import Batch, Frame, LoadFailed, Logs, Ready, Result, Stop, Streamed

log = logging.getLogger("freight.replica")


class ReplicaError(Exception):
    """The runner died, failed to load, or broke the protocol."""


class ReplicaLoadError(ReplicaError):
    """The model did not load: ``failure`` says why (code, message, detail)."""

    def __init__(self, failure: LoadFailed) -> None:
        super().__init__(failure.message)
        self.failure = failure

    @property
    def error(self) -> dict[str, Any]:
        """The failure as reported on /v1/models (``load_error``)."""
        return asdict(self.failure)


class ReplicaHandle(Protocol):
    """What a model worker needs of a replica: the seam that lets its loop be tested
    without processes. :class:`Replica` is the real one (a runner subprocess)."""

    name: str
    load_ms: float | None

    @property
    def alive(self) -> bool: ...

    @property
    def serving(self) -> bool:
        """Loaded and still running."""

    async def start(self) -> None:
        """Start and load the model; ReplicaLoadError when it does not load."""

    async def run(self, batch: Batch) -> Result:
        """Run one batch; ReplicaError when the replica dies (or is killed) meanwhile."""

    async def kill(self) -> None:
        """Stop it now, interrupting a running batch (idempotent)."""

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop it after its current batch, or kill it past the grace."""


@dataclass(frozen=True, slots=True)
class RunnerCommand:
    """How to start a runner for a model."""

    ref: str
    project_dir: Path
    storage_url: str
    inline_output_max_bytes: int
    env: dict[str, str] | None = None
    load_timeout_s: float = 600.0
    max_log_bytes: int = DEFAULT_MAX_LOG_BYTES

    def argv(self) -> list[str]:
        """The command line of a fresh interpreter running the runner."""
        return [sys.executable, "-m", "freight.runner", *self.args()]

    def args(self) -> list[str]:
        """The runner's own arguments (``freight.runner.process.main``'s)."""
        return [
            "--ref",
            self.ref,
            "--project",
            str(self.project_dir),
            "--storage",
            self.storage_url,
            "--inline-output-max-bytes",
            str(self.inline_output_max_bytes),
            "--max-log-bytes",
            str(self.max_log_bytes),
        ]


class RunnerProcess(Protocol):
    """What a replica uses of its runner process: an ``asyncio.subprocess.Process``
    (a fresh interpreter) or a runner forked from a template (:mod:`freight.agent.forks`)."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    @property
    def stdin(self) -> asyncio.StreamWriter | None: ...

    @property
    def stdout(self) -> asyncio.StreamReader | None: ...

    @property
    def stderr(self) -> asyncio.StreamReader | None: ...

    async def wait(self) -> int: ...

    def send_signal(self, signal: int) -> None: ...


#: how a replica's runner process is started (:func:`exec_runner`, or a template's fork)
Spawn = Callable[[RunnerCommand], Awaitable[RunnerProcess]]


async def exec_runner(command: RunnerCommand) -> RunnerProcess:
    """A runner in a fresh interpreter: stdin, stdout (the frames) and stderr piped."""
    return await asyncio.create_subprocess_exec(
        *command.argv(),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(command.env or {})},
        limit=protocol.MAX_FRAME_BYTES,
    )


class Replica:
    def __init__(
        self,
        name: str,
        command: RunnerCommand,
        on_logs: Callable[[Logs], None] | None = None,
        on_streamed: Callable[[Streamed], None] | None = None,
        spawn: Spawn = exec_runner,
    ) -> None:
        """``on_logs``: what the model printed, as the runner sends it (its load's lines
        before :meth:`start` returns, then each batch's before :meth:`run` returns);
        ``on_streamed``: a streaming model's chunks, each as it was yielded;
        ``spawn``: how its runner process starts (default: a fresh interpreter)."""
        self.name = name
        self._command = command
        self._on_logs = on_logs
        self._on_streamed = on_streamed
        self._spawn = spawn
        self._proc: RunnerProcess | None = None
        self._log_task: asyncio.Task[None] | None = None
        self.load_ms: float | None = None
        self.ready = False  # the model is loaded and the runner takes batches

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def serving(self) -> bool:
        """Loaded and still running: what readiness and replica counts mean."""
        return self.ready and self.alive

    async def start(self) -> None:
        """Spawn the runner and wait until its model is loaded."""
        began = time.monotonic()
        self._proc = await self._spawn(self._command)
        self._log_task = asyncio.create_task(self._pump_logs(), name=f"logs:{self.name}")
        frame = await self._first_frame()
        if isinstance(frame, LoadFailed):
            await self.kill()
            raise ReplicaLoadError(frame)
        if not isinstance(frame, Ready):
            await self.kill()
            raise ReplicaLoadError(
                LoadFailed("load_crashed", f"the runner sent {type(frame).__name__} first")
            )
        self.load_ms = frame.load_ms
        self.ready = True
        log.info(
            "replica %s ready in %.0f ms (pid %s, load() %.0f ms%s)",
            self.name,
            (time.monotonic() - began) * 1000,
            self.pid,
            self.load_ms or 0,
            _devices(self._command.env),
        )

    async def _first_frame(self) -> Frame:
        """The runner's first frame, within the load timeout; a runner that dies or hangs
        while loading is a load failure (reported on /v1/models, retried with back-off)."""
        timeout_s = self._command.load_timeout_s
        try:
            return await asyncio.wait_for(self._read(), timeout_s)
        except TimeoutError:
            await self.kill()
            raise ReplicaLoadError(
                LoadFailed("load_timeout", f"load() did not finish within {timeout_s:g} s")
            ) from None
        except ReplicaError as exc:
            await self.kill()
            code = self._proc.returncode if self._proc else None
            raise ReplicaLoadError(
                LoadFailed(
                    "load_crashed",
                    f"the runner exited while loading (exit status {code})",
                    {"reason": str(exc.__cause__ or exc)},
                )
            ) from None

    async def _read(self) -> Frame:
        """The next frame that is not a Logs or Streamed frame (those go to ``on_logs``
        and ``on_streamed``)."""
        assert self._proc is not None and self._proc.stdout is not None
        while True:
            try:
                frame = await protocol.read_async(self._proc.stdout)
            except protocol.ProtocolError as exc:
                raise ReplicaError(f"replica {self.name} exited ({exc})") from exc
            if isinstance(frame, Streamed):
                if self._on_streamed is not None:
                    self._on_streamed(frame)
                continue
            if not isinstance(frame, Logs):
                return frame
            if self._on_logs is not None:
                self._on_logs(frame)

    async def _pump_logs(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        while line := await self._proc.stderr.readline():
            log.info("[%s] %s", self.name, line.decode(errors="replace").rstrip())

    async def run(self, batch: Batch) -> Result:
        """Send one batch and wait for its result (no deadline here: the caller has one)."""
        if not self.alive:
            raise ReplicaError(f"replica {self.name} is not running")
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.write(protocol.encode(batch))
            await self._proc.stdin.drain()
        except (ConnectionError, RuntimeError) as exc:
            raise ReplicaError(f"replica {self.name} closed its input") from exc
        frame = await self._read()
        if not isinstance(frame, Result):
            raise ReplicaError(f"unexpected frame {type(frame).__name__}")
        return frame

    async def kill(self) -> None:
        """SIGKILL the runner and reap it (idempotent)."""
        if self._proc is None:
            return
        if self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(signal.SIGKILL)
        await self._proc.wait()
        if self._log_task is not None:
            try:
                await asyncio.wait_for(self._log_task, 1.0)
            except (TimeoutError, asyncio.CancelledError):
                self._log_task.cancel()

    async def stop(self, grace_s: float = 5.0) -> None:
        """Ask the runner to exit after its current batch; kill it past the grace."""
        if self._proc is None or self._proc.returncode is not None:
            await self.kill()
            return
        try:
            assert self._proc.stdin is not None
            self._proc.stdin.write(protocol.encode(Stop()))
            await self._proc.stdin.drain()
            self._proc.stdin.close()
            await asyncio.wait_for(self._proc.wait(), grace_s)
        except (TimeoutError, ConnectionError, RuntimeError):
            pass
        await self.kill()


def _devices(env: dict[str, str] | None) -> str:
    """ ", GPUs 0,1" when the runner was confined to GPUs (", no GPU" to none)."""
    if env is None or "CUDA_VISIBLE_DEVICES" not in env:
        return ""
    devices = env["CUDA_VISIBLE_DEVICES"]
    return f", GPUs {devices}" if devices else ", no GPU"
