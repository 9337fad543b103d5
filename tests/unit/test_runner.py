"""The runner without a process: a batch through BatchServer, and clean error details."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

import freight
from freight.errors import ModelDefinitionError
from freight.model import InputKind, Model, PredictionContext, running
from freight.runner.payloads import HANDBACK_MAX_BYTES, PayloadIO
from freight.runner.process import BatchServer
from freight.runner.protocol import (
    Batch,
    BatchItem,
    Failed,
    HandedBack,
    Inline,
    Stored,
    Streamed,
)
from freight.runner.tracebacks import error_detail, model_frames, model_traceback
from freight.storage.memory import MemoryStorage

MODULE = """
    def helper(value):
        raise ValueError(f"bad value {value}")


    class Model:
        def predict(self, value):
            return helper(value)
"""


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    """A project directory holding a module whose code raises through a helper."""
    root = tmp_path / "project"
    root.mkdir()
    (root / "faulty.py").write_text(textwrap.dedent(MODULE))
    sys.path.insert(0, str(root))
    yield root
    sys.path.remove(str(root))
    sys.modules.pop("faulty", None)


def raised(project: Path) -> BaseException:
    """An exception raised in the project's code, called through freight's runner."""
    import faulty

    from freight.runner.process import _call_model

    (exc,) = _call_model(faulty.Model(), False, [7])
    assert isinstance(exc, ValueError)
    return exc


def test_traceback_keeps_only_the_models_frames(project: Path) -> None:
    """The traceback names the model's frames relative to the project, and no frame of
    freight or an absolute server path."""
    exc = raised(project)
    frames = model_frames(exc, project)
    assert [(f.filename, f.name) for f in frames] == [
        ("faulty.py", "predict"),
        ("faulty.py", "helper"),
    ]
    text = model_traceback(exc, project)
    assert text.startswith("Traceback (most recent call last):\n")
    assert text.endswith("ValueError: bad value 7\n")
    assert "freight" not in text and str(project.parent) not in text


def test_error_detail_has_the_type_and_clean_traceback(project: Path) -> None:
    """error_detail gives the exception type and the filtered traceback."""
    detail = error_detail(raised(project), project)
    assert detail["type"] == "ValueError"
    assert "_call_model" not in detail["traceback"]


async def test_an_error_outside_the_project_has_no_frames(tmp_path: Path) -> None:
    """An exception raised only in freight's own code shows just its type and message."""
    with pytest.raises(ValueError) as info:
        await PayloadIO(MemoryStorage(), InputKind.JSON, 100).read_input(
            BatchItem("a", content_type="application/json")
        )
    text = model_traceback(info.value, tmp_path)
    assert text == "ValueError: the prediction has no stored input\n"


class Batcher(Model):
    """A batch model whose answer depends on the batch: see ``predict_batch``."""

    def predict_batch(self, inputs: list[Any]) -> list[Any]:
        if any(i.get("count") for i in inputs):
            return inputs[: inputs[0]["count"]]
        if any(i.get("tuple") for i in inputs):
            return tuple(inputs)  # type: ignore[return-value]
        return [{1, 2} if i.get("set") else i for i in inputs]


def server(
    tmp_path: Path, storage: MemoryStorage | None = None, inline: int = 1 << 20
) -> BatchServer:
    io = PayloadIO(storage or MemoryStorage(), InputKind.JSON, inline)
    return BatchServer(Batcher(), io, tmp_path)


def items(*inputs: str | None) -> Batch:
    return Batch(
        tuple(
            BatchItem(f"p{n}", input_json=text, content_type="application/json")
            for n, text in enumerate(inputs)
        )
    )


async def test_outputs_come_back_in_input_order(tmp_path: Path) -> None:
    """Each input's output comes back inline, under its own id, in order."""
    result = await server(tmp_path).serve(items('{"a":1}', '{"a":2}'))
    assert result.items == (Inline("p0", '{"a":1}'), Inline("p1", '{"a":2}'))


async def test_wrong_output_count_fails_the_batch_as_batch_mismatch(tmp_path: Path) -> None:
    """predict_batch returning fewer outputs than inputs fails every item batch_mismatch."""
    result = await server(tmp_path).serve(items('{"count":1}', "{}", "{}"))
    assert [type(i) for i in result.items] == [Failed] * 3
    assert all(isinstance(i, Failed) and i.code == "batch_mismatch" for i in result.items)
    first = result.items[0]
    assert isinstance(first, Failed) and "1 items) for 3 inputs" in first.message


