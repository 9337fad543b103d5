"""Chunk predictions in the runner: records through BatchServer, objects in storage."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import orjson
import pytest

from freight.batch.spec import CHUNK_MEDIA_TYPE, ChunkSpec, ChunkSummary, Format
from freight.errors import StorageError
from freight.keys import chunk_errors_key
from freight.model import File, Model, Payload
from freight.runner.chunks import CHUNK_READ_MAX_BYTES, is_chunk
from freight.runner.payloads import PayloadIO
from freight.runner.process import BatchServer
from freight.runner.protocol import Batch, BatchItem, Failed, Inline, ResultItem, Stored
from freight.storage.memory import MemoryStorage

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


class Doubler(Model):
    """A JSON batch model: doubles ``x``; a record without one raises in the batch."""

    calls: ClassVar[list[int]] = []

    def predict_batch(self, inputs: list[dict[str, Any]]) -> list[Any]:
        type(self).calls.append(len(inputs))
        return [{"y": i["x"] * 2} if "x" in i else KeyError("x") for i in inputs]


class Lengths(Model):
    """A bytes model: the length of its input and the input itself."""

    def predict(self, input: bytes) -> dict[str, Any]:
        return {"n": len(input), "text": input.decode()}


class Payloads(Model):
    """A Payload model that reads its input every way a model may."""

    seen: ClassVar[list[Payload]] = []

    def predict(self, input: Payload) -> dict[str, Any]:
        type(self).seen.append(input)
        with input.open() as f:
            opened = f.read()
        assert opened == input.read_bytes() == input.path.read_bytes()
        return {"type": input.content_type, "size": input.size, "value": input.json()}


class Mutating(Model):
    """A Payload model that changes the value ``json()`` gave it, then reads it again."""

    def predict(self, input: Payload) -> Any:
        first = input.json()
        first["seen"] = True
        return {"first": first, "again": input.json()}


class Paths(Model):
    """A Path model: the parsed file, and where it was."""

    seen: ClassVar[list[Path]] = []

    def predict(self, input: Path) -> Any:
        type(self).seen.append(input)
        return json.loads(input.read_text())


class Mismatched(Model):
    """predict_batch returning one output too few."""

    def predict_batch(self, inputs: list[Any]) -> list[Any]:
        return inputs[1:]


def server(model: Model, storage: MemoryStorage, tmp_path: Path) -> BatchServer:
    io_ = PayloadIO(storage, type(model).input_kind(), 1 << 20)
    return BatchServer(model, io_, tmp_path)


BASE = "batch/j/chunks/0-0"


def chunk_spec(format: Format = "jsonl", **changes: Any) -> ChunkSpec:
    return replace(ChunkSpec(format=format, first_line=1, objects=BASE), **changes)


def keys_of(storage: MemoryStorage, suffix: str) -> list[str]:
    """The chunk's objects the runner wrote (``.out``, ``.err``), whatever its token."""
    return [k for k in storage.keys() if k.startswith(BASE + ".") and k.endswith(suffix)]  # noqa: SIM118


async def written(storage: MemoryStorage, suffix: str) -> bytes:
    (key,) = keys_of(storage, suffix)
    return await storage.get(key)


def chunk_item(spec: ChunkSpec, key: str = "batch/j/in/0", id: str = "c0") -> BatchItem:
    return BatchItem(id, input_json=spec.to_json(), input_key=key, content_type=CHUNK_MEDIA_TYPE)


async def run(
    model: Model, data: bytes, spec: ChunkSpec, tmp_path: Path
) -> tuple[ResultItem, MemoryStorage]:
    storage = MemoryStorage()
    await storage.put("batch/j/in/0", data)
    result = await server(model, storage, tmp_path).serve(Batch((chunk_item(spec),)))
    (item,) = result.items
    return item, storage


def summary_of(item: ResultItem) -> ChunkSummary:
    assert isinstance(item, Stored) and item.inline_json is not None
    return ChunkSummary.from_json(item.inline_json)


def jsonl(data: bytes) -> list[Any]:
    return [orjson.loads(line) for line in data.splitlines()]


