"""Regenerate (or, with ``--check``, verify) the sample inputs of the README tour.

Both come from data sets bundled with scikit-learn, so nothing is downloaded:

- ``digit.png``: digit number 7 of ``load_digits()`` (a real handwritten "7"),
  its 8x8 grid scaled up 8 times to 64x64, dark ink on white;
- ``rows.csv``: 5 rows of ``load_breast_cancer()`` (3 malignant, 2 benign) with
  a header of the 30 feature names, the columns the ``tabular`` example reads;
- ``claim.json`` and ``claim-low.json``: inputs of the ``claim-triage`` pipeline
  (``examples/freight.yaml``): the measurements of one held-out breast-cancer case
  (``ensemble.py`` never trains on it; a malignant one that the linear model
  scores high and the forest below 0.5, and a benign one) keyed by feature name,
  and the claim form's policy number as photos of dataset digits (base64 PNGs).

Run from anywhere: ``python examples/inputs/make_inputs.py [--check]``. This
directory is below ``examples/``, so ``freight serve examples/`` never imports it.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DIGIT_INDEX = 7  # load_digits().target[7] == 7
DIGIT_SCALE = 8
ROW_INDICES = (0, 1, 19, 20, 2)  # malignant, malignant, benign, benign, malignant
# name: (claim id, breast-cancer row, dataset digits spelling the policy number 40715)
CLAIMS = {
    "claim.json": ("CLM-0042", 100, (4, 10, 17, 21, 15)),  # malignant, held out
    "claim-low.json": ("CLM-0043", 106, (4, 10, 17, 21, 15)),  # benign, held out
}
CLAIM_DIGIT_SCALE = 4


def digit_png() -> bytes:
    """The PNG of the tour's "7", rendered by the examples' own helper."""
    sys.path.insert(0, str(HERE.parent))
    try:
        from _training import render_digit_png
    finally:
        sys.path.remove(str(HERE.parent))
    png: bytes = render_digit_png(DIGIT_INDEX, scale=DIGIT_SCALE)
    return png


def rows_csv() -> str:
    """Five rows of the breast-cancer data, headed by the feature names."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([str(name) for name in data.feature_names])
    for index in ROW_INDICES:
        writer.writerow([repr(float(value)) for value in data.data[index]])
    return buffer.getvalue()


def claim_json(claim_id: str, row: int, digits: tuple[int, ...]) -> str:
    """A claim: its id, one case's measurements by feature name, the form's photos."""
    from sklearn.datasets import load_breast_cancer

    sys.path.insert(0, str(HERE.parent))
    try:
        from _training import render_digit_png
    finally:
        sys.path.remove(str(HERE.parent))
    data = load_breast_cancer()
    values = zip(data.feature_names, data.data[row], strict=True)
    measurements = {str(name): float(value) for name, value in values}
    photos = [
        base64.b64encode(render_digit_png(i, scale=CLAIM_DIGIT_SCALE)).decode() for i in digits
    ]
    claim = {"claim_id": claim_id, "measurements": measurements, "form_photos": photos}
    return json.dumps(claim, indent=2) + "\n"


def claim_pixels(text: str) -> object:
    """A claim with its photos decoded to pixels (PNG bytes may differ between Pillow
    versions)."""
    claim = json.loads(text)
    claim["form_photos"] = [pixels(base64.b64decode(p)) for p in claim["form_photos"]]
    return claim


def pixels(png: bytes) -> bytes:
    """Decoded grayscale pixels: PNG bytes may differ between Pillow versions."""
    from PIL import Image

    return Image.open(io.BytesIO(png)).convert("L").tobytes()


def stale() -> list[str]:
    """The sample files that are missing or differ from what this script makes."""
    wrong = []
    digit, rows = HERE / "digit.png", HERE / "rows.csv"
    if not digit.is_file() or pixels(digit.read_bytes()) != pixels(digit_png()):
        wrong.append(str(digit))
    if not rows.is_file() or rows.read_text() != rows_csv():
        wrong.append(str(rows))
    for name, args in CLAIMS.items():
        path = HERE / name
        if not path.is_file() or claim_pixels(path.read_text()) != claim_pixels(claim_json(*args)):
            wrong.append(str(path))
    return wrong


def main(argv: list[str]) -> int:
    if "--check" in argv:
        wrong = stale()
        for path in wrong:
            print(f"out of date: {path} (run {Path(__file__).name} to regenerate)")
        return 1 if wrong else 0
    (HERE / "digit.png").write_bytes(digit_png())
    (HERE / "rows.csv").write_text(rows_csv())
    for name, args in CLAIMS.items():
        (HERE / name).write_text(claim_json(*args))
    print(f"wrote {HERE / 'digit.png'}, {HERE / 'rows.csv'} and {', '.join(CLAIMS)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