async def test_a_non_list_fails_the_batch_as_batch_mismatch(tmp_path: Path) -> None:
    """predict_batch returning something other than a list fails every item batch_mismatch."""
    result = await server(tmp_path).serve(items('{"tuple":1}', "{}"))
    assert {i.code for i in result.items if isinstance(i, Failed)} == {"batch_mismatch"}
    first = result.items[0]
    assert isinstance(first, Failed) and "tuple (no list)" in first.message


async def test_a_non_json_output_fails_only_its_item(tmp_path: Path) -> None:
    """An output that is not JSON-able fails its own item output_error; neighbours succeed."""
    result = await server(tmp_path).serve(items("{}", '{"set":1}', '{"b":2}'))
    first, bad, last = result.items
    assert first == Inline("p0", "{}") and last == Inline("p2", '{"b":2}')
    assert isinstance(bad, Failed) and bad.code == "output_error"


async def test_an_unreadable_input_fails_only_its_item(tmp_path: Path) -> None:
    """An input that cannot be read fails its item input_error; the others run."""
    result = await server(tmp_path).serve(items("{}", None))
    ok, bad = result.items
    assert ok == Inline("p0", "{}")
    assert isinstance(bad, Failed) and bad.code == "input_error"
    assert "no stored input" in bad.message


async def test_large_json_is_stored_by_the_runner(tmp_path: Path) -> None:
    """JSON over the hand-back size is written by the runner, with an inline copy while
    under the inline limit and none past it."""
    storage = MemoryStorage()
    big = '{"x":"' + "y" * HANDBACK_MAX_BYTES + '"}'
    (kept,) = (await server(tmp_path, storage).serve(items(big))).items
    assert isinstance(kept, Stored) and kept.inline_json == big and kept.key == "outputs/p0"
    assert await storage.get("outputs/p0") == big.encode()
    (plain,) = (await server(tmp_path, storage, inline=10).serve(items(big))).items
    assert isinstance(plain, Stored) and plain.inline_json is None


async def test_small_bytes_are_handed_back(tmp_path: Path) -> None:
    """A small bytes output travels back in the result; nothing is stored by the runner."""
    storage = MemoryStorage()
    io = PayloadIO(storage, InputKind.BYTES, 100)
    output = await io.write_output("p0", b"\x00abc")
    assert output == HandedBack("p0", b"\x00abc", "application/octet-stream")
    assert storage.keys() == []


class Introspect(Model):
    """Answers with the context it reads: ``freight.context()`` per input."""

    def predict(self, input: dict[str, Any]) -> dict[str, Any]:
        ctx = freight.context()
        return {"id": ctx.prediction_id, "attempt": ctx.attempt, "step": ctx.step}


