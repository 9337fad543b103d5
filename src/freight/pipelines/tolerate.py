"""Tolerated failures of a ``for_each`` step (``tolerate:``), like a Step Functions
``Map`` state's tolerated failure count or percentage.

``tolerate: {count: N}`` lets up to N elements fail, ``{percent: P}`` up to P % of
them; the step then succeeds once every element has finished, its gathered output
holding, at each failed element's place, ``{"error": {"code", "message"}}`` (so a
template can keep the good ones: ``$steps.X.output[?!error]``). One failure more
fails the step at once, as the first failure does without ``tolerate``, and
cancels what is left of its elements. A failed element counts once its retries
(``retry:``) are spent. The step's row counts its failed elements in
``error_detail`` (``{"items", "failed_items"}``) while it runs and after.

Pure: parsed and checked here, applied by ``pipelines/runs.py`` and ``plan.fan_in``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

TOLERATE_KEYS = frozenset({"count", "percent"})


@dataclass(frozen=True, slots=True)
class Tolerance:
    count: int | None = None
    percent: float | None = None

    def allows(self, failed: int, items: int) -> bool:
        """Whether ``failed`` of ``items`` elements failing leaves the step standing."""
        if self.count is not None:
            return failed <= self.count
        return failed * 100 <= (self.percent or 0.0) * items

    def exceeded(self, failed: int, items: int) -> str:
        """The start of the message of a step that failed past its tolerance."""
        allowed = f"{self.count}" if self.count is not None else f"{self.percent:g} %"
        return f"{failed} of {items} elements failed, more than tolerated ({allowed}); "


def check_tolerate(raw: Mapping[str, Any]) -> list[str]:
    """Every fault of a step's ``tolerate:``, in words."""
    value = raw.get("tolerate")
    if value is None:
        return []
    faults: list[str] = []
    if raw.get("for_each") is None:
        faults.append("tolerate applies only to a for_each step")
    if not isinstance(value, Mapping) or len(value) != 1 or not set(value) <= TOLERATE_KEYS:
        return [*faults, f"tolerate must be {{count: N}} or {{percent: P}}, got {value!r}"]
    number = next(iter(value.values()))
    if isinstance(number, bool) or not isinstance(number, int | float):
        return [*faults, f"tolerate must be a number, got {number!r}"]
    if "count" in value and not (isinstance(number, int) and number >= 0):
        faults.append(f"tolerate.count must be an integer >= 0, got {number!r}")
    if "percent" in value and not (math.isfinite(number) and 0 <= number <= 100):
        faults.append(f"tolerate.percent must be from 0 to 100, got {number!r}")
    return faults


def parse_tolerate(raw: Mapping[str, Any]) -> Tolerance | None:
    """The tolerance of a step that passed :func:`check_tolerate` (None: none)."""
    value = raw.get("tolerate")
    if value is None:
        return None
    if "count" in value:
        return Tolerance(count=int(value["count"]))
    return Tolerance(percent=float(value["percent"]))


def marker(code: str, message: str) -> dict[str, Any]:
    """What a failed element's place holds in its step's gathered output."""
    return {"error": {"code": code, "message": message}}


__all__ = ["TOLERATE_KEYS", "Tolerance", "check_tolerate", "marker", "parse_tolerate"]
