"""The error a runner reports for a model's exception: the model's frames only.

Why: an error's ``detail`` is shown to whoever made the prediction. A full
traceback would show freight's own frames and the server's absolute paths
(where it is installed, the user's home directory); what helps the model's
author is the part of the stack in their own code. So the traceback keeps only
frames of files under the project directory, named relative to it, and never
frames of freight itself or of the interpreter's libraries (which a project
directory may contain, e.g. a virtualenv inside it).
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Any

#: at most this many of the model's innermost frames are kept
MAX_FRAMES = 20

_FREIGHT_DIR = Path(__file__).resolve().parents[1]  # the freight package
_LIBRARY_DIRS = tuple(
    d for d in {Path(p).resolve() for p in (sys.prefix, sys.base_prefix)} if d != Path(d.anchor)
)


def _relative(filename: str, project_dir: Path) -> str | None:
    """``filename`` relative to the project when it is the model's code, else None."""
    try:
        path = Path(filename).resolve()
    except (OSError, RuntimeError, ValueError):
        return None
    if path.is_relative_to(_FREIGHT_DIR) or any(path.is_relative_to(d) for d in _LIBRARY_DIRS):
        return None
    if not path.is_relative_to(project_dir):
        return None
    return path.relative_to(project_dir).as_posix()


def model_frames(exc: BaseException, project_dir: Path) -> traceback.StackSummary:
    """The frames of ``exc``'s traceback that are in the project, paths made relative."""
    root = project_dir.resolve()
    kept: list[traceback.FrameSummary] = []
    for frame in traceback.extract_tb(exc.__traceback__):
        name = _relative(frame.filename, root)
        if name is not None:
            kept.append(traceback.FrameSummary(name, frame.lineno, frame.name, line=frame.line))
    return traceback.StackSummary.from_list(kept[-MAX_FRAMES:])


def model_traceback(exc: BaseException, project_dir: Path) -> str:
    """A traceback text of ``exc`` holding only the model's own frames."""
    frames = model_frames(exc, project_dir)
    head = "Traceback (most recent call last):\n" if frames else ""
    tail = "".join(traceback.format_exception_only(exc))
    return head + "".join(frames.format()) + tail


def error_detail(exc: BaseException, project_dir: Path) -> dict[str, Any]:
    """The ``detail`` of a failed prediction or load: exception type and clean traceback."""
    return {"type": type(exc).__name__, "traceback": model_traceback(exc, project_dir)}


def error_message(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


__all__ = ["error_detail", "error_message", "model_frames", "model_traceback"]
