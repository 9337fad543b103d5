"""freight.views.render: the one prediction view of GET, SSE and notifications.

Presigning is the caller's (a function of the key); here it is a plain function
that names the key, so what got a URL, and for which key, is visible.
"""

from __future__ import annotations

from typing import Any

import orjson

from freight.pipelines.refs import reference_key
from freight.prediction import Kind, Prediction, Status
from freight.views import as_started, has_references, render

T0 = 1_700_000_000.0
RUN_ID = "0193b7c2-0000-7000-8000-0000000000aa"


async def presign(key: str) -> str:
    return f"https://dl.example/{key}"


def row(**fields: Any) -> Prediction:
    base: dict[str, Any] = {
        "id": "0193b7c2-0000-7000-8000-000000000001",
        "target": "iris",
        "status": Status.SUCCEEDED,
        "created_at": T0,
        "queued_at": T0 + 0.001,
        "started_at": T0 + 0.011,
        "finished_at": T0 + 0.051,
        "attempts": 1,
    }
    return Prediction(**(base | fields))


def ref(key: str) -> dict[str, Any]:
    return {"object": f"freight://{key}", "content_type": "application/json", "bytes": 4000}


def plain(body: dict[str, Any]) -> dict[str, Any]:
    parsed: dict[str, Any] = orjson.loads(orjson.dumps(body))
    return parsed


async def test_an_output_kept_as_an_object_gets_its_url() -> None:
    """A large output (an object, nothing inline) renders with its presigned URL."""
    body = plain(await render(row(output_key="outputs/a", output_bytes=4000), presign))
    assert body["output"] is None and body["output_url"] == "https://dl.example/outputs/a"


async def test_an_inline_output_gets_no_url() -> None:
    """A model's output kept inline (and as an object) is shown inline, with no URL."""
    body = plain(await render(row(output_json='{"a":1}', output_key="outputs/a"), presign))
    assert body["output"] == {"a": 1} and body["output_url"] is None


async def test_references_in_a_runs_output_get_urls() -> None:
    """Each reference freight recorded in a run's output gets a url; a caller's value
    shaped like a reference (its own object, or another prediction's) does not."""
    output = {
        "a": ref("outputs/step-a"),
        "b": [ref("inputs/run.1a2b")],
        "mine": ref("datasets/x.json"),
        "forged": ref("outputs/someone-else"),
        "n": 3,
    }
    run = row(
        kind=Kind.PIPELINE,
        output_json=orjson.dumps(output).decode(),
        output_refs=orjson.dumps(["inputs/run.1a2b", "outputs/step-a"]).decode(),
    )
    body = plain(await render(run, presign, steps=[]))
    assert body["output"]["a"]["url"] == "https://dl.example/outputs/step-a"
    assert body["output"]["b"][0]["url"] == "https://dl.example/inputs/run.1a2b"
    assert "url" not in body["output"]["mine"] and "url" not in body["output"]["forged"]
    assert body["output"]["n"] == 3 and body["output_url"] is None


async def test_a_models_output_is_never_read_for_references() -> None:
    """A model's own JSON that looks like a reference is its output, left as it is."""
    model = row(output_json=orjson.dumps({"x": ref("outputs/a")}).decode())
    assert not has_references(model)
    assert plain(await render(model, presign))["output"] == {"x": ref("outputs/a")}


async def test_steps_get_urls_for_objects_and_references() -> None:
    """A run's steps: a step kept as an object gets output_url; a nested run's output
    holding a reference gets the reference's url."""
    steps = [
        row(id="s1", run_id=RUN_ID, step="classify", output_key="outputs/s1"),
        row(
            id="s2",
            run_id=RUN_ID,
            step="inner",
            kind=Kind.PIPELINE,
            output_json=orjson.dumps({"c": ref("outputs/s9")}).decode(),
            output_refs='["outputs/s9"]',
        ),
    ]
    body = plain(await render(row(id=RUN_ID, kind=Kind.PIPELINE), presign, steps=steps))
    assert body["steps"]["classify"]["output_url"] == "https://dl.example/outputs/s1"
    assert body["steps"]["inner"]["output"]["c"]["url"] == "https://dl.example/outputs/s9"


def test_reference_key_takes_exact_references_only() -> None:
    """Only a dict of exactly object/content_type/bytes naming freight:// is one."""
    assert reference_key(ref("outputs/a")) == "outputs/a"
    assert reference_key(ref("outputs/a") | {"extra": 1}) is None
    assert reference_key({"object": "s3://b/outputs/a", "content_type": None, "bytes": 1}) is None
    assert reference_key(["outputs/a"]) is None


def test_as_started_is_the_row_as_that_attempt_started() -> None:
    """A finished row seen by its started event: running, no end, output or error; the
    start time of that attempt (the event's time once a later attempt restarted)."""
    finished = row(
        status=Status.FAILED,
        attempts=2,
        output_json="1",
        output_key="outputs/a",
        error_code="model_error",
        error_message="boom",
        batch_size=4,
    )
    same = as_started(finished, 2, T0 + 5)
    assert (same.status, same.attempts, same.started_at) == (Status.RUNNING, 2, T0 + 0.011)
    assert (same.finished_at, same.output_json, same.output_key, same.error_code) == (
        None,
        None,
        None,
        None,
    )
    earlier = as_started(finished, 1, T0 + 0.005)
    assert (earlier.attempts, earlier.started_at) == (1, T0 + 0.005)
    assert finished.status == Status.FAILED  # the row itself is left as it was
