"""Model of bench/scaling.py B7-sklearn: a module that imports scikit-learn, so a fresh
runner pays for that import on every start (a runner forked from the template does
not). load() fits a small classifier on a bundled data set: its own cost, subtracted."""

from __future__ import annotations

from typing import Any

from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

import freight


class ColdSklearn(freight.Model):
    """No replica while idle (back to zero one second after the last request)."""

    name = "cold-sklearn"
    replicas = freight.Replicas(min=0, max=1, target_backlog=1, idle_s=1)

    def load(self) -> None:
        features, labels = load_iris(return_X_y=True)
        self.model = LogisticRegression(max_iter=500).fit(features, labels)

    def predict(self, input: dict[str, Any]) -> dict[str, Any]:
        row = input.get("x", [5.1, 3.5, 1.4, 0.2])
        return {"label": int(self.model.predict([row])[0])}
