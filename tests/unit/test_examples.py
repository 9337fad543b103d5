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


# -- the claims ensemble (ensemble.py) and its pipelines (freight.yaml) -------------

ENSEMBLE_MODELS = {"risk-linear", "risk-forest", "risk-stack", "risk-review", "form-digit"}


@pytest.fixture(scope="module")
def ensemble() -> Iterator[ModuleType]:
    """examples/ensemble.py, imported the way discovery does."""
    sys.path.insert(0, str(EXAMPLES))
    try:
        import ensemble

        yield ensemble
    finally:
        sys.path.remove(str(EXAMPLES))


@pytest.fixture(scope="module")
def ensemble_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One training cache for this module's ensemble tests (the risk models train once)."""
    return tmp_path_factory.mktemp("ensemble-cache")


@pytest.fixture
def shared_cache(ensemble_cache: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FREIGHT_CACHE_DIR", str(ensemble_cache))
    return ensemble_cache


@pytest.fixture
def served(ensemble: ModuleType, shared_cache: Path) -> dict[str, freight.Model]:
    """Every ensemble model, loaded as a replica would load it, by model name."""
    models: dict[str, freight.Model] = {}
    for cls in _model_classes(ensemble).values():
        model = cls()
        model.load()
        models[cls.model_name()] = model
    return models


def _model_classes(module: ModuleType) -> dict[str, type[freight.Model]]:
    """The classes discovery serves from a module (public, defined there)."""
    return {
        obj.model_name(): obj
        for name, obj in vars(module).items()
        if isinstance(obj, type)
        and issubclass(obj, freight.Model)
        and obj.__module__ == module.__name__
        and not name.startswith("_")
    }


def _claim(name: str = "claim.json") -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EXAMPLES / "inputs" / name).read_text())
    return loaded


def _call(model: freight.Model, value: Any) -> Any:
    """One prediction as freight makes it: JSON in, JSON out."""
    return json.loads(json.dumps(model.predict_batch([json.loads(json.dumps(value))])[0]))


def test_ensemble_models_are_valid(ensemble: ModuleType) -> None:
    """ensemble.py serves five JSON models, one replica each (make run stays light)."""
    classes = _model_classes(ensemble)
    assert set(classes) == ENSEMBLE_MODELS
    for cls in classes.values():
        cls.validate()
        assert cls.input_kind() == "json"
        assert (cls.replicas.min, cls.replicas.max) == (1, 1)


def test_stack_is_a_trained_combiner(ensemble: ModuleType, served: dict[str, Any]) -> None:
    """risk-stack is a logistic regression over both base risks, weighing each one."""
    stack = served["risk-stack"].bundle["stack"]
    assert stack.coef_.shape == (1, 2)
    assert all(weight > 0 for weight in stack.coef_[0])
    both_low = _call(served["risk-stack"], {"linear": {"risk": 0.01}, "forest": {"risk": 0.02}})
    both_high = _call(served["risk-stack"], {"linear": {"risk": 0.99}, "forest": {"risk": 0.9}})
    assert both_low["level"] == "low" and both_low["label"] == "benign"
    assert both_high["level"] == "high" and both_high["label"] == "malignant"
    assert both_low["risk"] < both_high["risk"]


