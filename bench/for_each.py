"""The advancement cost of a ``for_each`` step, straight on the store (B4's companion).

    .venv/bin/python bench/pipeline.py --for-each 100,1000,10000 [--database-url URL]

A run of one step fanning out over N elements of a model no worker serves; this
process claims and completes the elements one at a time, as a worker with
``max_size=1`` would, so each completion is one transaction that advances the
run. Measured: the wall time of those N completions (the database and the
advancement, nothing else), per element. Linear advancement keeps the time per
element flat as N grows; a run re-read whole at each completion grows it with
N. Each N has a deadline (``--deadline-s``): past it the figure is a lower
bound (``finished: false``) and the remaining elements are left.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import emit

from freight.ids import new_id
from freight.pipelines.runs import Bundle, bundle_of, step_rows
from freight.pipelines.spec import build_pipeline
from freight.prediction import Completion, Prediction, Status
from freight.store import migrate, open_store

PIPELINE = "fan"
MODEL = "m"
RAW = {
    "steps": {"each": {"model": MODEL, "for_each": "$input.items", "input": "$item"}},
    "output": "$steps.each.output",
}


def _run(n: int) -> tuple[Prediction, list[Prediction]]:
    bundle = Bundle(
        pipelines={PIPELINE: RAW},
        targets={MODEL: "model", PIPELINE: "pipeline"},
        models={MODEL: {"timeout_s": 3600, "max_attempts": 3}},
    )
    text = bundle.dumps()
    now = time.time()
    run = Prediction(
        id=new_id(),
        target=PIPELINE,
        kind="pipeline",  # type: ignore[arg-type]  # a str before the Kind enum existed
        status=Status.RUNNING,
        created_at=now,
        queued_at=now,
        started_at=now,
        max_attempts=1,
        timeout_s=3600.0,
        lease_expires_at=now + 3600,
        definition=text,
        input_json='{"items": [' + ",".join(str(i) for i in range(n)) + "]}",
    )
    spec = build_pipeline(PIPELINE, RAW)
    return run, step_rows(spec, run, bundle_of(text), new_id)


async def measure(url: str, n: int, deadline_s: float) -> dict[str, Any]:
    store = open_store(url)
    await store.open()
    try:
        run, steps = _run(n)
        started = time.perf_counter()
        await store.create_run(run, steps)
        create_s = time.perf_counter() - started
        done, spent = 0, 0.0
        while done < n and spent < deadline_s:
            (row,) = await store.claim(MODEL, 1, worker_id="bench", lease_s=600, now=time.time())
            completion = Completion(
                id=row.id,
                attempt=row.attempts,
                worker_id="bench",
                status=Status.SUCCEEDED,
                finished_at=time.time(),
                output_json=str(done),
            )
            t0 = time.perf_counter()
            await store.complete([completion])
            spent += time.perf_counter() - t0
            done += 1
        final = await store.get(run.id)
        status = None if final is None else str(final.status)
        return emit(
            "B4-for_each",
            elements=n,
            completed=done,
            finished=done == n and status == "succeeded",
            run_status=status,
            create_ms=create_s * 1000,
            complete_s=spent,
            per_element_us=spent / max(done, 1) * 1e6,
        )
    finally:
        await store.close()


def for_each(sizes: list[int], database_url: str | None, deadline_s: float) -> None:
    """One JSON line per size (a fresh SQLite file each, unless a database is given)."""
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="bench-fe-") as tmp:
            url = database_url or f"sqlite:///{Path(tmp) / 'freight.db'}"
            migrate(url)
            asyncio.run(measure(url, n, deadline_s))
