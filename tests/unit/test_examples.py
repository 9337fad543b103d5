"""The bundled example models, called directly (no server): behaviour and caching."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import freight

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

pytest.importorskip("sklearn")
pytest.importorskip("PIL")


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "cache"
    monkeypatch.setenv("FREIGHT_CACHE_DIR", str(directory))
    return directory


@pytest.fixture(scope="module")
def examples() -> Iterator[dict[str, ModuleType]]:
    """Import the example modules the way discovery does: the directory on sys.path."""
    sys.path.insert(0, str(EXAMPLES))
    try:
        import _training
        import digits
        import echo
        import sleep
        import tabular

        yield {
            "echo": echo,
            "sleep": sleep,
            "tabular": tabular,
            "digits": digits,
            "_training": _training,
        }
    finally:
        sys.path.remove(str(EXAMPLES))


def payload(tmp_path: Path, name: str, content: bytes, content_type: str) -> freight.Payload:
    path = tmp_path / name
    path.write_bytes(content)
    return freight.Payload(path=path, content_type=content_type, size=len(content))


def test_every_example_is_a_valid_model(examples: dict[str, ModuleType]) -> None:
    """Each example class passes freight's own definition checks with the expected input kind."""
    expected = {"echo": "json", "sleep": "json", "tabular": "payload", "digits": "bytes"}
    classes = {
        obj.model_name(): obj
        for module in examples.values()
        for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, freight.Model) and obj is not freight.Model
    }
    assert set(classes) == set(expected)
    for name, cls in classes.items():
        cls.validate()
        assert cls.input_kind() == expected[name]


def test_echo_returns_inputs_unchanged(examples: dict[str, ModuleType]) -> None:
    """echo answers each JSON input with itself, in order."""
    model = examples["echo"].Echo()
    model.load()
    inputs: list[Any] = [{"a": 1}, [1, 2], "text", None, {"nested": {"x": [1.5]}}]
    assert model.predict_batch(inputs) == inputs
    assert model.batching == freight.Batching(max_size=64, max_wait_ms=0)
    assert (model.replicas.min, model.replicas.max) == (2, 2)


def test_sleep_sleeps_longest_plus_one_ms_per_item(examples: dict[str, ModuleType]) -> None:
    """sleep reports max(ms) + batch size for every item of the batch."""
    model = examples["sleep"].Sleep()
    model.load()
    assert model.predict_batch([{"ms": 5}, {"ms": 2}, {"ms": 0}]) == [{"slept_ms": 8}] * 3
    assert model.predict_batch([{"ms": 0}]) == [{"slept_ms": 1}]
    assert model.batching == freight.Batching(max_size=32, max_wait_ms=10)


def test_sleep_rejects_a_bad_duration(examples: dict[str, ModuleType]) -> None:
    """A negative or non-numeric ms is a model error, not a silent zero."""
    model = examples["sleep"].Sleep()
    with pytest.raises(ValueError, match="non-negative"):
        model.predict_batch([{"ms": -1}])
    with pytest.raises(ValueError):
        model.predict_batch([{"ms": "5"}])


def _cancer_sample(n: int = 50) -> tuple[list[str], list[list[float]], list[str]]:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    features = [str(f) for f in data.feature_names]
    rows = [[float(v) for v in row] for row in data.data[:n]]
    labels = [str(data.target_names[t]) for t in data.target[:n]]
    return features, rows, labels


def _accuracy(result: dict[str, Any], labels: list[str]) -> float:
    assert result["rows"] == len(labels)
    predicted = [p["label"] for p in result["predictions"]]
    assert all(0.5 <= p["probability"] <= 1.0 for p in result["predictions"])
    return sum(a == b for a, b in zip(predicted, labels, strict=True)) / len(labels)


def test_tabular_scores_json_rows(examples: dict[str, ModuleType], tmp_path: Path) -> None:
    """JSON rows, keyed by feature name or as plain lists, are classified like the data set."""
    model = examples["tabular"].Tabular()
    model.load()
    features, rows, labels = _cancer_sample()
    as_dicts = [dict(zip(features, row, strict=True)) for row in rows]
    for index, body in enumerate((as_dicts, rows, {"rows": rows})):
        data = json.dumps(body).encode()
        result = model.predict(payload(tmp_path, f"in{index}.json", data, "application/json"))
        assert _accuracy(result, labels) >= 0.9


