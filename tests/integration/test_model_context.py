"""``freight.context()`` in a real runner: the model learns its prediction's id, attempt,
deadline and origin (a pipeline step, a batch job's chunk) from the claimed row."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.fixtures.server import Server
from tests.integration.helpers import create, wait_done

pytestmark = pytest.mark.slow

TIMEOUT_S = 30.0  # the model's timeout_s: its deadline is this long after dispatch

MODELS = f'''
    import dataclasses
    import os
    import signal

    import freight


    class Introspect(freight.Model):
        """Answers with its context; kills its own runner on the attempts listed in
        input["die_on"] (a crash the agent counts as an attempt)."""

        name = "introspect"
        max_attempts = 3
        timeout_s = {TIMEOUT_S}

        def predict(self, input):
            ctx = freight.context()
            if isinstance(input, dict) and ctx.attempt in input.get("die_on", []):
                os.kill(os.getpid(), signal.SIGKILL)
            return dataclasses.asdict(ctx)


    class BatchIntrospect(freight.Model):
        """predict_batch answering each input with its own context."""

        name = "batch-introspect"
        batching = freight.Batching(max_size=8, max_wait_ms=0)

        def predict_batch(self, inputs):
            return [dataclasses.asdict(c) for c in freight.contexts()]


    steps = freight.Pipeline(
        "steps",
        steps={{
            "first": freight.Step(model="introspect", input={{}}),
            "each": freight.Step(model="introspect", for_each="$input.xs"),
        }},
        output={{"first": "$steps.first.output", "each": "$steps.each.output"}},
    )
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project with the two introspecting models and a pipeline of them."""
    root = tmp_path / "context_project"
    root.mkdir()
    (root / "models.py").write_text(textwrap.dedent(MODELS))
    return root


def test_a_model_reads_its_id_attempt_and_deadline(
    make_server: Callable[..., Server], project: Path
) -> None:
    """A prediction whose runner died on its first attempt reads, on the second, its own
    id, attempt 2 of 3, and a deadline timeout_s after its batch was dispatched."""
    server = make_server(project=project)
    with server.client() as client:
        before = time.time()
        created = create(client, "introspect", {"die_on": [1]})
        done = wait_done(client, created["id"])
        after = time.time()
    assert done["status"] == "succeeded", done
    ctx = done["output"]
    assert (ctx["prediction_id"], ctx["attempt"], ctx["max_attempts"]) == (created["id"], 2, 3)
    assert done["attempts"] == 2
    assert before <= ctx["deadline"] - TIMEOUT_S <= after  # dispatched while we waited
    assert (ctx["run_id"], ctx["step"], ctx["item_index"], ctx["job_id"]) == (None,) * 4


def test_predict_batch_reads_one_context_per_input(
    make_server: Callable[..., Server], project: Path
) -> None:
    """Each output of a predict_batch model is the context of its own input."""
    server = make_server(project=project)
    with server.client() as client:
        ids = [create(client, "batch-introspect", {"n": n})["id"] for n in range(6)]
        done = [wait_done(client, i) for i in ids]
    assert [d["output"]["prediction_id"] for d in done] == ids
    assert all(d["output"]["attempt"] == 1 for d in done)


def test_a_pipeline_step_reads_its_run_step_and_element(
    make_server: Callable[..., Server], project: Path
) -> None:
    """A pipeline's steps read the run's id, their step's name and, under for_each, the
    index of their element."""
    server = make_server(project=project)
    with server.client() as client:
        run = create(client, "steps", {"xs": [10, 20]})
        done = wait_done(client, run["id"])
    assert done["status"] == "succeeded", done
    first, each = done["output"]["first"], done["output"]["each"]
    assert (first["run_id"], first["step"], first["item_index"]) == (run["id"], "first", None)
    assert [(e["run_id"], e["step"], e["item_index"]) for e in each] == [
        (run["id"], "each", 0),
        (run["id"], "each", 1),
    ]
    assert first["prediction_id"] not in {run["id"], *(e["prediction_id"] for e in each)}


@pytest.mark.parametrize("shape", ["embedded"], indirect=True)
def test_a_batch_jobs_records_read_the_job_id(
    make_server: Callable[..., Server], project: Path
) -> None:
    """Every record of a batch job runs as its chunk's prediction, naming the job."""
    from tests.integration.test_batch_jobs import fetch, jsonl, read_jsonl, submit, wait_job

    server = make_server(project=project)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        job = wait_job(
            client, submit(client, "batch-introspect", {"d.jsonl": jsonl([{}] * 3)})["id"]
        )
        assert job["status"] == "succeeded", job
        records = read_jsonl(fetch(job["outputs"][0]["output_url"]))
    assert [r["job_id"] for r in records] == [job["id"]] * 3
    assert records[0]["prediction_id"].startswith(f"{job['id']}.")
