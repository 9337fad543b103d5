"""The scrape-time gauges: backlog, in flight and the oldest queued age per target."""

from __future__ import annotations

import time

from freight import ids
from freight.metrics import StateCollector
from freight.prediction import TargetStats


def test_queue_gauges_come_from_the_last_database_count() -> None:
    """In flight and the oldest queued prediction's age are read from the stats the
    database returned (the same on every process); a target with nothing queued
    reports age 0."""
    before = time.time()
    oldest = ids.new_id()
    stats = {
        "a": TargetStats(queued=3, running=2, oldest_queued_id=oldest),
        "b": TargetStats(running=1),
    }
    collector = StateCollector(backlog=lambda: {"a": 3}, replicas=lambda: {}, stats=lambda: stats)
    families = {f.name: f for f in collector.collect()}
    running = {s.labels["target"]: s.value for s in families["freight_in_flight"].samples}
    assert running == {"a": 2, "b": 1}
    age = {
        s.labels["target"]: s.value for s in families["freight_oldest_queued_age_seconds"].samples
    }
    assert age["b"] == 0.0
    assert 0.0 <= age["a"] <= time.time() - before + 0.01
