"""An ensemble for health-insurance claims: the models of the ``claim-triage`` pipeline.

A claim (``inputs/claim.json``) holds the biopsy measurements behind the claimed
diagnosis (the 30 features of scikit-learn's bundled Wisconsin breast-cancer
data, keyed by name) and photos of the handwritten policy-number boxes of the
claim form (base64 PNGs, one digit each). ``freight.yaml`` wires these models
into two pipelines:

- ``risk-ensemble``: ``risk-linear`` (standardisation + logistic regression) and
  ``risk-forest`` (a random forest) score the measurements in parallel;
  ``risk-stack``, a logistic regression trained on the two models' out-of-fold
  predictions (stacking), combines both into one risk and a level;
- ``claim-triage``: reads the policy number with ``form-digit`` once per photo
  (``for_each``), runs ``risk-ensemble`` as a nested step, and only when the
  combined risk is high runs ``risk-review`` (``when:``), a k-nearest-neighbours
  second opinion that also names the most similar past cases and the
  measurements that stand out.

"Risk" is the probability of the malignant class. The data set is split once
(70 % train, 30 % held out, stratified, fixed seeds); every model is trained on
the train part only, so the accuracies kept with them (``metrics``, see
:func:`train`) are measured on cases none of them saw. All four risk models are
trained together, in one call, and cached as one file (see ``_training.py``),
so that the stacker always matches the two base models it was trained on.

Outputs (numbers rounded to 4 places):

- ``risk-linear`` / ``risk-forest``: ``{"risk": 0.97, "label": "malignant"}``;
- ``risk-stack``: ``{"risk": 0.99, "level": "high", "label": "malignant"}``
  (levels: ``low`` below 0.2, ``medium`` below 0.5, else ``high``);
- ``risk-review``: ``{"second_opinion": 1.0, "similar_cases": [{"case": 17,
  "diagnosis": "malignant", "distance": 2.1}, ...], "top_factors": [{"feature":
  "worst area", "z": 5.3}, ...]}``, ``case`` being the row of the bundled data set
  and ``z`` how many standard deviations above the benign cases' mean it lies;
- ``form-digit``: ``{"digit": 7, "confidence": 0.9996}``, read by the ``digits``
  example's classifier (the same cached model).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from typing import Any

from _training import cached
from digits import image_to_features
from digits import train as train_digits

import freight

CACHE_NAME = "risk-ensemble"
SEED = 0
TEST_SIZE = 0.3
FOLDS = 5
HIGH, MEDIUM = 0.5, 0.2  # risk thresholds of the levels
NEIGHBOURS = 7  # risk-review's k
SHOWN_CASES = 3  # similar cases listed by risk-review
SHOWN_FACTORS = 3  # measurements listed by risk-review
LABELS = ("benign", "malignant")  # by risk >= 0.5


def _logit(probabilities: Any) -> Any:
    """The stacker's features: the base models' risks on the log-odds scale."""
    import numpy as np

    p = np.clip(np.asarray(probabilities, dtype=float), 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p))


def train() -> dict[str, Any]:
    """Fit the four risk models deterministically; return them with their held-out
    accuracies (``metrics``: ``linear``, ``forest``, ``stack`` and, for comparison,
    ``average``, the plain mean of the two base risks)."""
    import numpy as np
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict, train_test_split
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = load_breast_cancer()
    x, y = data.data, (data.target == 0).astype(int)  # target 0 is malignant: risk = 1
    train_cases, test_cases = train_test_split(
        np.arange(len(y)), test_size=TEST_SIZE, random_state=SEED, stratify=y
    )
    x_train, y_train = x[train_cases], y[train_cases]
    x_test, y_test = x[test_cases], y[test_cases]

    linear = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=SEED))
    forest = RandomForestClassifier(n_estimators=100, random_state=SEED)
    # stacking: the combiner learns from predictions on cases each base model did not
    # see (out of fold), or it would learn to trust the forest's memorised train fit
    folds = StratifiedKFold(FOLDS, shuffle=True, random_state=SEED)
    out_of_fold = np.column_stack(
        [
            cross_val_predict(model, x_train, y_train, cv=folds, method="predict_proba")[:, 1]
            for model in (linear, forest)
        ]
    )
    stack = LogisticRegression(random_state=SEED).fit(_logit(out_of_fold), y_train)
    linear.fit(x_train, y_train)
    forest.fit(x_train, y_train)
    review = make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=NEIGHBOURS))
    review.fit(x_train, y_train)

    base = np.column_stack([m.predict_proba(x_test)[:, 1] for m in (linear, forest)])
    risks = {
        "linear": base[:, 0],
        "forest": base[:, 1],
        "stack": stack.predict_proba(_logit(base))[:, 1],
        "average": base.mean(axis=1),
    }
    metrics = {name: float(((r >= HIGH) == y_test).mean()) for name, r in risks.items()}
    benign = x_train[y_train == 0]
    return {
        "features": [str(f) for f in data.feature_names],
        "linear": linear,
        "forest": forest,
        "stack": stack,
        "review": review,
        "train_cases": [int(i) for i in train_cases],
        "train_labels": [int(v) for v in y_train],
        "test_cases": [int(i) for i in test_cases],
        "benign_mean": benign.mean(axis=0),
        "benign_std": benign.std(axis=0),
        "metrics": metrics,
    }


def measurements_row(value: Any, features: Sequence[str]) -> list[float]:
    """One case's 30 values, in data-set order, from a dict keyed by feature name
    (extra keys ignored) or a list of the values in that order."""
    if isinstance(value, Mapping):
        missing = [f for f in features if f not in value]
        if missing:
            raise ValueError(f"measurements lack {missing[:3]} ({len(missing)} missing)")
        return [float(value[f]) for f in features]
    if isinstance(value, list):
        if len(value) != len(features):
            raise ValueError(f"expected {len(features)} measurements, got {len(value)}")
        return [float(v) for v in value]
    raise ValueError(f"measurements must be an object or a list, not {type(value).__name__}")


def _risk(value: Any, where: str) -> float:
    risk = value.get("risk") if isinstance(value, Mapping) else None
    if isinstance(risk, bool) or not isinstance(risk, int | float) or not 0 <= risk <= 1:
        raise ValueError(f'{where}: expected {{"risk": <0..1>, ...}}, got {value!r}')
    return float(risk)


def level(risk: float) -> str:
    """``low``, ``medium`` or ``high``."""
    return "high" if risk >= HIGH else "medium" if risk >= MEDIUM else "low"


class _RiskModel(freight.Model):
    """Shared by the risk models: the cached bundle of :func:`train` (not served)."""

    replicas = freight.Replicas(min=1, max=1)
    batching = freight.Batching(max_size=16, max_wait_ms=0)

    def load(self) -> None:
        self.use(cached(CACHE_NAME, train))

    def use(self, bundle: dict[str, Any]) -> None:
        """Serve from a bundle made by :func:`train` (what ``load`` reads from the cache)."""
        self.bundle = bundle
        self.features: list[str] = bundle["features"]


class _BaseRisk(_RiskModel):
    """A base model: measurements in, ``{"risk", "label"}`` out."""

    part = ""

    def predict_batch(self, inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        rows = [measurements_row(item, self.features) for item in inputs]
        risks = self.bundle[self.part].predict_proba(rows)[:, 1]
        return [{"risk": round(float(r), 4), "label": LABELS[int(r >= HIGH)]} for r in risks]


class RiskLinear(_BaseRisk):
    """Standardisation + logistic regression on the 30 measurements."""

    name = "risk-linear"
    part = "linear"


class RiskForest(_BaseRisk):
    """A random forest (100 trees) on the 30 measurements."""

    name = "risk-forest"
    part = "forest"


class RiskStack(_RiskModel):
    """The stacking combiner: ``{"linear": <risk-linear output>, "forest": <risk-forest
    output>}`` in, the combined ``{"risk", "level", "label"}`` out."""

    name = "risk-stack"

    def predict_batch(self, inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        pairs = []
        for item in inputs:
            if not isinstance(item, Mapping):
                raise ValueError(f'expected {{"linear": ..., "forest": ...}}, got {item!r}')
            pairs.append([_risk(item.get(part), part) for part in ("linear", "forest")])
        risks = self.bundle["stack"].predict_proba(_logit(pairs))[:, 1]
        return [
            {"risk": round(float(r), 4), "level": level(float(r)), "label": LABELS[int(r >= HIGH)]}
            for r in risks
        ]


class RiskReview(_RiskModel):
    """A detailed review of a high-risk case: ``{"measurements": ...}`` in; a
    k-nearest-neighbours second opinion, the closest past cases and the
    measurements furthest above the benign cases' mean out."""

    name = "risk-review"
    batching = freight.Batching()

    def predict(self, input: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(input, Mapping) or "measurements" not in input:
            raise ValueError('expected {"measurements": {...}}')
        row = measurements_row(input["measurements"], self.features)
        review = self.bundle["review"]
        scaler, knn = review[0], review[-1]
        second = float(review.predict_proba([row])[0, 1])
        distances, neighbours = knn.kneighbors(scaler.transform([row]), n_neighbors=SHOWN_CASES)
        cases, labels = self.bundle["train_cases"], self.bundle["train_labels"]
        similar = [
            {
                "case": cases[int(n)],
                "diagnosis": LABELS[labels[int(n)]],
                "distance": round(float(d), 4),
            }
            for d, n in zip(distances[0], neighbours[0], strict=True)
        ]
        z = (row - self.bundle["benign_mean"]) / self.bundle["benign_std"]
        top = sorted(range(len(z)), key=lambda i: -float(z[i]))[:SHOWN_FACTORS]
        factors = [{"feature": self.features[i], "z": round(float(z[i]), 2)} for i in top]
        return {
            "second_opinion": round(second, 4),
            "similar_cases": similar,
            "top_factors": factors,
        }


def decode_photo(value: Any) -> bytes:
    """The image bytes of ``{"image": "<base64>"}`` (or of the base64 string itself)."""
    text = value.get("image") if isinstance(value, Mapping) else value
    if not isinstance(text, str):
        raise ValueError('expected {"image": "<base64 PNG or JPEG>"}')
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"image is not valid base64: {exc}") from exc


class FormDigit(freight.Model):
    """One handwritten digit of a claim form: ``{"image": "<base64>"}`` in,
    ``{"digit", "confidence"}`` out (the ``digits`` example's cached classifier)."""

    name = "form-digit"
    batching = freight.Batching(max_size=16, max_wait_ms=0)
    replicas = freight.Replicas(min=1, max=1)

    def load(self) -> None:
        self.estimator = cached("digits", train_digits)

    def predict_batch(self, inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        features = [image_to_features(decode_photo(item)) for item in inputs]
        results = []
        for scores in self.estimator.predict_proba(features):
            best = int(scores.argmax())
            results.append({"digit": best, "confidence": round(float(scores[best]), 4)})
        return results
