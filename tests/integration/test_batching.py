"""Dynamic batching end to end: bursts become batches, a bad batch fails clearly."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.server import Server, wait_until
from tests.integration.helpers import create, status_of, wait_done

BATCHER = json.dumps(["batching:Batcher"])
BURST = 12


def _create(server: Server, input: dict[str, Any]) -> str:
    with server.client() as client:
        prediction_id: str = create(client, "batcher", input)["id"]
        return prediction_id


def test_a_burst_queued_behind_a_busy_replica_is_batched(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    """Predictions posted concurrently while the replica is busy run as batches of more
    than one, each output and batch_size its own."""
    server = make_server(FREIGHT_MODELS=BATCHER)
    with server.client() as client:
        first = create(client, "batcher", {"n": 0, "gate": str(tmp_path)})["id"]
        wait_until(lambda: status_of(client, first) == "running")
        with ThreadPoolExecutor(4) as pool:
            ids = list(pool.map(lambda n: _create(server, {"n": n}), range(1, BURST + 1)))
        (tmp_path / "open").touch()
        done = [wait_done(client, i) for i in [first, *ids]]
    assert [d["status"] for d in done] == ["succeeded"] * (BURST + 1)
    assert [d["output"]["n"] for d in done] == list(range(BURST + 1))
    assert all(d["output"]["batch"] == d["metrics"]["batch_size"] for d in done)
    assert done[0]["metrics"]["batch_size"] == 1
    assert max(d["metrics"]["batch_size"] for d in done[1:]) > 1


@pytest.mark.parametrize("shape", ["embedded"], indirect=True)
def test_a_wrong_output_count_fails_the_batch_with_batch_mismatch(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    """predict_batch returning too few outputs fails every prediction of that batch with
    batch_mismatch, a message saying why, and the next batch runs normally."""
    server = make_server(FREIGHT_MODELS=BATCHER)
    with server.client() as client:
        first = create(client, "batcher", {"n": 0, "gate": str(tmp_path)})["id"]
        wait_until(lambda: status_of(client, first) == "running")
        short = [create(client, "batcher", {"n": 1, "short": True})["id"]]
        short += [create(client, "batcher", {"n": n})["id"] for n in (2, 3)]
        (tmp_path / "open").touch()
        assert wait_done(client, first)["status"] == "succeeded"
        failed = [wait_done(client, i) for i in short]
        after = wait_done(client, create(client, "batcher", {"n": 4})["id"])
    batch = failed[0]["metrics"]["batch_size"]
    assert batch == 3 and all(f["metrics"]["batch_size"] == batch for f in failed)
    assert [f["status"] for f in failed] == ["failed"] * 3
    assert {f["error"]["code"] for f in failed} == {"batch_mismatch"}
    assert "(2 items) for 3 inputs" in failed[0]["error"]["message"]
    assert after["status"] == "succeeded" and after["output"]["n"] == 4


@pytest.mark.parametrize("shape", ["embedded"], indirect=True)
def test_a_non_json_output_fails_only_its_item(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    """An output that is not JSON-able fails its own prediction with output_error; its
    batch neighbours succeed; the error detail names no server path."""
    server = make_server(FREIGHT_MODELS=BATCHER)
    with server.client() as client:
        first = create(client, "batcher", {"n": 0, "gate": str(tmp_path)})["id"]
        wait_until(lambda: status_of(client, first) == "running")
        ids = [create(client, "batcher", {"n": n, "unjsonable": n == 2})["id"] for n in (1, 2, 3)]
        (tmp_path / "open").touch()
        wait_done(client, first)
        ok1, bad, ok3 = (wait_done(client, i) for i in ids)
    assert bad["metrics"]["batch_size"] == 3
    assert (ok1["status"], ok3["status"]) == ("succeeded", "succeeded")
    assert (ok1["output"]["n"], ok3["output"]["n"]) == (1, 3)
    assert (bad["status"], bad["error"]["code"]) == ("failed", "output_error")
    assert "Type is not JSON serializable: set" in bad["error"]["message"]
    assert "/" not in json.dumps(bad["error"]["detail"])
