"""The usage ledger through crashes, in both shapes: a process SIGKILLed mid-batch
leaves no line for what it was running (nothing ended), and once the predictions are
rerun and end, the ledger holds exactly one line's worth per prediction ended.

The ledger is read straight from the server's database, like ``helpers.stored``.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from freight.ledger import UsageLine
from freight.store import open_store
from freight.usage import UsageService
from tests.fixtures.server import FREIGHT, Server, wait_until
from tests.integration.helpers import create, gate_input, gate_runs, stored, wait_done

pytestmark = pytest.mark.slow

SECRET = {"FREIGHT_SECRET_KEY": "s" * 32}  # one key for every process of a cluster
N = 10


def ledger(env: Mapping[str, str]) -> list[UsageLine]:
    """Every line of the server's ledger, per tenant, target, kind and status."""
    url = env.get("FREIGHT_DATABASE_URL") or (
        f"sqlite:///{(Path(env['FREIGHT_STATE_DIR']) / 'freight.db').resolve()}"
    )

    async def read() -> list[UsageLine]:
        store = open_store(url)
        await store.open()
        try:
            return await UsageService(store).report(
                tenant=None,
                start=0.0,
                end=time.time() + 3600,
                group_by=("tenant", "target", "kind", "status"),
            )
        finally:
            await store.close()

    return asyncio.run(read())


def check_ledger(env: Mapping[str, str], ids: list[str]) -> UsageLine:
    """One line's worth per prediction: N succeeded, nothing else, nothing doubled; the
    queue seconds those of the rows (queued -> last started)."""
    lines = ledger(env)
    assert [(u.tenant, u.target, u.kind, u.status, u.count) for u in lines] == [
        ("default", "gate", "model", "succeeded", N)
    ]
    (line,) = lines
    rows = stored(env, ids).values()
    waited = sum((r.started_at or 0.0) - (r.queued_at or 0.0) for r in rows)
    assert line.queue_s == pytest.approx(waited)
    assert line.compute_s > 0  # the reruns' batches, each shared by its predictions
    assert line.bytes_in == sum(r.input_bytes or 0 for r in rows)
    assert line.bytes_out == sum(r.output_bytes or 0 for r in rows)
    return line


@pytest.mark.parametrize("shape", ["embedded"], indirect=True)
def test_a_server_killed_mid_batch_records_each_prediction_once(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    """The embedded server SIGKILLed with two batches running: its restart requeues them
    (no line: nothing ended), reruns them, and the ledger and the restarted process's
    counters hold each prediction once."""
    gate = tmp_path / "gate"
    gate.mkdir()
    server = make_server(models=["_Gate"])
    with server.client() as client:
        ids = [create(client, "gate", gate_input(gate, i))["id"] for i in range(N)]
    # both replicas hold a batch, waiting for the gate
    wait_until(lambda: len({run[0] for i in range(N) for run in gate_runs(gate, i)}) == 2)
    server.signal(signal.SIGKILL)  # the server and its runners, mid-batch
    server.wait_exit()
    ran = {i for i in range(N) if gate_runs(gate, i)}
    assert ledger(server.env) == []  # nothing had ended
    (gate / "open").touch()
    restarted = make_server(models=["_Gate"])
    with restarted.client() as client:
        done = [wait_done(client, i, timeout_s=90) for i in ids]
        assert [p["status"] for p in done] == ["succeeded"] * N
        assert [p["attempts"] for p in done] == [2 if i in ran else 1 for i in range(N)]
        exposition = client.get("/metrics").text
        window = {"from": "0", "to": str(int(time.time()) + 3600)}
        shown = client.get("/v1/usage", params={**window, "group_by": "tenant,model,status"})
    line = check_ledger(restarted.env, ids)
    assert shown.status_code == 200, shown.text
    (data,) = shown.json()["data"]  # the route reads the same ledger
    assert (data["tenant"], data["target"], data["status"], data["count"]) == (
        "default",
        "gate",
        "succeeded",
        N,
    )
    assert data["compute_s"] == pytest.approx(line.compute_s, abs=1e-6)
    printed = subprocess.run(
        [*FREIGHT, "--url", restarted.url, "usage", "--from", "0", "--csv", "--group-by", "model"],
        capture_output=True,
        text=True,
        env=restarted.env,
        timeout=60,
        check=True,
    ).stdout
    assert printed.splitlines()[:2] == [
        "target,count,compute_s,gpu_s,queue_s,cold_start_s,bytes_in,bytes_out",
        f"gate,{N},{data['compute_s']},{data['gpu_s']},{data['queue_s']},"
        f"{data['cold_start_s']},{data['bytes_in']},{data['bytes_out']}",
    ]
    counted = {
        (s.labels["tenant"], s.labels["target"], s.labels["status"]): s.value
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
        if s.name == "freight_usage_predictions_total"
    }
    assert counted == {("default", "gate", "succeeded"): N}


@pytest.mark.parametrize("shape", ["cluster"], indirect=True)
def test_a_worker_killed_mid_batch_records_each_prediction_once(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    """Cluster shape (PostgreSQL, `freight api` and two `freight worker`s): the worker
    SIGKILLed mid-batch ends nothing; the survivor reruns its predictions once their
    leases expire, and the ledger holds each prediction once."""
    gate = tmp_path / "gate"
    gate.mkdir()
    api = make_server(models=["_Gate"], command="api", **SECRET)
    with api.client() as client:
        ids = [create(client, "gate", gate_input(gate, i))["id"] for i in range(N)]
    doomed = make_server(models=["_Gate"], command="worker", **SECRET)
    wait_until(lambda: sum(len(gate_runs(gate, i)) for i in range(N)) == 8)
    survivor = make_server(models=["_Gate"], command="worker", **SECRET)
    wait_until(lambda: all(gate_runs(gate, i) for i in range(N)))  # the last 2 run there
    doomed.signal(signal.SIGKILL)  # the worker and its runners, mid-batch
    doomed.wait_exit()
    assert ledger(api.env) == []  # nothing had ended
    (gate / "open").touch()
    with api.client() as client:
        done = [wait_done(client, i, timeout_s=90) for i in ids]
    assert [p["status"] for p in done] == ["succeeded"] * N
    assert sorted(p["attempts"] for p in done) == [1, 1] + [2] * 8
    check_ledger(api.env, ids)
    survivor.signal(signal.SIGTERM)
    assert survivor.wait_exit() == 0
