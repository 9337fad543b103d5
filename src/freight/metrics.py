"""Prometheus metrics of one freight process (``GET /metrics``).

Single-process ``prometheus_client`` on a private registry: observations cost
microseconds (measured here), and the backlog is read at scrape time from what
the process already knows (no extra query per scrape). Multiprocess mode is
avoided on purpose: its files pile up as runners restart.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from freight.ledger import UsageLine
from freight.prediction import Completion, Prediction, TargetStats

registry = CollectorRegistry(auto_describe=True)

_SECONDS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)

duty_crashes = Counter(
    "freight_duty_crashes",
    "Crashes of the agent's duties (each logged with its traceback, then restarted).",
    ["duty"],
    registry=registry,
)
created = Counter(
    "freight_predictions_created",
    "Predictions accepted, by target.",
    ["target"],
    registry=registry,
)
finished = Counter(
    "freight_predictions_finished",
    "Predictions run to an outcome by this process's agent.",
    ["target", "status", "code"],
    registry=registry,
)
queue_seconds = Histogram(
    "freight_prediction_queue_seconds",
    "Time from queued to started.",
    ["target"],
    buckets=_SECONDS,
    registry=registry,
)
run_seconds = Histogram(
    "freight_prediction_run_seconds",
    "Time from started to finished.",
    ["target"],
    buckets=_SECONDS,
    registry=registry,
)
batch_size = Histogram(
    "freight_batch_size",
    "Predictions per batch handed to a replica.",
    ["target"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
    registry=registry,
)

# autoscaling: set by this process's agent on every tick (absent without an agent)
replica_count = Gauge(
    "freight_replicas",
    "Replicas of the model on this node, running or starting (the autoscaler's count).",
    ["model"],
    registry=registry,
)
replicas_desired = Gauge(
    "freight_replicas_desired",
    "Replicas the autoscaler wants for the model (before the node's capacity).",
    ["model"],
    registry=registry,
)
backlog_without_capacity = Gauge(
    "freight_backlog_without_capacity",
    "1 when the model has queued predictions and no replica on this node.",
    ["model"],
    registry=registry,
)
scale_decisions = Counter(
    "freight_scale_decisions",
    "Replica count changes by the autoscaler: up, down, from_zero; clamp when the "
    "node's capacity held a model below its need.",
    ["model", "reason"],
    registry=registry,
)
cold_start_seconds = Histogram(
    "freight_replica_cold_start_seconds",
    "A replica's start, spawn to ready (its model's load() included).",
    ["model"],
    buckets=_SECONDS,
    registry=registry,
)

# the usage ledger: the lines this process committed (each line once, in the process
# whose transaction wrote it), per tenant x target; a tenant's name is no secret and
# both label sets are bounded (tenants x the project's models and pipelines)
usage_predictions = Counter(
    "freight_usage_predictions",
    "Predictions ended (and recorded in the usage ledger) by this process, by outcome.",
    ["tenant", "target", "status"],
    registry=registry,
)
usage_compute_seconds = Counter(
    "freight_usage_compute_seconds",
    "Replica wall time attributed to the predictions it ran (a batch of n: 1/n each).",
    ["tenant", "target"],
    registry=registry,
)
usage_gpu_seconds = Counter(
    "freight_usage_gpu_seconds",
    "Compute seconds times the GPUs of the replica that ran them.",
    ["tenant", "target"],
    registry=registry,
)
usage_queue_seconds = Counter(
    "freight_usage_queue_seconds",
    "Time predictions waited queued (queued -> started).",
    ["tenant", "target"],
    registry=registry,
)
usage_cold_start_seconds = Counter(
    "freight_usage_cold_start_seconds",
    "Time predictions waited queued for the replica that ran them to load.",
    ["tenant", "target"],
    registry=registry,
)
usage_bytes = Counter(
    "freight_usage_bytes",
    "Input and output bytes of the predictions ended.",
    ["tenant", "target", "direction"],
    registry=registry,
)


#: the usage counters' children per (tenant, target, status): ``labels()`` looked up
#: once per label set, not per line (it is on the completion's path)
_usage_children: dict[tuple[str, str, str], tuple[Counter, ...]] = {}


def _usage_of(tenant: str, target: str, status: str) -> tuple[Counter, ...]:
    children = _usage_children.get((tenant, target, status))
    if children is None:
        children = (
            usage_predictions.labels(tenant, target, status),
            usage_compute_seconds.labels(tenant, target),
            usage_gpu_seconds.labels(tenant, target),
            usage_queue_seconds.labels(tenant, target),
            usage_cold_start_seconds.labels(tenant, target),
            usage_bytes.labels(tenant, target, "in"),
            usage_bytes.labels(tenant, target, "out"),
        )
        _usage_children[(tenant, target, status)] = children
    return children


def record_usage(lines: Iterable[UsageLine]) -> None:
    """Count the ledger lines a transaction of this process committed."""
    for line in lines:
        counters = _usage_of(line.tenant or "", line.target or "", line.status or "")
        amounts = (
            line.count,
            line.compute_s,
            line.gpu_s,
            line.queue_s,
            line.cold_start_s,
            line.bytes_in,
            line.bytes_out,
        )
        for counter, amount in zip(counters, amounts, strict=True):
            if amount:
                counter.inc(amount)


def model_scale(model: str, *, replicas: int, desired: int, queued: int) -> None:
    """The autoscaler's view of one model after a tick."""
    replica_count.labels(model).set(replicas)
    replicas_desired.labels(model).set(desired)
    backlog_without_capacity.labels(model).set(1 if queued > 0 and replicas == 0 else 0)


