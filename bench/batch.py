"""freight benchmark B9: a batch job over the tabular example (bench/README.md).

    .venv/bin/python bench/batch.py [--records 100000] [--rounds 1] [--rss 10000,100000]

The data: rows of scikit-learn's bundled breast-cancer table, resampled to
``--records`` JSON Lines records (one row per line, a dict of the 30 features).

- **reference** (the physical bound): one process, the tabular model loaded once,
  a plain loop reading the file, calling ``predict_batch`` on ``records_per_call``
  records at a time (each an in-memory ``freight.Payload``, as freight hands them)
  and writing one JSON line per output.
- **freight**: ``freight serve examples/`` (tabular and echo only), the file
  uploaded through the job's presigned URL, then ``POST /v1/batch-jobs``'s job
  polled every 10 ms: *time to first record* is create -> the first chunk counted
  done; *records/s* is records / (create -> succeeded). The upload is not timed.
- **interactive**: p50 of real-time ``echo`` predictions (one at a time) with no
  job, then while a job runs: what a big job costs interactive callers.
- **rss**: the peak RSS of every freight process (server + runners) during jobs of
  each size in ``--rss``: it must not grow with the data set.
- ``--base-src DIR`` (instead of the above): two servers at once, one running the
  ``src`` at DIR (``before``), one this checkout's (``after``); each round runs the
  loop, then a job on each side (their order alternating), and reports both ratios
  to that round's loop and the CPU seconds of each side's server and runners: a
  before/after that a busy machine's drift touches less than runs taken apart.

Prints JSON lines, then a summary line. Bounded: every wait has a deadline.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "examples"))

import bench  # noqa: E402

import freight  # noqa: E402

RECORDS_PER_CALL = 256


def make_data(path: Path, n: int) -> None:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    names = [str(f) for f in data.feature_names]
    rows = [dict(zip(names, (round(float(v), 5) for v in row), strict=True)) for row in data.data]
    rng = random.Random(0)
    with path.open("w") as f:
        for _ in range(n):
            f.write(json.dumps(rng.choice(rows)) + "\n")


def reference(path: Path, out: Path) -> dict[str, Any]:
    """The plain loop: same model, same data, same call size, one process."""
    import orjson
    from tabular import Tabular

    model = Tabular()
    model.load()
    started = time.perf_counter()
    count = 0
    with path.open("rb") as src, out.open("wb") as dst:
        batch: list[freight.Payload] = []

        def flush() -> None:
            for output in model.predict_batch(batch):
                dst.write(orjson.dumps(output) + b"\n")
            batch.clear()

        for line in src:
            batch.append(freight.Payload.from_bytes(line, "application/json"))
            count += 1
            if len(batch) >= RECORDS_PER_CALL:
                flush()
        if batch:
            flush()
    elapsed = time.perf_counter() - started
    return bench.emit(
        "B9-reference", records=count, s=round(elapsed, 3), rps=round(count / elapsed)
    )


class RssWatch:
    """Samples the RSS of a process tree every 50 ms; keeps each pid's peak."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.peaks: dict[int, tuple[str, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                return
            for proc in procs:
                try:
                    rss = proc.memory_info().rss
                    name = "server" if proc.pid == self.root.pid else "runner"
                except psutil.Error:
                    continue
                _, peak = self.peaks.get(proc.pid, ("", 0))
                self.peaks[proc.pid] = (name, max(peak, rss))
            self._stop.wait(0.05)

    def summary(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for name, peak in self.peaks.values():
            out[name] = max(out.get(name, 0), peak // (1 << 20))
        return out


def run_job(client: httpx.Client, path: Path) -> dict[str, Any]:
    job = client.post(
        "/v1/batch-jobs",
        json={
            "target": "tabular",
            "input": {"upload": [path.name]},
            "records_per_call": RECORDS_PER_CALL,
        },
    ).json()
    job_id, upload = job["id"], job["upload_urls"][path.name]
    with path.open("rb") as f:
        response = httpx.put(upload, content=f, timeout=300)  # queues the job
    created = time.perf_counter()
    assert response.status_code == 200, response.text
    first = None
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        body = client.get(f"/v1/batch-jobs/{job_id}").json()
        if first is None and body["counts"]["done"] > 0:
            first = time.perf_counter() - created
        if body["status"] in {"succeeded", "failed", "canceled"}:
            break
        time.sleep(0.01)
    elapsed = time.perf_counter() - created
    assert body["status"] == "succeeded", body
    return {"job": body, "first_s": first, "s": elapsed}


def interactive_p50(client: httpx.Client, n: int) -> float:
    samples = []
    for i in range(n):
        started = time.perf_counter()
        response = client.post("/v1/models/echo/predict", json={"i": i})
        assert response.status_code == 200
        samples.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(samples), 2)


def _cpu_s(pid: int) -> dict[str, float]:
    root = psutil.Process(pid)
    runners = 0.0
    for child in root.children(recursive=True):
        try:
            runners += sum(child.cpu_times()[:2])
        except psutil.Error:
            continue
    return {"server": sum(root.cpu_times()[:2]), "runners": runners}


def versus(base_src: str, data: Path, records: int, rounds: int, work: Path) -> None:
    """``--base-src``: the loop, then a job on each side, per round (see the docstring)."""
    servers: dict[str, bench.ServerProcess] = {}
    ratios: dict[str, list[float]] = {"before": [], "after": []}
    try:
        for side, src in (("before", base_src), ("after", str(ROOT / "src"))):
            (work / side).mkdir()
            servers[side] = bench.ServerProcess(work / side, extra_env={"PYTHONPATH": src})
        clients = {side: httpx.Client(base_url=s.url, timeout=60) for side, s in servers.items()}
        for client in clients.values():  # the runners loaded, the first chunks run once
            run_job(client, data)
        for round_ in range(rounds):
            loop = reference(data, work / "ref.out")["rps"]
            line: dict[str, Any] = {"round": round_, "reference_rps": loop}
            for side in ("before", "after") if round_ % 2 == 0 else ("after", "before"):
                started = _cpu_s(servers[side].proc.pid)
                result = run_job(clients[side], data)
                ended = _cpu_s(servers[side].proc.pid)
                ratios[side].append(records / result["s"] / loop)
                line[side] = {
                    "rps": round(records / result["s"]),
                    "ratio": round(ratios[side][-1], 3),
                    "first_record_s": round(result["first_s"], 3),
                    "cpu_s": {k: round(ended[k] - started[k], 2) for k in ended},
                }
            bench.emit("B9-versus", **line)
    finally:
        for server in servers.values():
            server.stop()
    bench.emit(
        "B9-versus-summary",
        **{f"ratio_{side}": round(statistics.median(r), 3) for side, r in ratios.items()},
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--rss", default="10000,100000", help="job sizes for the RSS check")
    parser.add_argument("--base-src", help="before/after against the src at this path")
    args = parser.parse_args()
    os.environ["FREIGHT_MODELS"] = json.dumps(["tabular:Tabular", "echo:Echo"])
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "records.jsonl"
        make_data(data, args.records)
        if args.base_src:
            versus(args.base_src, data, args.records, args.rounds, work)
            return
        ref = [reference(data, work / "ref.out") for _ in range(args.rounds)]
        server = bench.ServerProcess(work)
        try:
            with httpx.Client(base_url=server.url, timeout=60) as client:
                idle = interactive_p50(client, 200)
                runs = []
                for round_ in range(args.rounds):
                    result = run_job(client, data)
                    runs.append(result)
                    bench.emit(
                        "B9-freight",
                        round=round_,
                        records=result["job"]["counts"]["done"],
                        first_record_s=round(result["first_s"], 3),
                        s=round(result["s"], 3),
                        rps=round(args.records / result["s"]),
                    )
                busy_p50: list[float] = []
                done = threading.Event()

                def background() -> None:
                    with httpx.Client(base_url=server.url, timeout=60) as c:
                        run_job(c, data)
                    done.set()

                thread = threading.Thread(target=background)
                thread.start()
                time.sleep(1.0)  # let the job reach its steady state (bench only)
                while not done.is_set() and len(busy_p50) < 3:
                    busy_p50.append(interactive_p50(client, 100))
                thread.join()
                bench.emit("B9-interactive", idle_p50_ms=idle, during_job_p50_ms=busy_p50)
                for size in [int(s) for s in args.rss.split(",") if s]:
                    part = work / f"rss-{size}.jsonl"
                    make_data(part, size)
                    with RssWatch(server.proc.pid) as watch:
                        run_job(client, part)
                    bench.emit("B9-rss", records=size, peak_rss_mib=watch.summary())
        finally:
            server.stop()
    ref_rps = statistics.median(r["rps"] for r in ref)
    rps = statistics.median(args.records / r["s"] for r in runs)
    bench.emit(
        "B9-summary",
        reference_rps=round(ref_rps),
        freight_rps=round(rps),
        ratio=round(rps / ref_rps, 3),
        first_record_s=round(statistics.median(r["first_s"] for r in runs), 3),
    )


if __name__ == "__main__":
    main()
