"""The runner template: one process that imported the runner and a project's model
modules once, and forks each replica's runner from itself (``runner_start: fork``).

Why: a fresh interpreter pays for itself and every import again on each replica
start — ~160 ms for freight alone, ~1.5 s more for a module that imports
scikit-learn (bench/README.md, B7-fork) — on every scale from zero and every
replacement after a crash. A fork of this process costs a few milliseconds.

    python -m freight.runner.template --project DIR --ref module:Class ... \\
        --control-fd FD --parent PID

It stays single-threaded (a fork copies only the thread that forks): no event loop,
no logging handlers of its own, one ``selectors`` loop. In order:

1. it dies with the agent (PDEATHSIG), then imports ``freight.runner.process`` and the
   model modules of ``--ref`` — imports only: no model is instantiated and no
   ``load()`` runs, so nothing here touches a GPU;
2. it says :data:`HELLO` on its control socket (a ``SOCK_SEQPACKET`` socket the agent
   passed it): ready, or why forking from it would not be a fresh runner's start (an
   import failed, the imports started Python threads or loaded the CUDA driver),
   and the project files it imported with their stamps (the agent starts a new
   template once one of them changes);
3. it serves :data:`SPAWN` requests, each carrying the runner's stdin, stdout and stderr
   (``SCM_RIGHTS``): it forks, answers :data:`SPAWNED` with the child's pid and a pidfd
   (the agent signals it through that, never by a pid that may be reused), and
   :data:`EXITED` with its exit status once it ends. :data:`RETIRE`: it forks no more
   and exits once its last child is gone; the agent closing the socket: it exits now.

Each child, before the runner's ``main``: PDEATHSIG toward the template (which dies
with the agent, so the agent's death still ends every runner), the three pipes on
fds 0-2, the spawn's whole environment (``CUDA_VISIBLE_DEVICES`` in place before any
``load()``), default signal handlers, fresh random states and temporary directory.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib.util
import io
import json
import os
import random
import selectors
import signal
import socket
import sys
import tempfile
import threading
import traceback
import warnings
from pathlib import Path
from typing import Any

from freight.registry import import_model
from freight.runner import process

#: the messages on the control socket (JSON objects; ``op`` is one of these)
HELLO, SPAWN, SPAWNED, FAILED, EXITED, RETIRE = (
    "hello",
    "spawn",
    "spawned",
    "failed",
    "exited",
    "retire",
)
#: the largest message either side reads (a spawn carries the runner's environment)
MAX_MESSAGE_BYTES = 1024 * 1024
#: the fds a spawn carries: the runner's stdin, stdout and stderr
SPAWN_FDS = 3


def send(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    """One message (with ``fds``, passed as ``SCM_RIGHTS``)."""
    data = json.dumps(message).encode()
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.send(data)


def receive(sock: socket.socket, maxfds: int = 0) -> tuple[dict[str, Any] | None, list[int]]:
    """The next message and the fds it carried; ``(None, [])`` when the peer is gone."""
    data, fds, flags, _ = socket.recv_fds(sock, MAX_MESSAGE_BYTES, maxfds)
    if not data:
        for fd in fds:
            os.close(fd)
        return None, []
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        for fd in fds:
            os.close(fd)
        raise OSError(f"a control message was cut (flags {flags:#x})")
    message = json.loads(data)
    if not isinstance(message, dict):
        raise OSError("a control message is not a JSON object")
    return message, fds


# -- the template's start ----------------------------------------------------------------


def _prepare(project: Path, refs: list[str]) -> dict[str, Any]:
    """Import the models' modules; the hello: ready, or why not, and the stamps."""
    reason = None
    for ref in refs:
        try:
            import_model(ref, project)
        except Exception as exc:  # the runner reports it as the load error it is
            reason = f"cannot import {ref!r}: {type(exc).__name__}: {exc}"
            break
    if reason is None:
        reason = _unforkable()
    return {
        "op": HELLO,
        "pid": os.getpid(),
        "ready": reason is None,
        "reason": reason,
        "files": stamps(_imported_from(project, refs)),
    }


def _unforkable() -> str | None:
    """Why a fork of this process would not start a runner as a fresh interpreter does."""
    threads = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    if threads:  # a fork has none of them: the child's model would miss them
        return f"the model modules started threads ({', '.join(threads)})"
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        maps = ""
    if "libcuda.so" in maps:  # CUDA is not fork-safe, and would see every GPU
        return "the model modules loaded the CUDA driver at import"
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError) as exc:  # Linux before 5.3
        return f"no pidfd on this system ({exc})"
    return None


def _imported_from(project: Path, refs: list[str]) -> list[Path]:
    """The files of the project this process imported (and those of modules that
    failed to import: fixing one must bring a new template)."""
    root = project.resolve()
    files: set[Path] = set()
    for module in list(sys.modules.values()):
        name = getattr(module, "__file__", None)
        if name and Path(name).resolve().is_relative_to(root):
            files.add(Path(name).resolve())
    for ref in refs:
        try:
            spec = importlib.util.find_spec(ref.partition(":")[0])
        except (ImportError, ValueError):
            continue
        if spec is not None and spec.origin and Path(spec.origin).resolve().is_relative_to(root):
            files.add(Path(spec.origin).resolve())
    return sorted(files)


