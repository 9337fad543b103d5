"""A step's retry policy (``retry:`` of a pipeline step), like Step Functions' ``Retry``.

A model step whose attempt fails with one of the codes in ``on`` is queued again, its
next attempt held back (``predictions.not_before``: it holds no replica meanwhile and
shows ``waiting_reason: retry_backoff``) for ``interval_s`` * ``backoff`` ** (attempt
- 1), at most ``max_interval_s``; with ``jitter`` a uniform share of that, drawn from
the row's id and attempt (the same on every replay of the advancement), so retries of
many steps do not fall on the same instant. ``max_attempts`` counts every attempt of
the step, the first included, whatever ended it: a replica that died under it spends
one too. Each failed attempt stays visible in the step's ``attempt_history``.

Pure: parsed and checked here (:func:`check_retry` lists every fault), applied by
``pipelines/runs.py`` when a step's failure is advanced.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from freight.prediction import ErrorCode

#: the keys of ``retry:``
RETRY_KEYS = frozenset({"on", "max_attempts", "interval_s", "backoff", "max_interval_s", "jitter"})
#: the codes a failed attempt may be retried on (a cancel or an expiry is never retried)
RETRYABLE = frozenset(
    {
        ErrorCode.MODEL_ERROR,
        ErrorCode.TIMEOUT,
        ErrorCode.ATTEMPTS_EXHAUSTED,
        ErrorCode.INPUT_ERROR,
        ErrorCode.OUTPUT_ERROR,
        ErrorCode.REPLICA_FAILED,
        ErrorCode.BATCH_MISMATCH,
        ErrorCode.MODEL_UNAVAILABLE,
        ErrorCode.CALLBACK_FAILED,  # a callback step asks again, under a new token
        ErrorCode.HTTP_ERROR,  # an http step's call answered non-2xx, or broke off
    }
)
#: what ``on`` is when left out (an http step's: HTTP_DEFAULT_ON)
DEFAULT_ON = frozenset({ErrorCode.MODEL_ERROR, ErrorCode.TIMEOUT})
HTTP_DEFAULT_ON = frozenset({ErrorCode.HTTP_ERROR, ErrorCode.TIMEOUT})
MAX_ATTEMPTS_CAP = 100


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    on: frozenset[str] = DEFAULT_ON
    max_attempts: int = 3
    interval_s: float = 1.0
    backoff: float = 2.0
    max_interval_s: float = 60.0
    jitter: bool = False

    def covers(self, code: str | None) -> bool:
        """Whether a failure with ``code`` is retried (attempts permitting)."""
        return code in self.on

    def delay_s(self, attempt: int, key: str) -> float:
        """How long attempt ``attempt + 1`` waits after attempt ``attempt`` failed."""
        delay = min(self.interval_s * self.backoff ** max(attempt - 1, 0), self.max_interval_s)
        if self.jitter:
            delay = random.Random(f"{key}:{attempt}").uniform(0, delay)
        return delay


def _positive(value: Any, *, integer: bool = False, zero: bool = False) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if integer and not isinstance(value, int):
        return False
    return math.isfinite(value) and (value >= 0 if zero else value > 0)


def _keys(raw: Mapping[Any, Any]) -> dict[Any, Any]:
    """YAML 1.1 (PyYAML) reads a bare ``on:`` key as the boolean true: taken as ``on``."""
    return {("on" if key is True else key): value for key, value in raw.items()}


def with_yaml_on(pipeline: Any) -> Any:
    """A pipeline's raw form with each step's ``retry`` keys as written (``on``, not the
    ``true`` YAML 1.1 made of it), so that it serialises as JSON in a run's bundle."""
    if not isinstance(pipeline, Mapping) or not isinstance(pipeline.get("steps"), Mapping):
        return pipeline
    if not any(
        isinstance(step, Mapping)
        and isinstance(step.get("retry"), Mapping)
        and True in step["retry"]
        for step in pipeline["steps"].values()
    ):
        return pipeline  # nothing to mend: the very same value
    steps = {
        name: {**step, "retry": _keys(step["retry"])}
        if isinstance(step, Mapping) and isinstance(step.get("retry"), Mapping)
        else step
        for name, step in pipeline["steps"].items()
    }
    return {**pipeline, "steps": steps}


def check_retry(raw: Any) -> list[str]:
    """Every fault of a ``retry:`` value, in words (empty: it is valid)."""
    if not isinstance(raw, Mapping):
        return [f"retry must be a mapping, got {type(raw).__name__}"]
    raw = _keys(raw)
    faults = [
        f"retry: unknown key {key!r} (expected {', '.join(sorted(RETRY_KEYS))})"
        for key in raw
        if key not in RETRY_KEYS
    ]
    on = raw.get("on")
    if on is not None:
        if not isinstance(on, list | tuple) or not on:
            faults.append(f"retry.on must be a list of error codes, got {on!r}")
        else:
            unknown = [c for c in on if c not in RETRYABLE]
            if unknown:
                faults.append(
                    f"retry.on: {unknown!r} cannot be retried "
                    f"(retryable: {', '.join(sorted(RETRYABLE))})"
                )
    attempts = raw.get("max_attempts")
    if attempts is not None and not (
        _positive(attempts, integer=True) and attempts <= MAX_ATTEMPTS_CAP
    ):
        faults.append(
            f"retry.max_attempts must be an integer from 1 to {MAX_ATTEMPTS_CAP}, got {attempts!r}"
        )
    for key, zero in (("interval_s", True), ("max_interval_s", False)):
        if raw.get(key) is not None and not _positive(raw[key], zero=zero):
            faults.append(f"retry.{key} must be a number {'>= 0' if zero else '> 0'}")
    backoff = raw.get("backoff")
    if backoff is not None and not (_positive(backoff) and backoff >= 1):
        faults.append(f"retry.backoff must be a number >= 1, got {backoff!r}")
    if not isinstance(raw.get("jitter", False), bool):
        faults.append(f"retry.jitter must be true or false, got {raw['jitter']!r}")
    return faults


def parse_retry(
    raw: Mapping[str, Any] | None, *, default_on: frozenset[str] = DEFAULT_ON
) -> RetryPolicy | None:
    """The policy of a ``retry:`` that passed :func:`check_retry` (None: no retry);
    ``default_on``: its ``on`` when left out (the step kind's)."""
    if raw is None:
        return None
    raw = _keys(raw)
    defaults = RetryPolicy()
    interval = float(raw.get("interval_s", defaults.interval_s))
    return RetryPolicy(
        on=frozenset(raw["on"]) if raw.get("on") is not None else default_on,
        max_attempts=int(raw.get("max_attempts", defaults.max_attempts)),
        interval_s=interval,
        backoff=float(raw.get("backoff", defaults.backoff)),
        max_interval_s=float(raw.get("max_interval_s", max(defaults.max_interval_s, interval))),
        jitter=bool(raw.get("jitter", False)),
    )


__all__ = [
    "DEFAULT_ON",
    "HTTP_DEFAULT_ON",
    "RETRYABLE",
    "RETRY_KEYS",
    "RetryPolicy",
    "check_retry",
    "parse_retry",
    "with_yaml_on",
]