def test_served_models_score_the_held_out_cases(
    ensemble: ModuleType, served: dict[str, Any]
) -> None:
    """Through their JSON interface, on the cases none was trained on, the models reach
    the accuracies recorded at training, and the stack is no worse than its base models
    allow (at least as good as the forest, within 2 points of the linear model)."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    bundle = served["risk-linear"].bundle
    assert not set(bundle["test_cases"]) & set(bundle["train_cases"])
    cases = bundle["test_cases"]
    features = [str(f) for f in data.feature_names]
    truth = ["malignant" if data.target[i] == 0 else "benign" for i in cases]
    rows = [dict(zip(features, map(float, data.data[i]), strict=True)) for i in cases]
    linear = served["risk-linear"].predict_batch(rows)
    forest = served["risk-forest"].predict_batch(rows)
    pairs = [{"linear": a, "forest": b} for a, b in zip(linear, forest, strict=True)]
    stack = served["risk-stack"].predict_batch(pairs)
    accuracy = {
        name: sum(o["label"] == t for o, t in zip(out, truth, strict=True)) / len(truth)
        for name, out in (("linear", linear), ("forest", forest), ("stack", stack))
    }
    metrics = bundle["metrics"]
    for name, value in accuracy.items():
        assert value == pytest.approx(metrics[name], abs=0.006)  # one case of 171
    assert metrics["stack"] >= 0.93
    assert metrics["stack"] >= metrics["forest"]
    assert metrics["stack"] >= metrics["linear"] - 0.02


def test_base_models_read_names_or_lists(ensemble: ModuleType, served: dict[str, Any]) -> None:
    """Measurements keyed by feature name or as 30 values in data-set order score alike."""
    measurements = _claim()["measurements"]
    as_list = list(measurements.values())
    for name in ("risk-linear", "risk-forest"):
        by_name = _call(served[name], measurements)
        assert by_name == _call(served[name], as_list)
        assert set(by_name) == {"risk", "label"} and 0 <= by_name["risk"] <= 1


def test_models_reject_bad_input(ensemble: ModuleType, served: dict[str, Any]) -> None:
    """Missing measurements, malformed risks and photos are clear model errors."""
    with pytest.raises(ValueError, match="measurements lack"):
        served["risk-linear"].predict_batch([{"mean radius": 1.0}])
    with pytest.raises(ValueError, match="expected 30 measurements"):
        served["risk-forest"].predict_batch([[1.0, 2.0]])
    with pytest.raises(ValueError, match="forest"):
        served["risk-stack"].predict_batch([{"linear": {"risk": 0.5}, "forest": None}])
    with pytest.raises(ValueError, match="measurements"):
        served["risk-review"].predict_batch([{"risk": 1}])
    with pytest.raises(ValueError, match="not valid base64"):
        served["form-digit"].predict_batch([{"image": "not base64!"}])
    with pytest.raises(ValueError, match="not a readable image"):
        served["form-digit"].predict_batch([{"image": "aGVsbG8="}])


def test_form_digit_reads_the_policy_number(ensemble: ModuleType, served: dict[str, Any]) -> None:
    """The claim form's photos read 4 0 7 1 5, as {"image": base64} or the bare string."""
    photos = _claim()["form_photos"]
    read = served["form-digit"].predict_batch([{"image": p} for p in photos])
    assert [r["digit"] for r in read] == [4, 0, 7, 1, 5]
    assert all(0.5 < r["confidence"] <= 1 for r in read)
    assert served["form-digit"].predict_batch(photos[:1]) == read[:1]


def test_review_names_similar_cases_and_factors(
    ensemble: ModuleType, served: dict[str, Any]
) -> None:
    """risk-review gives a second opinion, the 3 closest training cases, the 3 measurements
    furthest above the benign mean (in decreasing order)."""
    review = _call(served["risk-review"], {"measurements": _claim()["measurements"]})
    assert 0 <= review["second_opinion"] <= 1
    train_cases = set(served["risk-review"].bundle["train_cases"])
    assert len(review["similar_cases"]) == 3
    assert all(c["case"] in train_cases for c in review["similar_cases"])
    assert all(c["diagnosis"] in ("benign", "malignant") for c in review["similar_cases"])
    distances = [c["distance"] for c in review["similar_cases"]]
    assert distances == sorted(distances)
    zs = [f["z"] for f in review["top_factors"]]
    assert len(zs) == 3 and zs == sorted(zs, reverse=True) and zs[0] > 0


