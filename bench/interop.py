"""B3 through SageMaker's ``invoke_endpoint`` against freight's own real-time route, in
one sitting (bench/README.md).

    .venv/bin/python bench/interop.py [--rounds 3] [--duration 10]

Serves ``examples/`` (embedded shape) like bench.py, with keys required: a bearer key
for ``POST /v1/models/echo/predict`` and a SigV4 pair for ``POST
/endpoints/echo/invocations``. wrk sends the same 1 KB JSON body to both, 32
connections, one run each per round (the first of a round rotates); the SageMaker
route is also run with the bearer key (its cost apart from the signature's);
the SageMaker request carries a signature botocore computed once (SigV4 allows a
signed request to be sent again within 15 minutes of its X-Amz-Date), so the server
checks a real signature on every request. Prints one JSON line per route and round
(with the server's CPU per request: the routes' cost, which other load on the machine
does not change as it changes req/s), then the medians and the ratios. Bounded: every
run has its duration, every wait a deadline.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # bench/bench.py: the server process, wrk and its parsing

BODY = json.dumps({"id": 1, "blob": bench.BLOB})


def _lua(path: Path, headers: dict[str, str]) -> Path:
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(BODY)}"]
    lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _signed_headers(url: str, key_id: str, secret: str) -> dict[str, str]:
    """The headers of one invoke_endpoint request, signed by botocore as boto3 signs."""
    request = AWSRequest(
        method="POST", url=url, data=BODY.encode(), headers={"Content-Type": "application/json"}
    )
    SigV4Auth(Credentials(key_id, secret), "sagemaker", "us-east-1").add_auth(request)
    return {
        k: v.decode() if isinstance(v, bytes) else v
        for k, v in request.headers.items()
        if k.lower() in ("content-type", "x-amz-date", "authorization")
    }


def _run(
    name: str, url: str, lua: Path, duration_s: int, round_: int, server_pid: int
) -> dict[str, Any]:
    """One wrk run, with the CPU the server (and its runners) spent per request: what a
    route costs, whatever else the machine runs meanwhile."""
    cpu0 = bench.tree_cpu_s(server_pid)
    result = bench._wrk(url, lua, duration_s)
    cpu = bench.tree_cpu_s(server_pid) - cpu0
    requests = (result["rps"] or 0) * duration_s
    return bench.emit(
        f"B3-{name}",
        round=round_,
        tool=f"wrk -t1 -c{bench.B3_CONNECTIONS} -d{duration_s}s",
        server_cpu_ms_per_request=cpu * 1000 / requests if requests else None,
        **result,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=bench.B3_DURATION_S)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not installed (apt-get install wrk)")
    with tempfile.TemporaryDirectory(prefix="freight-interop-", dir=bench.ROOT) as tmp:
        state = Path(tmp)
        server = bench.ServerProcess(state)
        try:
            bearer = server.make_key()
            auth = {"authorization": f"Bearer {bearer}"}
            made = httpx.post(
                f"{server.url}/v1/keys",
                json={"tenant": "bench", "sigv4": True},
                headers=auth,
                timeout=30,
            )
            made.raise_for_status()
            pair = made.json()
            native_url = f"{server.url}/v1/models/echo/predict"
            sagemaker_url = f"{server.url}/endpoints/echo/invocations"
            native = _lua(
                state / "native.lua",
                {"Content-Type": "application/json", "Authorization": auth["authorization"]},
            )
            signed = _signed_headers(
                sagemaker_url, pair["access_key_id"], pair["secret_access_key"]
            )
            sagemaker = _lua(state / "sagemaker.lua", signed)
            # the SageMaker route with the bearer key too: the route's own cost, apart
            # from the signature's
            bearer_lua = _lua(
                state / "sagemaker-bearer.lua",
                {"Content-Type": "application/json", "Authorization": auth["authorization"]},
            )
            runs = {
                "native": (native_url, native),
                "sagemaker": (sagemaker_url, sagemaker),
                "sagemaker-bearer": (sagemaker_url, bearer_lua),
            }
            for name, (url, lua) in runs.items():  # warm both: replicas, connections, caches
                bench._wrk(url, lua, bench.B3_WARMUP_S)
                answer = httpx.post(url, content=BODY, headers=_headers_of(lua), timeout=30)
                if answer.status_code != 200 or answer.json() != json.loads(BODY):
                    raise SystemExit(f"{name}: {answer.status_code} {answer.text[:300]}")
            results: dict[str, list[dict[str, Any]]] = {name: [] for name in runs}
            for round_ in range(args.rounds):
                order = list(runs)[round_ % len(runs) :] + list(runs)[: round_ % len(runs)]
                for name in order:
                    url, lua = runs[name]
                    results[name].append(
                        _run(name, url, lua, args.duration, round_, server.proc.pid)
                    )
        finally:
            server.stop()
    medians = {
        name: {
            key: statistics.median(r[key] for r in rows if r[key] is not None)
            for key in ("rps", "p50_ms", "p99_ms", "server_cpu_ms_per_request")
        }
        for name, rows in results.items()
    }
    bench.emit(
        "B3-interop-summary",
        rounds=args.rounds,
        native=medians["native"],
        sagemaker=medians["sagemaker"],
        sagemaker_bearer=medians["sagemaker-bearer"],
        sagemaker_rps_vs_native=medians["sagemaker"]["rps"] / medians["native"]["rps"],
        sagemaker_cpu_vs_native=medians["sagemaker"]["server_cpu_ms_per_request"]
        / medians["native"]["server_cpu_ms_per_request"],
        non2xx=sum(r["non2xx"] for rows in results.values() for r in rows),
    )


def _headers_of(lua: Path) -> dict[str, str]:
    """The headers a wrk script sets (to check the route answers before timing it)."""
    headers: dict[str, str] = {}
    for line in lua.read_text().splitlines():
        if line.startswith("wrk.headers["):
            key, _, value = line.removeprefix("wrk.headers[").partition("] = ")
            headers[json.loads(key)] = json.loads(value)
    return headers


if __name__ == "__main__":
    main()
