"""freight benchmark B5 (bench/README.md): a large payload through a pass-through model.

    .venv/bin/python bench/payload.py [--size-mib 1024] [--dir DIR]
        [--database-url URL --storage-url URL]   # cluster shape; default embedded

Starts ``freight serve`` on a tiny temporary project holding one pass-through
model (Payload input streamed to a File output), in a temporary state directory
under ``--dir`` (default: the system temp dir). Then: create a prediction
without input, PUT ``--size-mib`` MiB through the presigned upload URL (explicit
Content-Length, streamed from disk), long-poll until it succeeds, stream the
output down from its ``output_url`` to disk, and check the sha256 (untimed). The
client is freight's own ``AsyncClient`` (the workloads' rule, bench/README.md).

A thread samples ``VmHWM`` (the kernel's peak RSS) of ``freight serve`` and of
every descendant (runners) all along. The physical reference is ``cp`` of the
same file on the same disk. One JSON line per measurement; MB = 10^6 bytes.
Bounded: the whole run fails past ``--deadline-s`` (300 s).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

import freight

MiB = 1024 * 1024
CHUNK = 1 * MiB
RSS_LIMIT_BYTES = 256 * MiB

MODEL = '''
from __future__ import annotations

import os
import shutil
import tempfile

import freight


class Passthrough(freight.Model):
    """Streams its input file to an output file (constant memory)."""

    name = "passthrough"

    def predict(self, input: freight.Payload) -> freight.File:
        fd, name = tempfile.mkstemp(prefix="passthrough-", dir=os.environ["BENCH_TMP"])
        with os.fdopen(fd, "wb") as out, input.open() as src:
            shutil.copyfileobj(src, out, 1 << 20)
        return freight.File(name, content_type=input.content_type)
'''


def emit(**fields: Any) -> None:
    record = {
        "system": "freight",
        "workload": "B5",
        **{k: round(v, 2) if isinstance(v, float) else v for k, v in fields.items()},
    }
    print(json.dumps(record), flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- peak RSS of a process tree --------------------------------------------------------


def process_tree(root: int) -> list[int]:
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except FileNotFoundError:
            continue
        for tid in tasks:
            try:
                todo.extend(
                    int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()
                )
            except (FileNotFoundError, ProcessLookupError):
                continue
    return pids


def vm_hwm(pid: int) -> tuple[str, int] | None:
    """(short command line, VmHWM bytes) of a live process; None when gone or a zombie."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError):
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            words = [a.decode(errors="replace") for a in argv if a]
            name = " ".join(w for w in words if not w.startswith("/"))[:80]
            return name, int(line.split()[1]) * 1024
    return None


class PeakRss:
    """Peak ``VmHWM`` of every process in a tree, sampled from a thread every 50 ms."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.peaks: dict[int, tuple[str, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        for pid in process_tree(self.root):
            got = vm_hwm(pid)
            if got is not None:
                self.peaks[pid] = (got[0], max(got[1], self.peaks.get(pid, ("", 0))[1]))

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.sample()

    def start(self) -> None:
        self.sample()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


# -- the server --------------------------------------------------------------------------


class ServerProcess:
    def __init__(self, work: Path, env_extra: dict[str, str], deadline: float) -> None:
        project = work / "project"
        project.mkdir()
        (project / "models.py").write_text(MODEL)
        state = work / "state"
        state.mkdir()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = work / "server.log"
        env = {**os.environ, **env_extra}
        for name in ("FREIGHT_DATABASE_URL", "FREIGHT_STORAGE_URL", "FREIGHT_MODELS"):
            if name not in env_extra:
                env.pop(name, None)
        env.update(
            {
                "FREIGHT_STATE_DIR": str(state),
                "FREIGHT_LOG_LEVEL": "warning",
                "BENCH_TMP": str(work),  # the model's output file: same disk as the store
            }
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "freight.cli", "serve", str(project), "--port", str(self.port)],
            env=env,
            cwd=work,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("wb"),
        )
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            # wait on the process itself, bounded, rather than a bare sleep
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(0.2)
        raise SystemExit("server not ready before the deadline")

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


# -- the workload ----------------------------------------------------------------------


def write_payload(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    block = os.urandom(CHUNK)
    with path.open("wb") as f:
        written = 0
        while written < size:
            piece = written.to_bytes(8, "little") + block[8 : min(CHUNK, size - written)]
            f.write(piece)
            digest.update(piece)
            written += len(piece)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


async def one_pass(url: str, source: Path, dest: Path, deadline: float) -> dict[str, float]:
    """Upload (create + presigned PUT), wait, download: freight's AsyncClient all along."""
    timeout = max(1.0, deadline - time.monotonic())
    async with freight.AsyncClient(url, timeout_s=timeout) as client:
        t0 = time.perf_counter()
        handle = await client.predict("passthrough", file=source)
        t1 = time.perf_counter()
        done = await handle.wait(timeout)
        if done.status != "succeeded":
            raise SystemExit(f"prediction {handle.id}: {done.status}: {done.error}")
        t2 = time.perf_counter()
        await handle.download(dest)
        t3 = time.perf_counter()
    return {"upload_s": t1 - t0, "run_s": t2 - t1, "download_s": t3 - t2, "total_s": t3 - t0}