# -- line formats ------------------------------------------------------------------


async def test_a_json_chunk_runs_through_predict_batch(tmp_path: Path) -> None:
    """A JSON Lines chunk runs its records in calls of records_per_call; the output
    object is written and the result is a Stored with the summary."""
    Doubler.calls = []
    data = b'{"x":1}\n{"x":2}\n\n{"x":3}\n'
    item, storage = await run(Doubler(), data, chunk_spec(records_per_call=2), tmp_path)
    assert isinstance(item, Stored)
    assert (item.id, item.content_type) == ("c0", "application/jsonl")
    assert keys_of(storage, ".out") == [item.key]
    output = await written(storage, ".out")
    assert jsonl(output) == [{"y": 2}, {"y": 4}, {"y": 6}]
    assert item.size == len(output)
    assert summary_of(item) == ChunkSummary(3, 0, len(output), 0, None)
    assert Doubler.calls == [2, 1]
    assert not keys_of(storage, ".err")  # no failures: no error object


async def test_failed_records_go_to_the_error_object(tmp_path: Path) -> None:
    """A record the model fails (a returned exception) and a bad line are in the
    error object with their line numbers; the rest are in the output."""
    data = b'{"x":1}\n{"z":0}\nnope\n{"x":4}\n'
    item, storage = await run(Doubler(), data, chunk_spec(first_line=20), tmp_path)
    assert summary_of(item).failed == 2
    assert jsonl(await written(storage, ".out")) == [{"y": 2}, {"y": 8}]
    entries = jsonl(await written(storage, ".err"))
    assert [(e["line"], e["error"]["code"], e["input"]) for e in entries] == [
        (21, "model_error", '{"z":0}'),
        (22, "invalid_record", "nope"),
    ]
    assert entries[0]["error"]["message"] == "KeyError: 'x'"


async def test_batch_mismatch_is_each_records_error(tmp_path: Path) -> None:
    """predict_batch returning the wrong count fails the call's records batch_mismatch."""
    item, storage = await run(Mismatched(), b"1\n2\n", chunk_spec(), tmp_path)
    assert summary_of(item).failed == 2
    codes = {e["error"]["code"] for e in jsonl(await written(storage, ".err"))}
    assert codes == {"batch_mismatch"}
    assert await written(storage, ".out") == b""


async def test_a_bytes_model_gets_raw_lines(tmp_path: Path) -> None:
    """A bytes model gets each record's bytes as in the file; a filtered one as JSON."""
    _, storage = await run(Lengths(), b'{"a": 1}\n[2]\n', chunk_spec(), tmp_path)
    assert jsonl(await written(storage, ".out")) == [
        {"n": 8, "text": '{"a": 1}'},
        {"n": 3, "text": "[2]"},
    ]
    _, storage = await run(Lengths(), b'{"a": {"b": 1}}\n', chunk_spec(input_filter="a"), tmp_path)
    assert jsonl(await written(storage, ".out")) == [{"n": 7, "text": '{"b":1}'}]


async def test_a_payload_model_gets_in_memory_json_records(tmp_path: Path) -> None:
    """A Payload model gets each record in memory as a JSON document (a CSV row as its
    object); a ``path`` it asks for is a file removed after the chunk."""
    Payloads.seen = []
    data = b"a,b\n1,x\n"  # header, then a row: the chunk holds only the row
    spec = chunk_spec("csv", header=["a", "b"], join="input")
    item, storage = await run(Payloads(), data.split(b"\n", 1)[1], spec, tmp_path)
    (payload,) = Payloads.seen
    assert payload.in_memory and not payload.path.exists()
    assert summary_of(item).columns == ["a", "b", "type", "size", "value"]
    rows = list(csv.reader(io.StringIO((await written(storage, ".out")).decode())))
    assert rows == [["1", "x", "application/json", "15", '{"a":1,"b":"x"}']]
    assert isinstance(item, Stored) and item.content_type == "text/csv"


