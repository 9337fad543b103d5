"""``tabular``: a breast-cancer classifier scoring many rows per prediction.

One prediction is a *bulk* request: a table of rows, sent either as JSON
(a list of rows, each a dict keyed by feature name or a list of the 30 values
in dataset order) or as CSV with a header row of feature names. The input is a
``freight.Payload`` so that one model accepts both and its content type
decides how to read it; a large CSV is read from disk row by row, not loaded
into memory as one string first.

Output: ``{"predictions": [{"label": "benign", "probability": 0.98}, ...],
"rows": n}`` in input order, ``probability`` being that of the predicted label.

The classifier (standardisation + logistic regression, fixed ``random_state``)
is trained on scikit-learn's bundled Wisconsin breast-cancer data the first
time any replica loads, and cached (see ``_training.py``).
"""

from __future__ import annotations

import csv
import io
from typing import Any

from _training import cached

import freight

JSON_TYPES = {"application/json", "text/json"}
CSV_TYPES = {"text/csv", "application/csv"}


def train() -> Any:
    """Fit the classifier deterministically on the whole bundled data set."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = load_breast_cancer()
    estimator = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=0))
    estimator.fit(data.data, data.target)
    estimator.freight_feature_names = [str(f) for f in data.feature_names]
    estimator.freight_label_names = [str(t) for t in data.target_names]
    return estimator


def media_type(content_type: str) -> str:
    """``text/csv; charset=utf-8`` -> ``text/csv``."""
    return content_type.split(";", 1)[0].strip().lower()


def rows_from_json(value: Any, features: list[str]) -> list[list[float]]:
    """Accept ``[row, ...]`` or ``{"rows": [row, ...]}``; each row a dict or a list."""
    if isinstance(value, dict) and "rows" in value:
        value = value["rows"]
    if not isinstance(value, list):
        raise ValueError("expected a JSON list of rows (or {'rows': [...]})")
    return [_row(item, features, number) for number, item in enumerate(value)]


def _row(item: Any, features: list[str], number: int) -> list[float]:
    if isinstance(item, dict):
        missing = [f for f in features if f not in item]
        if missing:
            raise ValueError(f"row {number}: missing features {missing[:3]}")
        return [float(item[f]) for f in features]
    if isinstance(item, list):
        if len(item) != len(features):
            raise ValueError(f"row {number}: expected {len(features)} values, got {len(item)}")
        return [float(v) for v in item]
    raise ValueError(f"row {number}: expected an object or a list, got {type(item).__name__}")


def rows_from_csv(stream: io.TextIOBase, features: list[str]) -> list[list[float]]:
    """Read rows by header name, so column order and extra columns (ids) do not matter."""
    reader = csv.DictReader(stream)
    header = reader.fieldnames or []
    missing = [f for f in features if f not in header]
    if missing:
        raise ValueError(f"CSV header lacks features {missing[:3]} (of {len(missing)} missing)")
    return [[float(record[f]) for f in features] for record in reader]


class Tabular(freight.Model):
    name = "tabular"
    replicas = freight.Replicas(min=1, max=2)

    def load(self) -> None:
        self.estimator = cached("tabular", train)
        self.features: list[str] = self.estimator.freight_feature_names
        self.labels: list[str] = self.estimator.freight_label_names

    def read_rows(self, payload: freight.Payload) -> list[list[float]]:
        kind = media_type(payload.content_type)
        if kind in JSON_TYPES or kind.endswith("+json"):
            return rows_from_json(payload.json(), self.features)
        if kind in CSV_TYPES:
            with payload.open() as raw, io.TextIOWrapper(raw, "utf-8-sig", newline="") as text:
                return rows_from_csv(text, self.features)
        raise ValueError(f"unsupported content type {payload.content_type!r}: send JSON or CSV")

    def predict(self, input: freight.Payload) -> dict[str, Any]:
        rows = self.read_rows(input)
        if not rows:
            return {"predictions": [], "rows": 0}
        probabilities = self.estimator.predict_proba(rows)
        predictions = []
        for scores in probabilities:
            best = int(scores.argmax())
            predictions.append(
                {"label": self.labels[best], "probability": round(float(scores[best]), 6)}
            )
        return {"predictions": predictions, "rows": len(rows)}
