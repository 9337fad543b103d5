"""``digits``: reads a handwritten digit from an image.

Input: the bytes of a PNG or JPEG of one digit, any size. The image is
converted to grayscale and shrunk to the 8x8 grid that scikit-learn's bundled
digits data set uses, with values on the same 0..16 ink scale. Images drawn
dark-on-light (the usual way) are inverted; light-on-dark ones (MNIST style)
are kept, decided by the mean brightness — so both conventions work.

Output: ``{"label": 7, "scores": {"0": 0.001, ..., "9": 0.0}}``.

The classifier (standardisation + logistic regression, fixed ``random_state``)
is trained on the bundled data the first time any replica loads, and cached
(see ``_training.py``, which also renders dataset digits to PNG for tests).
"""

from __future__ import annotations

import io
from typing import Any

from _training import cached, render_digit_png

import freight

__all__ = ["Digits", "image_to_features", "render_digit_png"]


def train() -> Any:
    """Fit the classifier deterministically on all 1,797 bundled digits."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = load_digits()
    estimator = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=0))
    estimator.fit(data.data, data.target)
    return estimator


def image_to_features(image_bytes: bytes) -> list[float]:
    """Decode an image into the 64 values (0..16, 16 = most ink) the model was trained on."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(image_bytes))
        image.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"not a readable image: {exc}") from exc
    gray = image.convert("L").resize((8, 8), Image.Resampling.BOX)
    values = list(gray.tobytes())  # one byte per pixel in mode "L"
    dark_ink = sum(values) / len(values) > 127  # mostly light background
    return [((255 - v) if dark_ink else v) * 16 / 255 for v in values]


class Digits(freight.Model):
    name = "digits"
    batching = freight.Batching(max_size=16, max_wait_ms=5)
    replicas = freight.Replicas(min=1, max=2)

    def load(self) -> None:
        self.estimator = cached("digits", train)

    def predict_batch(self, inputs: list[bytes]) -> list[dict[str, Any]]:
        features = [image_to_features(item) for item in inputs]
        results = []
        for scores in self.estimator.predict_proba(features):
            results.append(
                {
                    "label": int(scores.argmax()),
                    "scores": {str(d): round(float(p), 6) for d, p in enumerate(scores)},
                }
            )
        return results