def stamps(files: list[Path]) -> dict[str, list[int]]:
    """Each file's modification time and size (a changed one: a stale template)."""
    found: dict[str, list[int]] = {}
    for path in files:
        try:
            st = path.stat()
        except OSError:
            continue
        found[str(path)] = [st.st_mtime_ns, st.st_size]
    return found


# -- serving spawns ------------------------------------------------------------------------


class _Template:
    def __init__(self, control: socket.socket) -> None:
        self._control = control
        self._selector = selectors.DefaultSelector()
        self._selector.register(control, selectors.EVENT_READ)
        self._children: dict[int, int] = {}  # pidfd -> pid
        self._retiring = False

    def serve(self) -> int:
        while not (self._retiring and not self._children):
            for key, _ in self._selector.select():
                if key.fileobj is self._control:
                    if not self._request():
                        return 0  # the agent is gone: the children follow (PDEATHSIG)
                else:
                    self._reap(key.fd)
        return 0

    def _request(self) -> bool:
        message, fds = receive(self._control, SPAWN_FDS)
        if message is None:
            return False
        if message.get("op") == RETIRE:
            self._retiring = True
        elif message.get("op") == SPAWN and len(fds) == SPAWN_FDS and not self._retiring:
            self._spawn(message, fds)
        else:
            for fd in fds:
                os.close(fd)
            send(self._control, {"op": FAILED, "id": message.get("id"), "reason": "refused"})
        return True

    def _spawn(self, message: dict[str, Any], fds: list[int]) -> None:
        for stream in (sys.stdout, sys.stderr):  # nothing buffered is written twice
            stream.flush()
        try:
            with warnings.catch_warnings():
                # Python 3.12+ warns of any thread, BLAS pools included; those are
                # fork-safe (pthread_atfork) and ours are checked by _unforkable
                warnings.simplefilter("ignore", DeprecationWarning)
                pid = os.fork()
        except OSError as exc:
            for fd in fds:
                os.close(fd)
            send(self._control, {"op": FAILED, "id": message["id"], "reason": str(exc)})
            return
        if pid == 0:
            code = 1
            try:
                code = self._child(message, fds)
            finally:
                os._exit(code)
        for fd in fds:
            os.close(fd)
        pidfd = os.pidfd_open(pid)
        self._children[pidfd] = pid
        self._selector.register(pidfd, selectors.EVENT_READ)
        send(self._control, {"op": SPAWNED, "id": message["id"], "pid": pid}, [pidfd])

    def _reap(self, pidfd: int) -> None:
        pid = self._children.pop(pidfd)
        self._selector.unregister(pidfd)
        os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        send(self._control, {"op": EXITED, "pid": pid, "returncode": _returncode(status)})

    def _child(self, message: dict[str, Any], fds: list[int]) -> int:
        """The forked runner: never returns into the template's loop (os._exit)."""
        template = os.getppid()
        try:
            self._selector.close()
            for pidfd in self._children:
                os.close(pidfd)
            self._control.close()
            process.die_with_parent()
            if os.getppid() != template:  # the template died already
                return 1
            _reset_signals()
            _stdio(fds)
            _environ(message["env"])
            return _run(message["argv"])
        except BaseException:
            traceback.print_exc()
            return 1


def _returncode(status: int) -> int:
    """As ``Popen.returncode``: the exit code, or minus the signal that ended it."""
    return os.waitstatus_to_exitcode(status)


def _reset_signals() -> None:
    """What a fresh interpreter starts with (the template ignores SIGINT)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)


def _stdio(fds: list[int]) -> None:
    """The runner's pipes on fds 0-2, and fresh ``sys.std*`` over them (as an
    interpreter makes them: stderr line-buffered, its errors escaped)."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    for fd in fds:
        if fd > 2:
            os.close(fd)
    sys.stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)))
    sys.stdout = io.TextIOWrapper(io.BufferedWriter(io.FileIO(1, "w", closefd=False)))
    sys.stderr = io.TextIOWrapper(
        io.BufferedWriter(io.FileIO(2, "w", closefd=False)),
        errors="backslashreplace",
        line_buffering=True,
    )


def _environ(env: dict[str, str]) -> None:
    """Exactly the spawn's environment (``os.environ`` sets the C one too), before any
    ``load()``: CUDA reads ``CUDA_VISIBLE_DEVICES`` when it initialises."""
    for name in [n for n in os.environ if n not in env]:
        del os.environ[name]
    os.environ.update(env)
    tempfile.tempdir = None  # TMPDIR again, should an import have asked already
    random.seed()
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:  # imported here: every child would share its state
        numpy_random.seed()


def _run(argv: list[str]) -> int:
    """The runner's ``main``, then what an interpreter's exit does."""
    sys.argv = [str(Path(process.__file__).with_name("__main__.py")), *argv]
    try:
        code = process.main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="freight-runner-template")
    parser.add_argument("--project", required=True)
    parser.add_argument("--ref", action="append", default=[])
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the agent's to handle
    process.die_with_parent()
    if os.getppid() != args.parent:  # the agent died while this started
        return 1
    control = socket.socket(fileno=args.control_fd)
    hello = _prepare(Path(args.project), args.ref)
    send(control, hello)
    if not hello["ready"]:
        return 0
    return _Template(control).serve()


if __name__ == "__main__":
    raise SystemExit(main())
