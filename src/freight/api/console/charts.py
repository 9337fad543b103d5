"""Small inline SVG charts drawn on the server (pure): no script, no CDN.

A chart is a list of values, oldest first (one per bucket of the last hour); None is
a bucket without data. Each function returns SVG markup that Jinja2 inserts as is:
only numbers go into it, never text of a caller's.
"""

from __future__ import annotations

from collections.abc import Sequence

WIDTH = 120
HEIGHT = 28


def _scale(values: Sequence[float | None]) -> float:
    top = max((v for v in values if v is not None), default=0.0)
    return top if top > 0 else 1.0


def bars(values: Sequence[float | None], *, css: str = "bars", title: str = "") -> str:
    """One bar per bucket, scaled to the largest."""
    top = _scale(values)
    width = WIDTH / max(1, len(values))
    rects = []
    for i, value in enumerate(values):
        if not value:
            continue
        h = max(1.0, value / top * (HEIGHT - 2))
        rects.append(
            f'<rect x="{i * width:.1f}" y="{HEIGHT - h:.1f}" '
            f'width="{max(1.0, width - 1):.1f}" height="{h:.1f}"/>'
        )
    return _svg(css, title, "".join(rects))


def line(values: Sequence[float | None], *, css: str = "line", title: str = "") -> str:
    """A polyline through the buckets with data (gaps are skipped)."""
    top = _scale(values)
    step = WIDTH / max(1, len(values) - 1)
    points = [
        f"{i * step:.1f},{HEIGHT - 1 - v / top * (HEIGHT - 2):.1f}"
        for i, v in enumerate(values)
        if v is not None
    ]
    body = f'<polyline fill="none" points="{" ".join(points)}"/>' if points else ""
    return _svg(css, title, body)


def _svg(css: str, title: str, body: str) -> str:
    # title is ours (a fixed label), never a caller's text: still escaped by the template
    return (
        f'<svg class="chart {css}" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" '
        f'height="{HEIGHT}" role="img" aria-label="{title}">{body}</svg>'
    )


__all__ = ["bars", "line"]
