"""A pipeline run's input: read by its templates as an inline one, or refused up front.

The rule (:mod:`freight.pipelines.inputs`) on parsed pipelines, then the service's
upload and ``input_uri`` paths on a real SQLite store and the in-memory object
store: what lands on the run's row, what its first step is queued with, and that
a refused input leaves the prediction awaiting and no object behind.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from freight.config import Settings
from freight.errors import InvalidRequestError, PayloadTooLargeError, UnsupportedMediaTypeError
from freight.events import CompletionHub, WorkSignal
from freight.media import is_json_value_type
from freight.model import Batching, InputKind, Replicas
from freight.pipelines import parse_pipelines
from freight.pipelines.inputs import reads_into_input
from freight.prediction import Status
from freight.project import load_pipelines
from freight.registry import ModelSpec
from freight.service import CreateOptions, NewInput, PredictionService
from freight.storage.memory import MemoryStorage
from freight.store import open_store
from freight.store.base import Store

MAX_JSON = 4096
PIPELINES: dict[str, Any] = {
    "mapped": {"steps": {"a": {"model": "m", "input": {"rows": "$input.rows"}}}},
    "whole": {"steps": {"a": {"model": "m"}}, "output": "$steps.a.output"},
    "nests_whole": {"steps": {"n": {"pipeline": "mapped", "input": "$input"}}},
    "nests_field": {"steps": {"n": {"pipeline": "whole", "input": "$input.x"}}},
    "nests_whole_whole": {"steps": {"n": {"pipeline": "whole", "input": "$input"}}},
    "condition": {"steps": {"a": {"model": "m", "when": "input.go"}}},
    "fan": {"steps": {"a": {"model": "m", "for_each": "$input"}}},
    "echoes": {"steps": {"a": {"model": "m"}}, "output": {"in": "$input.x"}},
}
SPEC = ModelSpec(
    name="m",
    ref="models:M",
    input_kind=InputKind.BYTES,
    batching=Batching(),
    replicas=Replicas(),
    timeout_s=None,
    max_attempts=None,
)


def test_which_pipelines_read_into_their_input() -> None:
    """A field, a condition or a for_each over $input reads into it, directly or in a
    pipeline it hands its whole input to; taking $input whole does not."""
    specs = parse_pipelines(PIPELINES, targets={"m"})
    reads = {name: reads_into_input(spec, specs.__getitem__) for name, spec in specs.items()}
    assert reads == {
        "mapped": True,
        "whole": False,
        "nests_whole": True,
        "nests_field": True,
        "nests_whole_whole": False,
        "condition": True,
        "fan": True,
        "echoes": True,
    }


def test_json_value_types() -> None:
    """application/json, text/json and +json are one JSON value; JSON Lines is not."""
    assert is_json_value_type("application/json; charset=utf-8")
    assert is_json_value_type("application/vnd.iris+json")
    assert not is_json_value_type("application/jsonl")
    assert not is_json_value_type("text/csv")


@pytest.fixture
async def store(sqlite_url: str) -> AsyncIterator[Store]:
    s = open_store(sqlite_url)
    await s.open()
    yield s
    await s.close()


@pytest.fixture
def storage() -> MemoryStorage:
    return MemoryStorage()


@pytest.fixture
def service(tmp_path: Path, store: Store, storage: MemoryStorage) -> PredictionService:
    (tmp_path / "freight.yaml").write_text(orjson.dumps({"pipelines": PIPELINES}).decode())
    settings = Settings(
        project_dir=tmp_path,
        state_dir=tmp_path / "state",
        max_json_bytes=MAX_JSON,
        poll_interval_s=3600.0,
    )
    return PredictionService(
        settings,
        {"m": SPEC},
        store,
        storage,
        signal=WorkSignal(),
        hub=CompletionHub(),
        pipelines=load_pipelines(tmp_path, {"m": SPEC}, settings),
    )


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def awaiting(service: PredictionService, target: str) -> str:
    row = await service.create(target, NewInput(), CreateOptions())
    assert row.status == Status.AWAITING_INPUT
    return row.id


async def first_step_input(service: PredictionService, run_id: str) -> Any:
    (step,) = await service.steps(run_id)
    assert step.status == Status.QUEUED and step.input_json is not None
    return orjson.loads(step.input_json)


async def test_a_json_upload_is_kept_and_read_by_templates(service: PredictionService) -> None:
    """An uploaded JSON body (in pieces, of a +json type) lands on the run's row and its
    step is queued with the rendered template, as for an inline input."""
    run_id = await awaiting(service, "mapped")
    row = await service.upload(
        run_id, chunks(b'{"rows": [[1, 2', b", 3, 4]]}"), "application/vnd.x+json"
    )
    assert row.status == Status.RUNNING and row.input_json == '{"rows":[[1,2,3,4]]}'
    assert row.input_key is not None
    assert await first_step_input(service, run_id) == {"rows": [[1, 2, 3, 4]]}


async def test_an_invalid_json_upload_leaves_the_run_awaiting(
    service: PredictionService, storage: MemoryStorage
) -> None:
    """Invalid JSON is 400 invalid_json; the run still awaits its input, no object."""
    run_id = await awaiting(service, "mapped")
    with pytest.raises(InvalidRequestError) as caught:
        await service.upload(run_id, chunks(b'{"rows": ['), "application/json")
    assert caught.value.code == "invalid_json"
    row = await service.get(run_id)
    assert (row.status, row.input_key) == (Status.AWAITING_INPUT, None)
    assert [info async for info in storage.list("inputs/")] == []


async def test_unreadable_uploads_are_refused_before_the_run_starts(
    service: PredictionService, storage: MemoryStorage
) -> None:
    """Bytes are 415 before a byte is stored; JSON past max_json_bytes is 413
    json_input_too_large; both leave the run awaiting and no object."""
    run_id = await awaiting(service, "nests_whole")
    with pytest.raises(UnsupportedMediaTypeError):
        await service.upload(run_id, chunks(b"1,2,3,4\n"), "text/csv")
    big = orjson.dumps({"rows": [], "pad": "x" * MAX_JSON})
    with pytest.raises(PayloadTooLargeError) as caught:
        await service.upload(run_id, chunks(big[:100], big[100:]), "application/json")
    assert caught.value.code == "json_input_too_large"
    assert caught.value.detail == {"size": len(big), "limit": MAX_JSON}
    assert (await service.get(run_id)).status == Status.AWAITING_INPUT
    assert [info async for info in storage.list("inputs/")] == []


async def test_a_pipeline_taking_its_input_whole_takes_any(service: PredictionService) -> None:
    """Bytes and large JSON reach a pipeline that takes $input whole by reference."""
    for body, content_type in [
        (b"1,2,3,4\n", "text/csv"),
        (b"[" + b"0," * MAX_JSON + b"0]", "application/json"),
    ]:
        run_id = await awaiting(service, "whole")
        row = await service.upload(run_id, chunks(body), content_type)
        assert row.input_json is None and row.input_bytes == len(body)
        (step,) = await service.steps(run_id)
        assert (step.status, step.input_key, step.input_json) == (
            Status.QUEUED,
            row.input_key,
            None,
        )


async def test_an_input_uri_of_a_batch_jobs_working_objects_is_refused(
    service: PredictionService, storage: MemoryStorage
) -> None:
    """input_uri naming a batch job's chunk objects is 400 invalid_location (the rule of
    keys.readable, as for a job's input); a job's output may be read."""
    await storage.put("batch/j/chunks/0-0.in", b'{"rows": []}')
    await storage.put("batch/j/output/x.jsonl.out", b'{"rows": []}')
    with pytest.raises(InvalidRequestError) as refused:
        await service.create(
            "whole", NewInput(uri="freight://batch/j/chunks/0-0.in"), CreateOptions()
        )
    assert refused.value.code == "invalid_location"
    uri = "freight://batch/j/output/x.jsonl.out"
    row = await service.create("whole", NewInput(uri=uri), CreateOptions())
    assert row.input_key == "batch/j/output/x.jsonl.out"


async def test_an_input_uri_object_is_read_like_an_upload(
    service: PredictionService, storage: MemoryStorage
) -> None:
    """A JSON object named by input_uri is parsed onto the run's row; bytes for a
    pipeline that reads into its input are 415, and nothing is created."""
    await storage.put("data/in.json", b'{"rows": [[5, 6, 7, 8]]}', content_type="application/json")
    row = await service.create("mapped", NewInput(uri="freight://data/in.json"), CreateOptions())
    assert row.input_json == '{"rows":[[5,6,7,8]]}' and row.input_key == "data/in.json"
    assert await first_step_input(service, row.id) == {"rows": [[5, 6, 7, 8]]}
    await storage.put("data/in.csv", b"1,2,3,4\n", content_type="text/csv")
    with pytest.raises(UnsupportedMediaTypeError):
        await service.create("mapped", NewInput(uri="freight://data/in.csv"), CreateOptions())
    assert len(await service.list(target="mapped", status=None, after_id=None, limit=9)) == 1