def test_tabular_scores_csv(examples: dict[str, ModuleType], tmp_path: Path) -> None:
    """CSV with a header row (any column order, extra columns ignored) is read by name."""
    model = examples["tabular"].Tabular()
    model.load()
    features, rows, labels = _cancer_sample()
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["id", *reversed(features)])
    for number, row in enumerate(rows):
        writer.writerow([number, *reversed(row)])
    data = buffer.getvalue().encode()
    result = model.predict(payload(tmp_path, "in.csv", data, "text/csv; charset=utf-8"))
    assert _accuracy(result, labels) >= 0.9


def test_tabular_rejects_bad_input(examples: dict[str, ModuleType], tmp_path: Path) -> None:
    """A missing feature or an unknown content type is a clear error."""
    model = examples["tabular"].Tabular()
    model.load()
    with pytest.raises(ValueError, match="missing features"):
        model.predict(payload(tmp_path, "a.json", b'[{"mean radius": 1}]', "application/json"))
    with pytest.raises(ValueError, match="unsupported content type"):
        model.predict(payload(tmp_path, "a.bin", b"xx", "application/octet-stream"))
    empty = model.predict(payload(tmp_path, "e.json", b"[]", "application/json"))
    assert empty == {"predictions": [], "rows": 0}


def test_digits_reads_rendered_dataset_digits(examples: dict[str, ModuleType]) -> None:
    """PNGs of data-set digits (upscaled, dark ink on white) are read correctly."""
    from sklearn.datasets import load_digits

    module = examples["digits"]
    model = module.Digits()
    model.load()
    indices = list(range(0, 400, 20))
    images = [module.render_digit_png(i) for i in indices]
    results = model.predict_batch(images)
    targets = load_digits().target
    correct = sum(r["label"] == int(targets[i]) for r, i in zip(results, indices, strict=True))
    assert correct >= 18
    assert set(results[0]["scores"]) == {str(d) for d in range(10)}
    assert abs(sum(results[0]["scores"].values()) - 1.0) < 1e-3


def test_digits_accepts_jpeg_of_any_size(examples: dict[str, ModuleType]) -> None:
    """A light-on-dark JPEG at another size is decoded to the same scale."""
    from PIL import Image, ImageOps

    module = examples["digits"]
    model = module.Digits()
    model.load()
    image = Image.open(io.BytesIO(module.render_digit_png(0, scale=10)))
    inverted = ImageOps.invert(image.convert("L")).resize((50, 50))
    buffer = io.BytesIO()
    inverted.save(buffer, format="JPEG", quality=95)
    assert model.predict_batch([buffer.getvalue()])[0]["label"] == 0


def test_digits_rejects_non_images(examples: dict[str, ModuleType]) -> None:
    """Bytes that are not an image give a clear model error."""
    model = examples["digits"].Digits()
    model.load()
    with pytest.raises(ValueError, match="not a readable image"):
        model.predict_batch([b"hello"])


@pytest.mark.parametrize(
    ("module", "cls", "cache_name"),
    [
        ("tabular", "Tabular", "tabular"),
        ("digits", "Digits", "digits"),
    ],
)
def test_training_is_cached(
    examples: dict[str, ModuleType],
    module: str,
    cls: str,
    cache_name: str,
    cache_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first load trains and saves under FREIGHT_CACHE_DIR; the next one only reads it."""
    path = examples["_training"].cache_path(cache_name)
    assert path.parent == cache_dir
    assert not path.exists()
    getattr(examples[module], cls)().load()
    assert path.exists()
    mtime = path.stat().st_mtime_ns

    def fail() -> None:
        raise AssertionError("trained again despite the cache")

    monkeypatch.setattr(examples[module], "train", fail)
    getattr(examples[module], cls)().load()
    assert path.stat().st_mtime_ns == mtime
    assert [p.name for p in cache_dir.iterdir()] == [path.name]  # no temp files left


def test_corrupt_cache_is_retrained(examples: dict[str, ModuleType], cache_dir: Path) -> None:
    """A truncated cache file is replaced by a fresh training run instead of failing load()."""
    path = examples["_training"].cache_path("tabular")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a joblib file")
    model = examples["tabular"].Tabular()
    model.load()
    assert path.stat().st_size > 100
    assert model.labels == ["malignant", "benign"]
