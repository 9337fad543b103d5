"""Models of the composition matrix: tiny, deterministic, importing only freight.

``iris`` labels iris flowers (sepal length, sepal width, petal length, petal
width, in cm) with the two petal-width thresholds of a depth-2 decision tree fitted to
scikit-learn's bundled iris data (it labels 144 of the 150 rightly). It takes
bytes, so one model serves every input of the matrix: a JSON object
``{"rows": [[5.1, 3.5, 1.4, 0.2], …]}`` (inline, uploaded, or a pipeline step's
rendered input) or CSV text, one row per line. ``count`` counts the labels it is
given (a JSON model: as a pipeline step it gets a large ``iris`` output by
reference, read from the store).
"""

from __future__ import annotations

import json
from typing import Any

import freight

#: the tree's thresholds on petal width (cm), as DecisionTreeClassifier(max_depth=2) finds
SETOSA_PETAL_WIDTH_MAX = 0.8
VERSICOLOR_PETAL_WIDTH_MAX = 1.75


def label(row: list[float]) -> str:
    petal_width = row[3]
    if petal_width <= SETOSA_PETAL_WIDTH_MAX:
        return "setosa"
    return "versicolor" if petal_width <= VERSICOLOR_PETAL_WIDTH_MAX else "virginica"


def rows_of(data: bytes) -> list[list[float]]:
    text = data.decode().strip()
    if text.startswith("{"):
        rows: list[list[float]] = json.loads(text)["rows"]
        return rows
    return [[float(cell) for cell in line.split(",")] for line in text.splitlines() if line]


class Iris(freight.Model):
    """``{"labels": [...]}``, one label per row of its input."""

    name = "iris"

    def predict(self, input: bytes) -> dict[str, Any]:
        return {"labels": [label(row) for row in rows_of(input)]}


class Count(freight.Model):
    """The number of labels in ``input["labels"]``."""

    name = "count"

    def predict(self, input: dict[str, Any]) -> int:
        return len(input["labels"])
