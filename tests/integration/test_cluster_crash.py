"""The cluster shape under crashes: two `freight worker`s and a `freight api` on PostgreSQL + S3.

A worker SIGKILLed mid-batch loses its leases, and the other worker takes its
predictions over; the API process killed and restarted loses nothing accepted.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.server import Server, wait_until
from tests.integration.helpers import create, gate_input, gate_runs, wait_done

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("shape", ["cluster"], indirect=True)]

SECRET = {"FREIGHT_SECRET_KEY": "s" * 32}  # one key for every process of the cluster


def test_killed_worker_is_taken_over_and_api_restart_loses_nothing(
    make_server: Callable[..., Server],
    tmp_path: Path,
) -> None:
    """Predictions of a worker SIGKILLed mid-batch are rerun by the other worker once
    their leases expire; predictions accepted before an API crash all succeed through
    the restarted API; every other prediction runs exactly once."""
    gate = tmp_path / "gate"
    gate.mkdir()
    api = make_server(models=["_Gate"], command="api", **SECRET)
    with api.client() as client:
        # queued before any worker exists: the first worker's 2 replicas take 4 each
        ids = [create(client, "gate", gate_input(gate, i))["id"] for i in range(10)]
    doomed = make_server(models=["_Gate"], command="worker", **SECRET)
    assert doomed.proc is not None
    wait_until(lambda: sum(len(gate_runs(gate, i)) for i in range(10)) == 8)
    survivor = make_server(models=["_Gate"], command="worker", **SECRET)
    assert survivor.proc is not None
    wait_until(lambda: all(gate_runs(gate, i) for i in range(10)))
    first = {i: gate_runs(gate, i)[0][1] for i in range(10)}  # tag -> agent pid
    killed = sorted(i for i, agent in first.items() if agent == doomed.proc.pid)
    kept = sorted(i for i, agent in first.items() if agent == survivor.proc.pid)
    assert (len(killed), len(kept)) == (8, 2), first

    doomed.signal(signal.SIGKILL)  # the worker and its runners, mid-batch
    doomed.wait_exit()
    with api.client() as client:
        late = [create(client, "gate", gate_input(gate, i))["id"] for i in (10, 11)]
    api.signal(signal.SIGKILL)
    api.wait_exit()
    (gate / "open").touch()
    restarted = make_server(models=["_Gate"], command="api", **SECRET)
    with restarted.client() as client:
        done = [wait_done(client, i, timeout_s=90) for i in ids + late]
        assert [p["status"] for p in done] == ["succeeded"] * 12, done
        attempts = {i: done[i]["attempts"] for i in range(12)}
        assert attempts == {i: 2 if i in killed else 1 for i in range(12)}
        listed = client.get("/v1/predictions", params={"limit": 500}).json()["data"]
        assert sorted(p["id"] for p in listed) == sorted(ids + late)
    for i in killed:  # once on the killed worker, then once on the survivor
        assert [agent for _, agent in gate_runs(gate, i)] == [doomed.proc.pid, survivor.proc.pid]
    for i in [*kept, 10, 11]:
        assert [agent for _, agent in gate_runs(gate, i)] == [survivor.proc.pid]
    survivor.signal(signal.SIGTERM)
    assert survivor.wait_exit() == 0  # the survivor drains cleanly


#: predictions of the shared-cluster test (a worker is killed after 30 % are created)
TOTAL = 1000


def _listed(client: httpx.Client) -> list[dict[str, Any]]:
    """Every prediction of ``latch``, 500 to a page."""
    found: list[dict[str, Any]] = []
    params: dict[str, Any] = {"target": "latch", "limit": 500}
    while True:
        page = client.get("/v1/predictions", params=params).json()
        found += page["data"]
        if not page["next_cursor"]:
            return found
        params["cursor"] = page["next_cursor"]


def test_three_workers_two_apis_share_1000_predictions_through_a_kill(
    make_server: Callable[..., Server],
    tmp_path: Path,
) -> None:
    """Three workers and two APIs on one PostgreSQL and one S3: 1,000 predictions
    created through both APIs while one worker is SIGKILLed mid-way all succeed;
    each ran at least once and at most once per attempt (SKIP LOCKED claims and fenced
    completions: only the killed worker's claims, which lease expiry hands over, rerun)."""
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    apis = [make_server(models=["_Latch"], command="api", **SECRET) for _ in range(2)]
    workers = [make_server(models=["_Latch"], command="worker", **SECRET) for _ in range(3)]
    ids: list[str] = []
    clients = [api.client() for api in apis]
    try:
        for n in range(TOTAL):
            ids.append(create(clients[n % 2], "latch", {"dir": str(runs_dir), "n": n})["id"])
            if n == TOTAL * 3 // 10:
                workers[0].signal(signal.SIGKILL)
        # read back 500 to a page until every one ended (not a long-poll each)
        def ended() -> dict[str, dict[str, Any]] | None:
            listed = {p["id"]: p for p in _listed(clients[1])}
            over = all(p["status"] in ("succeeded", "failed") for p in listed.values())
            return listed if len(listed) == TOTAL and over else None

        by_id = wait_until(ended, timeout_s=120, interval_s=0.5)
        done = [by_id[pid] for pid in ids]
    finally:
        for client in clients:
            client.close()
    assert [p["status"] for p in done] == ["succeeded"] * TOTAL
    ran = (runs_dir / "runs").read_text().split()
    counts = {n: 0 for n in range(TOTAL)}
    for n in ran:
        counts[int(n)] += 1
    # A claim the killed worker held but had not yet handed to its runner counts an
    # attempt and no run, so a rerun prediction ran between once and `attempts` times;
    # one claimed once ran exactly once (no duplicate runs without a kill).
    wrong = {
        n: (counts[n], done[n]["attempts"])
        for n in range(TOTAL)
        if not 1 <= counts[n] <= done[n]["attempts"]
    }
    assert wrong == {}, "runs, attempts outside 1 <= runs <= attempts"
    assert sum(1 for p in done if p["attempts"] > 1) <= 64, "more reruns than one batch"
    for worker in workers[1:]:
        worker.signal(signal.SIGTERM)
        assert worker.wait_exit() == 0


def test_a_batch_job_through_an_api_driven_by_a_worker(
    make_server: Callable[..., Server],
) -> None:
    """The split shape: a batch job created and uploaded through `freight api`, driven
    and run by a `freight worker` (the API process has no agent), outputs in order."""
    import httpx

    from tests.integration.test_batch_jobs import fetch, jsonl, read_jsonl, submit, wait_job

    api = make_server(models=["Echo"], command="api", **SECRET)
    make_server(models=["Echo"], command="worker", **SECRET)
    records = [{"i": i} for i in range(1000)]
    with httpx.Client(base_url=api.url, timeout=30) as client:
        job = wait_job(client, submit(client, "echo", {"d.jsonl": jsonl(records)})["id"])
        assert job["status"] == "succeeded", job
        assert read_jsonl(fetch(job["outputs"][0]["output_url"])) == records