def record_batch(target: str, rows: list[Prediction], outcomes: list[Completion]) -> None:
    """Timings and outcomes of one batch a replica ran."""
    batch_size.labels(target).observe(len(rows))
    started = {row.id: row for row in rows}
    for outcome in outcomes:
        row = started.get(outcome.id)
        if row is not None and row.started_at is not None:
            if row.queued_at is not None:
                queue_seconds.labels(target).observe(max(0.0, row.started_at - row.queued_at))
            run_seconds.labels(target).observe(max(0.0, outcome.finished_at - row.started_at))
        finished.labels(target, str(outcome.status), outcome.error_code or "").inc()


class StateCollector(Collector):
    """Gauges read at scrape time: backlog per target and ready replicas per model."""

    def __init__(
        self,
        backlog: Callable[[], Mapping[str, int]],
        replicas: Callable[[], Mapping[str, int]],
        stats: Callable[[], Mapping[str, TargetStats]] | None = None,
    ) -> None:
        self._backlog = backlog
        self._replicas = replicas
        self._stats = stats

    def collect(self) -> Iterable[Metric]:
        queued = GaugeMetricFamily(
            "freight_backlog",
            "Queued and awaiting-input predictions per target "
            "(as last counted; the autoscaling signal).",
            labels=["target"],
        )
        for target, count in sorted(self._backlog().items()):
            queued.add_metric([target], count)
        ready = GaugeMetricFamily(
            "freight_replicas_ready",
            "Replicas with their model loaded, per model.",
            labels=["model"],
        )
        for model, count in sorted(self._replicas().items()):
            ready.add_metric([model], count)
        return [queued, ready, *self._queue_families()]

    def _queue_families(self) -> list[Metric]:
        """In flight and the age of the oldest queued prediction, per target, from the
        database's last count (the same on every process of a cluster)."""
        if self._stats is None:
            return []
        running = GaugeMetricFamily(
            "freight_in_flight",
            "Predictions running per target (as last counted in the database).",
            labels=["target"],
        )
        oldest = GaugeMetricFamily(
            "freight_oldest_queued_age_seconds",
            "Age of the oldest queued prediction per target (0 when none is queued).",
            labels=["target"],
        )
        now = time.time()
        for target, stats in sorted(self._stats().items()):
            running.add_metric([target], stats.running)
            at = stats.oldest_queued_at
            oldest.add_metric([target], max(0.0, now - at) if at is not None else 0.0)
        return [running, oldest]


_installed: list[StateCollector] = []


def install(collector: StateCollector) -> None:
    """Make ``collector`` the one that reports state (replacing an earlier app's)."""
    while _installed:
        registry.unregister(_installed.pop())
    registry.register(collector)
    _installed.append(collector)


def exposition() -> bytes:
    return generate_latest(registry)