def _run(
    specs: dict[str, Any], name: str, run_input: Any, models: dict[str, freight.Model]
) -> tuple[Any, dict[str, Any]]:
    """A pipeline run in process with the pure planner (what the durable layer does with
    rows): each started step is predicted at once; returns the outcome and the states."""
    import freight.pipelines as fp
    from freight.pipelines.plan import StepState, StepStatus

    spec = specs[name]
    states = fp.initial_states(spec)
    for _ in range(2 * len(spec.order) + 1):
        decision = fp.plan(spec, run_input, states)
        states.update({s: StepState(StepStatus.SKIPPED) for s in decision.skip})
        states.update(
            {s: StepState(StepStatus.SUCCEEDED, output=o) for s, o in decision.complete.items()}
        )
        states.update({s: StepState(StepStatus.FAILED, error=e) for s, e in decision.fail.items()})
        if decision.outcome is not None:
            return decision.outcome, states
        for start in decision.start:
            inputs = start.inputs if start.inputs is not None else [start.input]
            outputs = []
            for value in inputs:
                if start.kind == "pipeline":
                    outcome, _ = _run(specs, start.target, value, models)
                    assert outcome.status == "succeeded", outcome
                    outputs.append(outcome.output)
                else:
                    outputs.append(_call(models[start.target], value))
            output = outputs if start.inputs is not None else outputs[0]
            states[start.step] = StepState(StepStatus.SUCCEEDED, output=output)
    raise AssertionError(f"pipeline {name} did not finish")


@pytest.fixture
def pipelines(ensemble: ModuleType) -> dict[str, Any]:
    """examples/freight.yaml's pipelines, checked against every example model's name."""
    import yaml

    import freight.pipelines as fp

    raw = yaml.safe_load((EXAMPLES / "freight.yaml").read_text())["pipelines"]
    names = {"digits", "echo", "sleep", "tabular", *ENSEMBLE_MODELS}
    specs: dict[str, Any] = fp.parse_pipelines(raw, targets=names)
    return specs


def test_pipelines_use_every_kind_of_step(pipelines: dict[str, Any]) -> None:
    """claim-triage fans out over the photos, nests risk-ensemble and has a condition;
    risk-ensemble runs two models in parallel and a third on both their outputs."""
    assert set(pipelines) == {"risk-ensemble", "claim-triage"}
    triage, risk = pipelines["claim-triage"], pipelines["risk-ensemble"]
    assert triage.steps["policy"].fan_out and triage.steps["policy"].target == "form-digit"
    assert triage.nested == {"risk-ensemble"}
    assert triage.steps["review"].conditional and triage.steps["review"].needs == {"risk"}
    assert risk.steps["linear"].needs == risk.steps["forest"].needs == frozenset()
    assert risk.steps["stack"].needs == {"linear", "forest"}


def test_claim_triage_reviews_a_high_risk_claim(
    pipelines: dict[str, Any], served: dict[str, freight.Model]
) -> None:
    """claim.json: the policy number is read, the risk is high, so the review runs."""
    outcome, states = _run(pipelines, "claim-triage", _claim(), served)
    assert outcome.status == "succeeded", outcome
    output = outcome.output
    assert output["claim_id"] == "CLM-0042"
    assert output["policy_number"] == [4, 0, 7, 1, 5]
    assert output["risk"]["level"] == "high" and output["risk"]["label"] == "malignant"
    assert output["review"]["similar_cases"]
    assert {name: state.status for name, state in states.items()} == dict.fromkeys(
        ("policy", "risk", "review"), "succeeded"
    )


def test_claim_triage_skips_the_review_of_a_low_risk_claim(
    pipelines: dict[str, Any], served: dict[str, freight.Model]
) -> None:
    """claim-low.json: a low risk, so the review step is skipped and outputs null."""
    outcome, states = _run(pipelines, "claim-triage", _claim("claim-low.json"), served)
    assert outcome.status == "succeeded", outcome
    assert outcome.output["risk"]["level"] == "low"
    assert outcome.output["review"] is None
    assert states["review"].status == "skipped"


def test_risk_ensemble_is_cached_once(
    ensemble: ModuleType, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The four risk models share one cached bundle: the first load trains it, the others
    (and later starts) only read it."""
    path = sys.modules["_training"].cache_path(ensemble.CACHE_NAME)
    assert path.parent == cache_dir
    ensemble.RiskLinear().load()
    assert path.exists()

    def fail() -> None:
        raise AssertionError("trained again despite the cache")

    monkeypatch.setattr(ensemble, "train", fail)
    for cls in (ensemble.RiskForest, ensemble.RiskStack, ensemble.RiskReview):
        cls().load()
    assert [p.name for p in cache_dir.iterdir()] == [path.name]
