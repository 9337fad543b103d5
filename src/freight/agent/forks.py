"""Runners forked from a template process (``runner_start: fork``): the agent's side.

A :class:`Forkserver` starts its project's template (:mod:`freight.runner.template`)
on the first replica start, then asks it for each runner: it makes the runner's three
pipes, passes their far ends, and gets back the pid and a pidfd. A
:class:`~freight.agent.replica.Replica` sees a :class:`ForkedRunner`, shaped like the
``asyncio.subprocess.Process`` of a fresh interpreter; the template reports its exit.

A replica start is never stranded: a template that does not start, is not usable (an
import failed, the imports started threads or loaded the CUDA driver: each logged
once), or dies, means a fresh interpreter (:func:`~freight.agent.replica.exec_runner`);
a later start tries a template again. A template whose project files changed since it
imported them forks no more (retired: it ends with its last runner) and the next start
brings a new one, so a runner never runs code older than its files.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from freight.agent.replica import RunnerCommand, RunnerProcess, exec_runner
from freight.runner import protocol
from freight.runner.template import (
    EXITED,
    FAILED,
    RETIRE,
    SPAWN,
    SPAWNED,
    receive,
    send,
    stamps,
)

log = logging.getLogger("freight.forks")

#: how long a template may answer a spawn in (it forks at once: a silent one is wedged)
SPAWN_TIMEOUT_S = 10.0
#: after a template failed to start, replicas start as fresh interpreters this long
RETRY_S = 30.0
#: how long a closed template may take to exit before it is killed
CLOSE_GRACE_S = 5.0


class TemplateError(Exception):
    """The template did not start, is gone, or broke its protocol."""


class ForkedRunner:
    """A runner forked by a template: its pipes as asyncio streams, its pidfd (signals
    reach it and no process that reused its pid), its exit as the template reports it."""

    def __init__(self, pid: int, pidfd: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.stdin: asyncio.StreamWriter | None = None
        self.stdout: asyncio.StreamReader | None = None
        self.stderr: asyncio.StreamReader | None = None
        self._pidfd = pidfd
        self._done = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    async def connect(self, stdin: int, stdout: int, stderr: int) -> None:
        """Our ends of its pipes, as the streams an ``asyncio`` subprocess has."""
        loop = self._loop
        self.stdout = await _reader(loop, stdout)
        self.stderr = await _reader(loop, stderr)
        transport, proto = await loop.connect_write_pipe(
            lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader()),
            os.fdopen(stdin, "wb", buffering=0),
        )
        self.stdin = asyncio.StreamWriter(transport, proto, None, loop)

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            signal.pidfd_send_signal(self._pidfd, sig)

    async def wait(self) -> int:
        await self._done.wait()
        assert self.returncode is not None
        return self.returncode

    def exited(self, returncode: int) -> None:
        """It ended (its pipes drain to their end on their own)."""
        if self.returncode is not None:
            return
        self.returncode = returncode
        os.close(self._pidfd)
        if self.stdin is not None:
            self.stdin.close()
        self._done.set()

    def orphaned(self) -> None:
        """Its template is gone (PDEATHSIG ends it): kill it, and see its end on its pidfd."""
        if self.returncode is not None:
            return
        with contextlib.suppress(OSError):
            signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
        self._loop.add_reader(self._pidfd, self._gone)

    def _gone(self) -> None:
        self._loop.remove_reader(self._pidfd)
        self.exited(-signal.SIGKILL)


async def _reader(loop: asyncio.AbstractEventLoop, fd: int) -> asyncio.StreamReader:
    reader = asyncio.StreamReader(limit=protocol.MAX_FRAME_BYTES, loop=loop)
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader, loop=loop), os.fdopen(fd, "rb", buffering=0)
    )
    return reader


class _Template:
    """One running template, seen from the agent."""

    def __init__(
        self, proc: asyncio.subprocess.Process, control: socket.socket, hello: Any
    ) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.files: dict[str, list[int]] = hello["files"]
        self.alive = True
        self.retired = False
        self.lost: str | None = None  # why it went, if it did unasked
        self._control = control
        self._loop = asyncio.get_running_loop()
        self._ids = itertools.count()
        self._pending: dict[int, asyncio.Future[ForkedRunner]] = {}
        self._runners: dict[int, ForkedRunner] = {}
        self._loop.add_reader(control.fileno(), self._readable)

    @property
    def fresh(self) -> bool:
        """Its project files are as it imported them."""
        return stamps([Path(p) for p in self.files]) == self.files

    async def spawn(self, args: list[str], env: dict[str, str]) -> ForkedRunner:
        """A runner forked with ``args`` (its main's) and exactly ``env``."""
        if not self.alive:
            raise TemplateError(self.lost or "closed")
        pipes = [os.pipe() for _ in range(3)]
        theirs = [pipes[0][0], pipes[1][1], pipes[2][1]]
        ours = [pipes[0][1], pipes[1][0], pipes[2][0]]
        request = next(self._ids)
        future: asyncio.Future[ForkedRunner] = self._loop.create_future()
        try:
            self._pending[request] = future
            try:
                message = {"op": SPAWN, "id": request, "argv": args, "env": env}
                send(self._control, message, theirs)
            except OSError as exc:
                self.lose(f"a spawn could not be sent: {exc}")
                raise TemplateError(self.lost) from exc
            finally:
                for fd in theirs:
                    os.close(fd)
            try:
                runner = await asyncio.wait_for(future, SPAWN_TIMEOUT_S)
            except TimeoutError:
                self.lose(f"no answer to a spawn within {SPAWN_TIMEOUT_S:g} s")
                raise TemplateError(self.lost) from None
        except BaseException:
            self._pending.pop(request, None)
            for fd in ours:
                os.close(fd)
            raise
        await runner.connect(*ours)
        return runner

    def _readable(self) -> None:
        while self.alive:
            try:
                message, fds = receive(self._control, 1)
            except BlockingIOError:
                return
            except (OSError, ValueError) as exc:
                self.lose(f"it broke its protocol: {exc}")
                return
            if message is None:
                self.lose("it exited")
                return
            self._dispatch(message, fds)

    def _dispatch(self, message: dict[str, Any], fds: list[int]) -> None:
        op = message.get("op")
        if op == SPAWNED and fds:
            runner = ForkedRunner(int(message["pid"]), fds[0])
            self._runners[runner.pid] = runner
            future = self._pending.pop(message["id"], None)
            if future is not None and not future.done():
                future.set_result(runner)
            else:  # its spawn gave up waiting: nobody would ever stop it
                runner.send_signal(signal.SIGKILL)
            return
        for fd in fds:
            os.close(fd)
        if op == FAILED:
            future = self._pending.pop(message.get("id", -1), None)
            if future is not None and not future.done():
                future.set_exception(TemplateError(f"the fork failed: {message.get('reason')}"))
        elif op == EXITED:
            gone = self._runners.pop(int(message["pid"]), None)
            if gone is not None:
                gone.exited(int(message["returncode"]))

    def retire(self) -> None:
        """Fork no more; it exits once its last runner has."""
        self.retired = True
        with contextlib.suppress(OSError):
            send(self._control, {"op": RETIRE})

    def lose(self, why: str) -> None:
        """It is gone (or no longer trusted): its spawns fail, its runners are ended."""
        if not self.alive:
            return
        self.alive, self.lost = False, why
        if not self.retired:
            log.warning(
                "runner template (pid %d) lost: %s; the next replica start brings a new one",
                self.pid,
                why,
            )
        self._loop.remove_reader(self._control.fileno())
        self._control.close()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(TemplateError(why))
        self._pending.clear()
        for runner in self._runners.values():
            runner.orphaned()
        self._runners.clear()
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    async def close(self) -> None:
        """Close its socket (it exits, and its runners with it); wait for its end."""
        if self.alive:
            self.retired = True
            self.lose("closed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.proc.wait(), CLOSE_GRACE_S)


async def _start(project: Path, refs: Sequence[str], timeout_s: float) -> _Template | Any:
    """A started template, or its hello when it is not usable; TemplateError when it
    did not start."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "freight.runner.template",
            "--project",
            str(project),
            *(arg for ref in refs for arg in ("--ref", ref)),
            "--control-fd",
            str(theirs.fileno()),
            "--parent",
            str(os.getpid()),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=sys.stderr.fileno(),  # what a module prints at import: the server's log
            pass_fds=(theirs.fileno(),),
        )
    except OSError as exc:
        ours.close()
        raise TemplateError(f"it did not start: {exc}") from exc
    finally:
        theirs.close()
    ours.setblocking(False)
    try:
        hello = await asyncio.wait_for(_hello(ours), timeout_s)
    except BaseException as exc:  # canceled too: nothing is left behind
        ours.close()
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        if not isinstance(exc, TimeoutError | OSError | ValueError):
            raise
        await proc.wait()
        why = f"no hello within {timeout_s:g} s" if isinstance(exc, TimeoutError) else str(exc)
        raise TemplateError(why) from None
    if hello is None:
        ours.close()
        raise TemplateError(f"it exited while importing (exit status {await proc.wait()})")
    if not hello.get("ready"):
        ours.close()
        await proc.wait()
        return hello
    return _Template(proc, ours, hello)


async def _hello(sock: socket.socket) -> Any:
    loop = asyncio.get_running_loop()
    while True:
        readable: asyncio.Future[None] = loop.create_future()

        def wake(future: asyncio.Future[None] = readable) -> None:
            if not future.done():
                future.set_result(None)

        loop.add_reader(sock.fileno(), wake)
        try:
            await readable
        finally:
            loop.remove_reader(sock.fileno())
        try:
            message, _ = receive(sock)
        except BlockingIOError:
            continue
        return message


class Forkserver:
    """Runners of one project forked from its template: :meth:`spawn` is a replica's
    :data:`~freight.agent.replica.Spawn`."""

    def __init__(self, project_dir: Path, refs: Sequence[str]) -> None:
        """``refs``: the models this agent serves (their modules, imported once)."""
        self._project = project_dir
        self._refs = list(refs)
        self._template: _Template | None = None
        self._retired: list[_Template] = []
        self._unusable: dict[str, list[int]] | None = None  # its stamps: tried again on a change
        self._retry_at = 0.0
        self._lock = asyncio.Lock()

    @property
    def template_pid(self) -> int | None:
        return self._template.pid if self._template is not None else None

    async def spawn(self, command: RunnerCommand) -> RunnerProcess:
        """A runner forked from the template, else a fresh interpreter."""
        if command.project_dir == self._project:
            template = await self._current(command.load_timeout_s)
            if template is not None:
                try:
                    return await template.spawn(
                        command.args(), {**os.environ, **(command.env or {})}
                    )
                except TemplateError:  # logged as it was lost
                    pass
        return await exec_runner(command)

    async def _current(self, timeout_s: float) -> _Template | None:
        """The template to fork from (started now if due); None: fresh interpreters."""
        async with self._lock:
            template = self._template
            if template is not None and template.alive and template.fresh:
                return template
            self._template = None
            if template is not None and template.alive:
                log.info("project files changed: a new runner template (the old one retires)")
                template.retire()
                self._retired.append(template)
            if self._unusable is not None:
                if stamps([Path(p) for p in self._unusable]) == self._unusable:
                    return None
                self._unusable = None
            if time.monotonic() < self._retry_at:
                return None
            return await self._start(timeout_s)

    async def _start(self, timeout_s: float) -> _Template | None:
        began = time.monotonic()
        try:
            started = await _start(self._project, self._refs, timeout_s)
        except TemplateError as exc:
            self._retry_at = time.monotonic() + RETRY_S
            log.warning(
                "runner template did not start (%s): replicas start as fresh interpreters for %g s",
                exc,
                RETRY_S,
            )
            return None
        if not isinstance(started, _Template):
            self._unusable = started.get("files") or {}
            log.warning(
                "runner template not used: %s; replicas start as fresh interpreters until "
                "the project's files change",
                started.get("reason"),
            )
            return None
        log.info(
            "runner template ready in %.0f ms (pid %d): replicas fork from it",
            (time.monotonic() - began) * 1000,
            started.pid,
        )
        self._template = started
        self._retired = [t for t in self._retired if t.alive]
        return started

    async def aclose(self) -> None:
        """End the templates (the agent's drain stopped their runners already)."""
        templates = [*self._retired, *([self._template] if self._template else [])]
        self._template, self._retired = None, []
        await asyncio.gather(*(t.close() for t in templates))


__all__ = ["ForkedRunner", "Forkserver", "TemplateError"]
