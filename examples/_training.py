"""Train-once helpers shared by the examples (defines no Model, so discovery skips it).

Every replica calls ``load()``; training on each start would make scale-up slow
and replicas disagree if training were not deterministic. So the first replica
trains (with a fixed ``random_state``) and saves the fitted estimator with
joblib under the cache directory; every later ``load()`` reads that file.

The file is written to a temporary name and renamed into place, so a replica
starting while another one trains never reads half a file: two replicas that
race both train, and the last rename wins with an equally valid model.

The cache file name carries the scikit-learn version, because joblib files are
pickles and an estimator pickled by one version may not load under another.
The cache is our own output, never user input, so unpickling it is safe.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

CACHE_ENV = "FREIGHT_CACHE_DIR"


def cache_dir() -> Path:
    """``$FREIGHT_CACHE_DIR``, else ``<cwd>/.freight/cache`` (next to freight's state)."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured) if configured else Path.cwd() / ".freight" / "cache"


def cache_path(name: str) -> Path:
    """Where the fitted estimator called ``name`` is cached."""
    import sklearn

    return cache_dir() / f"{name}-sklearn{sklearn.__version__}.joblib"


def cached(name: str, train: Callable[[], Any]) -> Any:
    """Return the cached estimator ``name``, training and saving it on first use.

    An unreadable cache file (truncated by a crash, say) is treated as absent.
    """
    import joblib

    path = cache_path(name)
    if path.exists():
        try:
            return joblib.load(path)
        except Exception:  # a corrupt cache must not stop the model from serving
            pass
    estimator = train()
    _save_atomically(estimator, path)
    return estimator


def _save_atomically(estimator: Any, path: Path) -> None:
    import joblib

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            joblib.dump(estimator, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def render_digit_png(index: int, scale: int = 4) -> bytes:
    """Render scikit-learn's digit number ``index`` as a PNG: dark ink on white.

    The 8x8 image (values 0..16, 16 = most ink) is scaled up ``scale`` times
    with nearest-neighbour sampling, so downscaling it back to 8x8 with a box
    filter recovers the original values up to 8-bit rounding. Used by the
    tests and the README tour to feed the digits model a realistic image.
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    pixels = load_digits().images[index]
    gray = bytes(round(255 - float(v) * 255 / 16) for v in pixels.flatten())
    image = Image.frombytes("L", (8, 8), gray)
    image = image.resize((8 * scale, 8 * scale), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