class BatchIntrospect(Model):
    """Answers with ``freight.contexts()``, and whether ``freight.context()`` refused."""

    def predict_batch(self, inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        try:
            freight.context()
            refused = False
        except ModelDefinitionError:
            refused = True
        return [
            {"id": c.prediction_id, "attempt": c.attempt, "refused": refused}
            for c in freight.contexts()
        ]


def with_contexts(*ids: str) -> Batch:
    return Batch(
        tuple(
            BatchItem(
                i,
                input_json="{}",
                context=PredictionContext(i, attempt=n + 1, max_attempts=3, step=f"s{n}"),
            )
            for n, i in enumerate(ids)
        )
    )


async def test_predict_reads_its_own_context(tmp_path: Path) -> None:
    """Inside predict, freight.context() is the context of the input being predicted."""
    io = PayloadIO(MemoryStorage(), InputKind.JSON, 1 << 20)
    result = await BatchServer(Introspect(), io, tmp_path).serve(with_contexts("a", "b"))
    assert result.items == (
        Inline("a", '{"id":"a","attempt":1,"step":"s0"}'),
        Inline("b", '{"id":"b","attempt":2,"step":"s1"}'),
    )


async def test_predict_batch_reads_one_context_per_input(tmp_path: Path) -> None:
    """Inside predict_batch, freight.contexts() holds one context per input in order,
    and freight.context() refuses to pick one."""
    io = PayloadIO(MemoryStorage(), InputKind.JSON, 1 << 20)
    result = await BatchServer(BatchIntrospect(), io, tmp_path).serve(with_contexts("a", "b"))
    assert result.items == (
        Inline("a", '{"id":"a","attempt":1,"refused":true}'),
        Inline("b", '{"id":"b","attempt":2,"refused":true}'),
    )


async def test_an_item_without_context_gets_its_id(tmp_path: Path) -> None:
    """An item sent without a context still tells the model its prediction id."""
    io = PayloadIO(MemoryStorage(), InputKind.JSON, 1 << 20)
    result = await BatchServer(Introspect(), io, tmp_path).serve(items("{}"))
    assert result.items == (Inline("p0", '{"id":"p0","attempt":1,"step":null}'),)


def test_context_outside_a_prediction_is_refused() -> None:
    """freight.context() and contexts() raise outside a prediction (in load(), say),
    and running() restores what was there before."""
    with pytest.raises(ModelDefinitionError, match="only defined while"):
        freight.context()
    with running([PredictionContext("x", deadline=100.0)]):
        assert freight.context().remaining_s(now=40.0) == 60.0
        assert freight.context().last_attempt
    with pytest.raises(ModelDefinitionError, match="only defined while"):
        freight.contexts()


class ChunkIntrospect(Model):
    """A batch model answering each record with its context's prediction and job."""

    def predict_batch(self, inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"id": c.prediction_id, "job": c.job_id} for c in freight.contexts()]


async def test_every_record_of_a_chunk_reads_the_chunks_context(tmp_path: Path) -> None:
    """A batch job's records run as their chunk's prediction: each call's contexts are
    the chunk's, with its job id."""
    from freight.batch.spec import CHUNK_MEDIA_TYPE, ChunkSpec

    storage = MemoryStorage()
    await storage.put("batch/j/in/0", b'{"x":1}\n{"x":2}\n{"x":3}\n')
    spec = ChunkSpec(format="jsonl", first_line=1, objects="o")
    item = BatchItem(
        "j.0.0",
        input_json=spec.to_json(),
        input_key="batch/j/in/0",
        content_type=CHUNK_MEDIA_TYPE,
        context=PredictionContext("j.0.0", job_id="j"),
    )
    io = PayloadIO(storage, InputKind.JSON, 1 << 20)
    (result,) = (await BatchServer(ChunkIntrospect(), io, tmp_path).serve(Batch((item,)))).items
    assert isinstance(result, Stored)
    lines = (await storage.get(result.key)).decode().splitlines()
    assert lines == ['{"id":"j.0.0","job":"j"}'] * 3


def test_a_runner_does_not_import_pydantic() -> None:
    """A replica's process imports no pydantic (batch options live apart from the chunk
    spec a runner reads): it cost ~75 ms of every replica's start, scale from zero too."""
    probe = "import sys, freight.runner.process; print('pydantic' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


PIN_PROBE = """
import ctypes
from freight.runner.chunks import pin_mmap_threshold

class Info(ctypes.Structure):  # struct mallinfo2: ten size_t
    _fields_ = [("arena", ctypes.c_size_t), ("ordblks", ctypes.c_size_t),
                ("smblks", ctypes.c_size_t), ("hblks", ctypes.c_size_t),
                ("rest", ctypes.c_size_t * 6)]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
pinned = pin_mmap_threshold()
freed = bytearray(8 << 20)
del freed  # unpinned, glibc now serves blocks under 8 MiB from its heaps
before = libc.mallinfo2().hblks
block = bytearray(2 << 20)
print(pinned, libc.mallinfo2().hblks - before)
"""