def cp_reference(source: Path, dest: Path) -> float:
    start = time.perf_counter()
    subprocess.run(["cp", str(source), str(dest)], check=True)
    elapsed = time.perf_counter() - start
    dest.unlink()
    return elapsed


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise TimeoutError("B5 ran past its deadline")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--dir", type=Path, default=None, help="work directory's parent")
    parser.add_argument("--database-url", default=None, help="cluster shape: PostgreSQL URL")
    parser.add_argument("--storage-url", default=None, help="cluster shape: s3:// URL")
    parser.add_argument("--deadline-s", type=float, default=300.0)
    args = parser.parse_args()
    deadline = time.monotonic() + args.deadline_s
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(int(args.deadline_s) + 1)
    size = args.size_mib * MiB
    env_extra = {"FREIGHT_MAX_PAYLOAD_BYTES": str(max(size, 1024 * MiB))}
    shape = "embedded"
    if args.database_url or args.storage_url:
        if not (args.database_url and args.storage_url):
            parser.error("the cluster shape takes both --database-url and --storage-url")
        env_extra["FREIGHT_DATABASE_URL"] = args.database_url
        env_extra["FREIGHT_STORAGE_URL"] = args.storage_url
        shape = "cluster"

    with tempfile.TemporaryDirectory(prefix="freight-b5-", dir=args.dir) as tmp:
        work = Path(tmp)
        source = work / "payload.bin"
        expected = write_payload(source, size)
        cp_s = cp_reference(source, work / "payload-cp.bin")
        server = ServerProcess(work, env_extra, deadline)
        rss = PeakRss(server.proc.pid)
        try:
            # warm-up: a tiny payload, so the timed pass does not include the runner's start
            small = work / "small.bin"
            write_payload(small, 1024)
            asyncio.run(one_pass(server.url, small, work / "small-out.bin", deadline))
            rss.start()
            times = asyncio.run(one_pass(server.url, source, work / "out.bin", deadline))
            rss.stop()
        finally:
            server.stop()
        if sha256_of(work / "out.bin") != expected:
            raise SystemExit("the downloaded output differs from the input")
        mb = size / 1e6
        emit(
            metric="end_to_end",
            shape=shape,
            size_mib=args.size_mib,
            mb_per_s=mb / times["total_s"],
            upload_mb_per_s=mb / times["upload_s"],
            download_mb_per_s=mb / times["download_s"],
            **times,
        )
        emit(metric="cp_reference", size_mib=args.size_mib, seconds=cp_s, mb_per_s=mb / cp_s)
        emit(metric="ratio", end_to_end_over_cp=cp_s / times["total_s"])
        for pid, (name, peak) in sorted(rss.peaks.items()):
            emit(
                metric="peak_rss",
                pid=pid,
                process=name,
                vm_hwm_mib=peak / MiB,
                under_256_mb=peak < RSS_LIMIT_BYTES,
            )
        if any(peak >= RSS_LIMIT_BYTES for _, peak in rss.peaks.values()):
            raise SystemExit(1)


if __name__ == "__main__":
    main()