async def test_a_payload_models_json_is_the_record_and_its_own(tmp_path: Path) -> None:
    """A JSON Lines record's Payload answers ``json()`` with the record's value, a fresh
    one each call; what the model changes never reaches the joined input."""
    data = b'{"a":1}\n{"a":[2]}\n'
    _, storage = await run(Mutating(), data, chunk_spec(), tmp_path)
    assert jsonl(await written(storage, ".out")) == [
        {"first": {"a": 1, "seen": True}, "again": {"a": 1}},
        {"first": {"a": [2], "seen": True}, "again": {"a": [2]}},
    ]
    _, storage = await run(Mutating(), data, chunk_spec(join="input"), tmp_path)
    assert [line["input"] for line in jsonl(await written(storage, ".out"))] == [
        {"a": 1},
        {"a": [2]},
    ]


async def test_a_path_model_gets_a_file_per_record_removed_after(tmp_path: Path) -> None:
    """A Path model gets a temporary file per record; none is left after the chunk."""
    Paths.seen = []
    _, storage = await run(Paths(), b'{"k":1}\n{"k":2}\n', chunk_spec(), tmp_path)
    assert jsonl(await written(storage, ".out")) == [{"k": 1}, {"k": 2}]
    assert len(Paths.seen) == 2 and len(set(Paths.seen)) == 2
    assert not any(p.exists() for p in Paths.seen)


async def test_chunks_run_after_the_other_items_of_a_batch(tmp_path: Path) -> None:
    """A chunk in a batch with normal predictions runs alone; every item gets its result,
    in the batch's order."""
    storage = MemoryStorage()
    await storage.put("batch/j/in/0", b'{"x":5}\n')
    batch = Batch(
        (
            BatchItem("p0", input_json='{"x":1}', content_type="application/json"),
            chunk_item(chunk_spec()),
            BatchItem("p1", input_json='{"x":2}', content_type="application/json"),
        )
    )
    Doubler.calls = []
    result = await server(Doubler(), storage, tmp_path).serve(batch)
    assert [i.id for i in result.items] == ["p0", "c0", "p1"]
    assert result.items[0] == Inline("p0", '{"y":2}') and result.items[2] == Inline("p1", '{"y":4}')
    assert isinstance(result.items[1], Stored)
    assert Doubler.calls == [2, 1]
    assert is_chunk(batch.items[1]) and not is_chunk(batch.items[0])


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (chunk_item(chunk_spec(), key="batch/j/missing"), "no object"),
        (BatchItem("c0", input_json="{", input_key="k", content_type=CHUNK_MEDIA_TYPE), ""),
        (
            BatchItem("c0", input_json=chunk_spec().to_json(), content_type=CHUNK_MEDIA_TYPE),
            "no stored",
        ),
        (chunk_item(chunk_spec("csv")), "header"),
        (chunk_item(chunk_spec(output_filter="[[")), "JMESPath"),
    ],
    ids=["missing-object", "bad-spec", "no-key", "csv-without-header", "bad-filter"],
)
async def test_a_chunk_that_cannot_run_fails_as_input_error(
    item: BatchItem, message: str, tmp_path: Path
) -> None:
    """A missing object or a bad spec fails the chunk prediction input_error."""
    storage = MemoryStorage()
    await storage.put("batch/j/in/0", b"1\n")
    result = await server(Doubler(), storage, tmp_path).serve(Batch((item,)))
    (failed,) = result.items
    assert isinstance(failed, Failed) and failed.code == "input_error"
    assert message in failed.message
    assert not keys_of(storage, ".out")


async def test_each_attempt_writes_objects_of_its_own(tmp_path: Path) -> None:
    """Two attempts at one chunk (the first lost its lease and still runs) write under
    different keys: the later one never overwrites what the other reported."""
    storage = MemoryStorage()
    await storage.put("batch/j/in/0", b'{"x":1}\n{"z":0}\n')
    first = await server(Doubler(), storage, tmp_path).serve(Batch((chunk_item(chunk_spec()),)))
    second = await server(Lengths(), storage, tmp_path).serve(Batch((chunk_item(chunk_spec()),)))
    (one,), (two,) = first.items, second.items
    assert isinstance(one, Stored) and isinstance(two, Stored) and one.key != two.key
    assert jsonl(await storage.get(one.key)) == [{"y": 2}]
    assert len(jsonl(await storage.get(two.key))) == 2
    assert sorted(keys_of(storage, ".err")) == [chunk_errors_key(one.key)]