@pytest.mark.parametrize(
    ("environ", "expected"),
    [({}, "True 1"), ({"MALLOC_MMAP_THRESHOLD_": str(16 << 20)}, "False 0")],
)
def test_a_runner_maps_large_blocks_alone_for_good(
    environ: dict[str, str], expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A runner's first batch chunk pins glibc's mmap threshold (1 MiB): a block over it
    is mapped alone even after a larger one was freed (glibc would serve it from a heap
    that keeps what is freed), unless MALLOC_MMAP_THRESHOLD_ asks for another threshold.
    A runner that serves no chunk keeps glibc's own threshold (pinned, 1 MiB reads of a
    streamed input fault each block in afresh)."""
    libc = pytest.importorskip("ctypes").CDLL("libc.so.6")
    if not hasattr(libc, "mallinfo2"):
        pytest.skip("not glibc 2.33 or later")
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    out = subprocess.run(
        [sys.executable, "-c", PIN_PROBE], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == expected


class Teller(Model):
    """Yields the words of its input's text; ``fail_at`` raises before that word."""

    def predict(self, input: dict[str, Any]) -> Iterator[str]:
        for k, word in enumerate(input["text"].split()):
            if k == input.get("fail_at"):
                raise ValueError(f"no word {k}")
            yield word + " "


class Squares(Model):
    stream_output = "list"

    async def predict(self, input: dict[str, Any]) -> AsyncIterator[Any]:
        for i in range(input["n"]):
            yield {"square": i * i} if i % 2 else b"\x00" * i


def streaming(tmp_path: Path, model: Model) -> tuple[BatchServer, list[Streamed]]:
    """A server of a streaming model, and the frames it sends while it runs."""
    sent: list[Streamed] = []
    server = BatchServer(model, PayloadIO(MemoryStorage(), InputKind.JSON, 1 << 20), tmp_path)
    server.send = lambda frame: sent.append(frame)  # type: ignore[arg-type,func-returns-value]
    return server, sent


async def test_a_generator_sends_each_chunk_then_their_join(tmp_path: Path) -> None:
    """Each chunk goes out in its own frame, under its prediction's id, as it is yielded;
    the output is the chunks end to end."""
    server, sent = streaming(tmp_path, Teller())
    result = await server.serve(items('{"text": "to be or not"}'))
    assert [(f.id, [p.data for p in f.parts]) for f in sent] == [
        ("p0", ["to "]),
        ("p0", ["be "]),
        ("p0", ["or "]),
        ("p0", ["not "]),
    ]
    assert result.items == (Inline("p0", '"to be or not "'),)


async def test_an_async_generator_declared_list_outputs_the_list(tmp_path: Path) -> None:
    """An async generator's chunks (JSON values and bytes) make a list: bytes in base64."""
    server, sent = streaming(tmp_path, Squares())
    result = await server.serve(items('{"n": 3}'))
    assert [p.kind for f in sent for p in f.parts] == ["bytes", "json", "bytes"]
    assert result.items == (Inline("p0", '["",{"square":1},"AAA="]'),)


async def test_a_raise_mid_stream_fails_after_the_chunks_sent(tmp_path: Path) -> None:
    """The chunks before the raise were sent; the prediction fails model_error."""
    server, sent = streaming(tmp_path, Teller())
    (failed,) = (await server.serve(items('{"text": "a b c", "fail_at": 2}'))).items
    assert [p.data for f in sent for p in f.parts] == ["a ", "b "]
    assert isinstance(failed, Failed) and failed.code == "model_error"
    assert "no word 2" in failed.message


async def test_chunks_that_do_not_join_fail_output_error(tmp_path: Path) -> None:
    """concat of JSON values (or of a chunk that is no JSON at all) is an output_error."""

    class Mixed(Model):
        def predict(self, input: dict[str, Any]) -> Iterator[Any]:
            yield {"a": 1} if input.get("json") else object()

    server, _ = streaming(tmp_path, Mixed())
    result = await server.serve(items('{"json": true}', "{}"))
    assert [(type(i), getattr(i, "code", None)) for i in result.items] == [
        (Failed, "output_error"),
        (Failed, "output_error"),
    ]


def test_a_streaming_model_runs_one_prediction_at_a_time() -> None:
    """A generator predict with a batch size over 1, or an unknown stream_output, is
    refused when the model is loaded; a plain model is not a streaming one."""

    class Batched(Teller):
        batching = freight.Batching(max_size=4)

    class Unknown(Teller):
        stream_output = "zip"

    for refused in (Batched, Unknown):
        with pytest.raises(ModelDefinitionError):
            refused.validate()
    Teller.validate()
    assert Teller.streams() and Squares.streams() and not Model.streams()
