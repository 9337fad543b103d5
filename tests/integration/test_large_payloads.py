"""Large payloads stream end to end: no freight process holds the payload in memory.

A file of ``PAYLOAD_BYTES`` goes up through the presigned upload URL, through the
``passthrough`` model (Payload input → File output) and back down through the
output URL, on both deployment shapes. Meanwhile a background thread samples the
peak RSS (``VmHWM``) of the ``freight serve`` process and every descendant (the
runners); each must stay under ``RSS_LIMIT_BYTES``. That is a behaviour check
(streamed, not held whole), not a timing one: the payload is bigger than the limit.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from tests.fixtures.server import Server
from tests.integration.helpers import create, wait_done

MiB = 1024 * 1024
PAYLOAD_BYTES = int(os.environ.get("FREIGHT_TEST_PAYLOAD_MIB", "256")) * MiB
"""Big enough that holding it whole would break the RSS limit; small enough for CI
(``FREIGHT_TEST_PAYLOAD_MIB=1024`` runs the full 1 GiB of the requirement)."""
RSS_LIMIT_BYTES = 256 * MiB
_CHUNK = 1 * MiB
_SAMPLE_INTERVAL_S = 0.05
_DEADLINE_S = 240.0


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from every thread's ``children`` list)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return found
    for tid in tasks:
        try:
            text = Path(f"/proc/{pid}/task/{tid}/children").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        found.extend(int(child) for child in text.split())
    return found


def process_tree(root: int) -> list[int]:
    """``root`` and all its live descendants."""
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(_children(pid))
    return pids


def _status(pid: int) -> tuple[str, int] | None:
    """(command name, VmHWM in bytes) of a live process, None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    if "VmHWM" not in fields:  # a zombie
        return None
    return cmdline.strip()[:120], int(fields["VmHWM"].split()[0]) * 1024


class PeakRss:
    """Samples the peak RSS of a process tree from a thread until stopped.

    ``VmHWM`` is the kernel's own high-water mark, so a sample misses nothing of a
    process that is still alive at the next sample; processes that come and go
    between samples are the only blind spot (runners live on, so none here).
    """

    def __init__(self, root: int) -> None:
        self.root = root
        self.peaks: dict[int, tuple[str, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-rss", daemon=True)

    def sample(self) -> None:
        for pid in process_tree(self.root):
            status = _status(pid)
            if status is None:
                continue
            name, hwm = status
            previous = self.peaks.get(pid, (name, 0))[1]
            self.peaks[pid] = (name, max(previous, hwm))

    def _run(self) -> None:
        while not self._stop.wait(_SAMPLE_INTERVAL_S):
            self.sample()

    def __enter__(self) -> PeakRss:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def report(self) -> str:
        return "\n".join(
            f"  pid {pid}: {hwm / MiB:.0f} MiB  {name}"
            for pid, (name, hwm) in sorted(self.peaks.items())
        )


def write_payload(path: Path, size: int) -> str:
    """Write ``size`` pseudo-random bytes in chunks; return their sha256."""
    digest = hashlib.sha256()
    block = os.urandom(_CHUNK)
    with path.open("wb") as f:
        written = 0
        while written < size:
            # vary each chunk cheaply so no layer can dedupe or compress it away
            piece = written.to_bytes(8, "little") + block[8 : min(_CHUNK, size - written)]
            f.write(piece)
            digest.update(piece)
            written += len(piece)
    return digest.hexdigest()


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            yield chunk


def download(url: str, dest: Path) -> str:
    """Stream ``url`` to ``dest``; return the sha256 of what arrived."""
    digest = hashlib.sha256()
    with httpx.stream("GET", url, timeout=_DEADLINE_S) as response, dest.open("wb") as f:
        assert response.status_code == 200, response.read()[:2000]
        for chunk in response.iter_bytes(_CHUNK):
            f.write(chunk)
            digest.update(chunk)
    return digest.hexdigest()


def test_large_payload_streams_through_every_freight_process(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    """Upload, pass-through and download of a large payload: same bytes out, no
    freight process's peak RSS reaches the limit (none holds the payload), and no
    temporary copy is left on the runner's disk."""
    server = make_server(models=["Passthrough"])
    # the runners' temp files (inputs from S3, model outputs) go to <state_dir>/tmp
    scratch = Path(server.env["FREIGHT_STATE_DIR"]) / "tmp"
    assert scratch.is_dir()
    source = tmp_path / "payload.bin"
    expected = write_payload(source, PAYLOAD_BYTES)
    assert server.proc is not None
    with PeakRss(server.proc.pid) as rss, server.client(timeout_s=_DEADLINE_S) as client:
        created = create(client, "passthrough")
        assert created["status"] == "awaiting_input" and created["upload_url"]
        uploaded = httpx.put(
            created["upload_url"],
            content=_file_chunks(source),
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Length": str(PAYLOAD_BYTES),
            },
            timeout=_DEADLINE_S,
        )
        assert uploaded.status_code == 200, uploaded.text
        done = wait_done(client, created["id"], timeout_s=_DEADLINE_S)
        assert done["status"] == "succeeded", done
        assert done["output_url"], done

        # the output by its (presigned) URL, then through the API's own stream
        by_url = download(done["output_url"], tmp_path / "out-url.bin")
        assert by_url == expected
        (tmp_path / "out-url.bin").unlink()
        by_api = download(
            f"{server.url}/v1/predictions/{created['id']}/output", tmp_path / "out-api.bin"
        )
        assert by_api == expected

    # the S3 input copy and the model's File output are gone: nothing piles up on disk
    assert sorted(p.name for p in scratch.iterdir() if p.is_file()) == []

    print(f"peak RSS ({PAYLOAD_BYTES // MiB} MiB payload):\n{rss.report()}")
    assert len(rss.peaks) >= 2, f"expected the server and a runner:\n{rss.report()}"
    over = {pid: peak for pid, peak in rss.peaks.items() if peak[1] >= RSS_LIMIT_BYTES}
    assert not over, (
        f"peak RSS at or over {RSS_LIMIT_BYTES // MiB} MiB for a "
        f"{PAYLOAD_BYTES // MiB} MiB payload:\n{rss.report()}"
    )
