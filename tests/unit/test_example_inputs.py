"""The README tour's sample inputs under examples/inputs/ match what their script makes."""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

INPUTS = Path(__file__).resolve().parents[2] / "examples" / "inputs"

pytest.importorskip("sklearn")
pytest.importorskip("PIL")


def make_inputs() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_make_inputs", INPUTS / "make_inputs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_samples_are_up_to_date() -> None:
    """digit.png and rows.csv are exactly what make_inputs.py regenerates."""
    assert make_inputs().stale() == []


def test_samples_are_a_seven_and_five_rows() -> None:
    """digit.png is dataset digit 7 (a "7") scaled up; rows.csv has a header and 5 rows."""
    from PIL import Image
    from sklearn.datasets import load_digits

    module = make_inputs()
    image = Image.open(io.BytesIO((INPUTS / "digit.png").read_bytes()))
    assert image.size == (64, 64)
    assert load_digits().target[module.DIGIT_INDEX] == 7
    lines = (INPUTS / "rows.csv").read_text().splitlines()
    assert len(lines) == 1 + 5 and lines[0].startswith("mean radius,")


def test_check_mode_exits_zero() -> None:
    """``make_inputs.py --check`` exits 0 on the committed files."""
    done = subprocess.run(
        [sys.executable, str(INPUTS / "make_inputs.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