class FailingStorage(MemoryStorage):
    """An object store whose writes fail (a transient outage)."""

    async def put(self, key: str, data: bytes, *, content_type: str | None = None) -> int:
        raise StorageError(f"object store failed on {key!r}: 503 Slow Down", key=key)


async def test_an_object_store_failure_is_a_storage_error(tmp_path: Path) -> None:
    """A chunk whose objects cannot be written because the store failed ends
    storage_error (transient: the driver queues it again), not output_error."""
    storage = FailingStorage()
    await MemoryStorage.put(storage, "batch/j/in/0", b'{"x":1}\n')
    result = await server(Doubler(), storage, tmp_path).serve(Batch((chunk_item(chunk_spec()),)))
    (failed,) = result.items
    assert isinstance(failed, Failed) and failed.code == "storage_error"


async def test_an_oversized_chunk_object_is_refused(tmp_path: Path) -> None:
    """A chunk object over CHUNK_READ_MAX_BYTES is not read whole: input_error."""
    item, _ = await run(Doubler(), b"1\n" * (CHUNK_READ_MAX_BYTES // 2 + 1), chunk_spec(), tmp_path)
    assert isinstance(item, Failed) and item.code == "input_error"


# -- split=none: the file is the record ------------------------------------------


class Whole(Model):
    """A JSON model whose answer is chosen by its input."""

    def predict(self, input: Any) -> Any:
        if input.get("fail"):
            raise ValueError("asked to fail")
        if input.get("bytes"):
            return b"\x00raw"
        if input.get("file"):
            path = Path(input["file"])
            path.write_bytes(b"from a file")
            return File(path, "text/plain")
        return {"seen": input}


async def run_whole(
    body: bytes, tmp_path: Path, **changes: Any
) -> tuple[ResultItem, MemoryStorage]:
    spec = chunk_spec("whole", content_type="application/json", **changes)
    return await run(Whole(), body, spec, tmp_path)


async def test_a_whole_file_is_one_record(tmp_path: Path) -> None:
    """split=none: the input object is read as a prediction's input; the output is one
    JSON line (after the filters)."""
    item, storage = await run_whole(
        b'{"a": {"b": 1}}', tmp_path, input_filter="a", output_filter="seen.b"
    )
    assert await written(storage, ".out") == b"1\n"
    assert summary_of(item) == ChunkSummary(1, 0, 2, 0, None)


async def test_a_whole_file_may_answer_bytes_or_a_file(tmp_path: Path) -> None:
    """Bytes and File outputs are stored as they are, with their content type."""
    item, storage = await run_whole(b'{"bytes": true}', tmp_path)
    assert isinstance(item, Stored) and item.content_type == "application/octet-stream"
    assert await written(storage, ".out") == b"\x00raw"
    target = tmp_path / "made.txt"
    item, storage = await run_whole(orjson.dumps({"file": str(target)}), tmp_path)
    assert isinstance(item, Stored) and item.content_type == "text/plain"
    assert await written(storage, ".out") == b"from a file"
    assert summary_of(item).output_bytes == len(b"from a file") == item.size
    assert not target.exists()


async def test_a_failed_whole_file_is_its_records_error(tmp_path: Path) -> None:
    """The model failing on the file, or a file that is not JSON for a JSON model, is
    the record's error (line 1), not the chunk's."""
    item, storage = await run_whole(b'{"fail": true}', tmp_path)
    assert summary_of(item) == ChunkSummary(1, 1, 0, summary_of(item).errors_bytes, None)
    (entry,) = jsonl(await written(storage, ".err"))
    assert entry == {
        "line": 1,
        "error": {"code": "model_error", "message": "ValueError: asked to fail"},
        "input": None,
    }
    item, storage = await run_whole(b"not json", tmp_path)
    (entry,) = jsonl(await written(storage, ".err"))
    assert entry["error"]["code"] == "invalid_record"
    assert await written(storage, ".out") == b""


# -- Payload in memory --------------------------------------------------------------


def test_an_in_memory_payload_reads_like_a_file(tmp_path: Path) -> None:
    """Payload.from_bytes answers read_bytes/json/open from memory and writes a file only
    when ``path`` is asked for, in the directory given."""
    payload = Payload.from_bytes(b'{"a": 1}', "application/json", temp_dir=tmp_path)
    assert (payload.size, payload.content_type, payload.in_memory) == (8, "application/json", True)
    assert payload.json() == {"a": 1} and payload.read_bytes() == b'{"a": 1}'
    assert list(tmp_path.iterdir()) == []
    path = payload.path
    assert path.parent == tmp_path and path.read_bytes() == b'{"a": 1}'
    assert payload.path == path  # written once
    assert "in memory" not in repr(payload)
    on_disk = Payload(path=path, content_type="application/json", size=8)
    assert not on_disk.in_memory and on_disk.json() == {"a": 1}
    assert Payload.from_bytes(b"x", "t") == Payload.from_bytes(b"x", "t")
    assert on_disk == Payload(path=path, content_type="application/json", size=8)


def test_a_parsed_payload_hands_its_value_once(tmp_path: Path) -> None:
    """Payload.from_json: the first ``json()`` is the value given (not parsed again),
    each later one a fresh parse of the bytes; the rest reads as from_bytes."""
    value = {"a": 1}
    payload = Payload.from_json(b'{"a": 1}', value, "application/json", temp_dir=tmp_path)
    assert payload.json() is value
    again = payload.json()
    assert again == value and again is not value
    assert payload == Payload.from_bytes(b'{"a": 1}', "application/json")
    assert payload.read_bytes() == b'{"a": 1}' and payload.path.parent == tmp_path


# -- the tabular example's predict_batch through a chunk ----------------------------


@pytest.fixture
def tabular(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    pytest.importorskip("sklearn")
    monkeypatch.setenv("FREIGHT_CACHE_DIR", str(tmp_path / "cache"))
    sys.path.insert(0, str(EXAMPLES))
    try:
        import tabular

        yield tabular
    finally:
        sys.path.remove(str(EXAMPLES))


async def test_tabular_scores_a_csv_chunk_in_one_call(tabular: ModuleType, tmp_path: Path) -> None:
    """The tabular example scores a CSV chunk's rows together; a row it cannot read
    fails alone (model_error), the others get label and probability columns."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    features = [str(f) for f in data.feature_names]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for row in data.data[:5]:
        writer.writerow([float(v) for v in row])
    writer.writerow(["abc", *data.data[5][1:]])
    model = tabular.Tabular()
    model.load()
    spec = chunk_spec("csv", header=features, first_line=2)
    item, storage = await run(model, buffer.getvalue().encode(), spec, tmp_path)
    summary = summary_of(item)
    assert (summary.records, summary.failed, summary.columns) == (6, 1, ["label", "probability"])
    rows = list(csv.reader(io.StringIO((await written(storage, ".out")).decode())))
    labels = [data.target_names[t] for t in data.target[:5]]
    assert [r[0] for r in rows] == labels
    (entry,) = jsonl(await written(storage, ".err"))
    assert (entry["line"], entry["error"]["code"]) == (7, "model_error")


def test_tabular_predict_batch_matches_predict(tabular: ModuleType, tmp_path: Path) -> None:
    """predict_batch answers a table exactly as predict does, a JSON object with one
    prediction, and a bad input with its own exception."""
    model = tabular.Tabular()
    model.load()
    table = Payload.from_bytes(
        json.dumps({"rows": [[10.0] * 30, [20.0] * 30]}).encode(), "application/json"
    )
    row = Payload.from_bytes(
        json.dumps(dict.fromkeys(model.features, 10.0)).encode(), "application/json"
    )
    bad = Payload.from_bytes(b"xx", "application/octet-stream")
    whole, single, failed = model.predict_batch([table, row, bad])
    assert whole == model.predict(table)
    assert single == whole["predictions"][0]
    assert isinstance(failed, ValueError) and "unsupported content type" in str(failed)
