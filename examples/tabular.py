"""``tabular``: a breast-cancer classifier scoring many rows per prediction.

One prediction is a *bulk* request: a table of rows, sent either as JSON
(a list of rows, each a dict keyed by feature name or a list of the 30 values
in dataset order) or as CSV with a header row of feature names. The input is a
``freight.Payload`` so that one model accepts both and its content type
decides how to read it; a large CSV is read from disk row by row, not loaded
into memory as one string first.

Output: ``{"predictions": [{"label": "benign", "probability": 0.98}, ...],
"rows": n}`` in input order, ``probability`` being that of the predicted label.

A JSON *object* of feature -> value (no ``"rows"`` key) is one row, answered with
its own ``{"label": ..., "probability": ...}``: what a batch job sends per record
(each line of a JSON Lines file, each row of a CSV file). ``predict_batch``
scores every row of every input in one ``predict_proba`` call, then splits the
scores back per input; an input that cannot be read fails alone (its slot in
the returned list holds the exception, which freight reports as that input's
``model_error``), the others are still scored.

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

    def read_input(self, payload: freight.Payload) -> tuple[list[list[float]], bool]:
        """The rows of one input, and whether it is a single row (a JSON object of
        feature -> value) rather than a table."""
        kind = media_type(payload.content_type)
        if kind in JSON_TYPES or kind.endswith("+json"):
            value = payload.json()
            if isinstance(value, dict) and "rows" not in value:
                return [_row(value, self.features, 0)], True
            return rows_from_json(value, self.features), False
        return self.read_rows(payload), False

    def score(self, rows: list[list[float]]) -> list[dict[str, Any]]:
        """One prediction per row, from one predict_proba call over all of them."""
        if not rows:
            return []
        predictions = []
        for scores in self.estimator.predict_proba(rows):
            best = int(scores.argmax())
            predictions.append(
                {"label": self.labels[best], "probability": round(float(scores[best]), 6)}
            )
        return predictions

    def predict(self, input: freight.Payload) -> dict[str, Any]:
        rows = self.read_rows(input)
        return {"predictions": self.score(rows), "rows": len(rows)}

    def predict_batch(self, inputs: list[freight.Payload]) -> list[dict[str, Any] | Exception]:
        """Every input's rows scored together; an unreadable input fails alone."""
        read: list[tuple[list[list[float]], bool] | Exception] = []
        for payload in inputs:
            try:
                read.append(self.read_input(payload))
            except (ValueError, TypeError) as exc:  # this input only: returned, not raised
                read.append(exc)
        scores = iter(
            self.score([row for r in read if not isinstance(r, Exception) for row in r[0]])
        )
        outputs: list[dict[str, Any] | Exception] = []
        for item in read:
            if isinstance(item, Exception):
                outputs.append(item)
                continue
            rows, single = item
            predictions = [next(scores) for _ in rows]
            outputs.append(
                predictions[0] if single else {"predictions": predictions, "rows": len(rows)}
            )
        return outputs
