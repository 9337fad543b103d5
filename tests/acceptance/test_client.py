"""The Python client (sync and async) against a real server, on both shapes; and the
example project served for real."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from freight.client import AsyncClient, Client, FreightClientError
from tests.acceptance.conftest import EXAMPLES, render_digit_png
from tests.fixtures.server import Server


def test_predict_wait_upload_and_run(make_server: Callable[..., Server], tmp_path: Path) -> None:
    """predict+wait returns the output; a file is uploaded and its output fetched; run()
    answers in real time with JSON or bytes."""
    server = make_server(models=["Echo", "Reverse"])
    with Client(server.url) as client:
        handle = client.predict("echo", {"x": 1}, metadata={"ref": "r1"})
        done = handle.wait(timeout=30)
        assert done.succeeded and done.output == {"x": 1}
        assert done.metadata == {"ref": "r1"} and done.attempts == 1
        assert done.metrics.total_ms is not None and done.metrics.batch_size
        assert handle.output() == {"x": 1}

        source = tmp_path / "blob.bin"
        source.write_bytes(b"\x00\x01hello" * 1000)
        uploaded = client.predict("reverse", file=source)
        assert uploaded.output(timeout=30) == source.read_bytes()[::-1]
        assert uploaded.prediction.input_bytes == source.stat().st_size
        saved = uploaded.download(tmp_path / "saved.bin")
        assert saved.read_bytes() == source.read_bytes()[::-1]

        assert client.run("echo", {"a": [1, 2]}) == {"a": [1, 2]}
        assert client.run("reverse", data=b"abc\x00") == b"\x00cba"


def test_errors_carry_status_and_code(make_server: Callable[..., Server]) -> None:
    """Unknown models, wrong content types and invalid fields raise FreightClientError
    with the HTTP status and the API's stable code."""
    server = make_server(models=["Echo"])
    with Client(server.url) as client:
        with pytest.raises(FreightClientError) as unknown:
            client.predict("nope", {"x": 1})
        assert (unknown.value.status, unknown.value.code) == (404, "unknown_target")
        assert unknown.value.detail.get("target") == "nope"

        with pytest.raises(FreightClientError) as realtime_unknown:
            client.run("nope", {"x": 1})
        assert realtime_unknown.value.code == "unknown_target"

        with pytest.raises(FreightClientError) as media:
            client.run("echo", data=b"not json", content_type="application/octet-stream")
        assert (media.value.status, media.value.code) == (415, "unsupported_media_type")

        with pytest.raises(FreightClientError) as invalid:
            client.predict("echo", {"x": 1}, priority=5000)
        assert (invalid.value.status, invalid.value.code) == (422, "validation_error")

        with pytest.raises(FreightClientError) as missing:
            client.get("0193b7c2-0000-7000-8000-000000000000")
        assert (missing.value.status, missing.value.code) == (404, "prediction_not_found")


def test_list_paginates_and_cancel(make_server: Callable[..., Server], tmp_path: Path) -> None:
    """list() walks every page newest first; cancel() ends a running prediction, whose
    output then raises its ``canceled`` error."""
    server = make_server(models=["Echo", "Hold"])
    with Client(server.url) as client:
        ids = [client.predict("echo", {"n": n}).wait(timeout=30).id for n in range(5)]
        listed = [p.id for p in client.list(target="echo", limit=2)]
        assert listed == sorted(ids, reverse=True)
        assert [p.output for p in client.list(target="echo", status="succeeded", limit=3)] == [
            {"n": n} for n in reversed(range(5))
        ]
        assert list(client.list(target="hold")) == []

        held = client.predict("hold", {"pidfile": str(tmp_path / "hold.pid"), "ms": 60_000})
        canceled = held.cancel()
        assert canceled.status == "canceled"
        assert held.wait(timeout=10).status == "canceled"
        with pytest.raises(FreightClientError) as info:
            held.output()
        assert info.value.code == "canceled"
        assert [m.name for m in client.models()] == ["echo", "hold"]


async def test_async_client_predict_and_wait(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    """AsyncClient queues, uploads, waits and reads outputs like the blocking client."""
    server = make_server(models=["Echo", "Reverse"])
    async with AsyncClient(server.url) as client:
        handle = await client.predict("echo", {"y": 2})
        done = await handle.wait(timeout=30)
        assert done.succeeded and await handle.output() == {"y": 2}
        uploaded = await client.predict("reverse", data=b"xyz")
        assert await uploaded.output(timeout=30) == b"zyx"
        assert await client.run("echo", [1]) == [1]
        with pytest.raises(FreightClientError) as info:
            await client.predict("nope", {})
        assert info.value.code == "unknown_target"


# -- the example project -------------------------------------------------------------------


def breast_cancer_csv(rows: int) -> tuple[bytes, list[str]]:
    """The first ``rows`` rows of the bundled data set as CSV, and their true labels."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["id", *(str(f) for f in data.feature_names)])
    for number, values in enumerate(data.data[:rows]):
        writer.writerow([number, *(repr(float(v)) for v in values)])
    labels = [str(data.target_names[t]) for t in data.target[:rows]]
    return buffer.getvalue().encode(), labels


def test_examples_tabular_csv_and_digits_png(
    make_server: Callable[..., Server], examples_cache: Path
) -> None:
    """Served from examples/, tabular scores a 50-row CSV mostly right and digits reads
    rendered dataset digits."""
    pytest.importorskip("sklearn")
    pytest.importorskip("PIL")
    server = make_server(
        project=EXAMPLES,
        FREIGHT_MODELS=json.dumps(["tabular:Tabular", "digits:Digits"]),
        FREIGHT_CACHE_DIR=str(examples_cache),
    )
    with Client(server.url) as client:
        body, labels = breast_cancer_csv(50)
        scored = client.predict("tabular", data=body, content_type="text/csv").output(timeout=60)
        assert scored["rows"] == 50
        predicted = [p["label"] for p in scored["predictions"]]
        assert sum(p == t for p, t in zip(predicted, labels, strict=True)) >= 45
        assert all(0.5 <= p["probability"] <= 1 for p in scored["predictions"])

        from sklearn.datasets import load_digits

        targets = load_digits().target
        handles = {i: client.predict("digits", data=render_digit_png(i)) for i in range(10)}
        labels_read = {i: h.output(timeout=60)["label"] for i, h in handles.items()}
        correct = sum(labels_read[i] == int(targets[i]) for i in handles)
        assert correct >= 9, labels_read
