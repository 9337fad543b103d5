"""The usage ledger's pure parts: lines of ended rows, a batch's charge, who sees what,
and the counters of what a process committed."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from freight import ledger, metrics
from freight.access import ANONYMOUS, Principal, Scope
from freight.agent import batches
from freight.errors import ForbiddenError
from freight.ledger import UsageLine
from freight.prediction import Completion, Kind, Prediction, Status
from freight.usage import tenant_for

H = 1_000 * 3600.0  # an hour's start


def row(
    i: int, status: Status = Status.SUCCEEDED, *, at: float = H + 60, **fields: Any
) -> Prediction:
    base: dict[str, Any] = {
        "queued_at": at - 10,
        "started_at": at - 4,
        "finished_at": at,
        "input_bytes": 100,
        "output_bytes": 10,
        "tenant": "acme",
    }
    return Prediction(id=f"p{i}", target="m", status=status, created_at=at - 10, **(base | fields))


def spent(p: Prediction, compute_s: float, gpus: int = 0, cold_start_s: float = 0.0) -> Completion:
    return Completion(
        id=p.id,
        attempt=1,
        worker_id="w",
        status=p.status,
        finished_at=p.finished_at or 0.0,
        compute_s=compute_s,
        gpus=gpus,
        cold_start_s=cold_start_s,
    )


def test_one_line_per_group_sums_its_rows() -> None:
    """Rows of one tenant, target, kind, status and hour make one line; the amounts are
    their sums (a batch's compute shares sum to its wall time, GPU seconds multiply)."""
    rows = [row(1), row(2), row(3, Status.FAILED)]
    by_id = {p.id: spent(p, 0.3, gpus=2, cold_start_s=1.5) for p in rows}
    found = ledger.lines(rows, by_id, now=0.0)
    assert found == [
        UsageLine(H, "acme", "m", "model", "failed", 1, 0.3, 0.6, 6.0, 1.5, 100, 10),
        UsageLine(H, "acme", "m", "model", "succeeded", 2, 0.6, 1.2, 12.0, 3.0, 200, 20),
    ]
    assert sum(u.compute_s for u in found) == pytest.approx(0.9)


def test_lines_split_by_hour_tenant_and_target() -> None:
    """The hour is that of each row's end; tenants and targets never share a line."""
    rows = [
        row(1, at=H + 3599),
        row(2, at=H + 3600),
        row(3, tenant="other"),
        dataclasses.replace(row(4), target="n"),
    ]
    keys = [(u.hour, u.tenant, u.target) for u in ledger.lines(rows, {}, now=0.0)]
    assert keys == [(H, "acme", "m"), (H, "acme", "n"), (H, "other", "m"), (H + 3600, "acme", "m")]


def test_a_row_is_counted_once_and_only_when_ended() -> None:
    """A row given twice counts once (nothing doubled); a live row and a for_each step's
    gathering row get no line."""
    rows = [
        row(1),
        row(1),
        row(2, Status.RUNNING),
        row(3, kind=Kind.FOR_EACH),
        row(4, Status.CANCELED, kind=Kind.PIPELINE),
    ]
    found = ledger.lines(rows, {}, now=0.0)
    assert [(u.kind, u.status, u.count) for u in found] == [
        ("model", "succeeded", 1),
        ("pipeline", "canceled", 1),
    ]


def test_queue_seconds_run_from_queued_to_started() -> None:
    """Queued -> started; a row that never started waited until it ended; a row never
    queued (a pending step, an upload that never came) waited none."""
    assert ledger.queue_s(row(1)) == 6.0
    assert ledger.queue_s(row(2, Status.EXPIRED, started_at=None)) == 10.0
    assert ledger.queue_s(row(3, Status.SKIPPED, queued_at=None, started_at=None)) == 0.0


def test_rows_no_worker_ran_cost_no_compute() -> None:
    """A row ended without a completion (canceled, reaped) costs no compute or GPU."""
    (line,) = ledger.lines([row(1, Status.CANCELED)], {}, now=0.0)
    assert (line.compute_s, line.gpu_s, line.cold_start_s, line.queue_s) == (0.0, 0.0, 0.0, 6.0)


def test_group_keys_and_the_window() -> None:
    """Groups come back in the ledger's key order (``model`` is the target); an unknown
    one is refused; a window widens to whole hours."""
    assert ledger.group_keys(["status", "model", "tenant", ""]) == ("tenant", "target", "status")
    assert ledger.group_keys([]) == ()
    with pytest.raises(ValueError, match="cost"):
        ledger.group_keys(["cost"])
    assert ledger.window(H + 1, H + 3601) == (H, H + 7200)
    assert ledger.window(H, H + 3600) == (H, H + 3600)


def test_a_batch_charge_shares_its_wall_time() -> None:
    """Each of n rows of a batch gets 1/n of the replica's wall time and its GPUs; the
    cold start is the overlap of the row's wait with the replica's load."""
    rows = [
        row(1, queued_at=100.0, started_at=130.0),  # queued before the load began
        row(2, queued_at=115.0, started_at=130.0),  # during the load
        row(3, queued_at=125.0, started_at=130.0),  # after it
    ]
    done = [spent(p, 0.0) for p in rows]
    batches.charge(rows, done, wall_s=0.9, gpus=2, loaded=(110.0, 120.0))
    assert [d.compute_s for d in done] == pytest.approx([0.3, 0.3, 0.3])
    assert sum(d.compute_s for d in done) == pytest.approx(0.9)
    assert [d.gpus for d in done] == [2, 2, 2]
    assert [d.cold_start_s for d in done] == [10.0, 5.0, 0.0]
    batches.charge(rows[:1], done[:1], wall_s=1.0, gpus=0, loaded=None)
    assert (done[0].compute_s, done[0].cold_start_s) == (1.0, 0.0)


def test_a_caller_sees_its_own_tenant_unless_admin() -> None:
    """Without admin: its own tenant, whatever it asks (another is 403 missing_scope);
    with admin (or on a server without keys): every tenant, or the one asked for."""
    reader = Principal(tenant="acme", scopes=frozenset({Scope.READ}))
    admin = Principal(tenant="ops", scopes=frozenset({Scope.ADMIN}))
    assert tenant_for(reader, None) == "acme"
    assert tenant_for(reader, "acme") == "acme"
    with pytest.raises(ForbiddenError) as refused:
        tenant_for(reader, "other")
    assert refused.value.code == "missing_scope"
    assert tenant_for(admin, None) is None
    assert tenant_for(admin, "acme") == "acme"
    assert tenant_for(ANONYMOUS, None) is None


def test_usage_counters_count_committed_lines() -> None:
    """The counters add each line once, labelled by tenant and target (and outcome)."""
    tenant = "metrics-test"

    def value(name: str, **labels: str) -> float:
        found = metrics.registry.get_sample_value(name, {"tenant": tenant, **labels})
        return found or 0.0

    before = value("freight_usage_predictions_total", target="m", status="succeeded")
    compute = value("freight_usage_compute_seconds_total", target="m")
    line = UsageLine(H, tenant, "m", "model", "succeeded", 3, 0.9, 1.8, 6.0, 1.0, 300, 30)
    metrics.record_usage([line, dataclasses.replace(line, status="failed", count=1)])
    assert value("freight_usage_predictions_total", target="m", status="succeeded") == before + 3
    assert value("freight_usage_compute_seconds_total", target="m") == pytest.approx(compute + 1.8)
    assert value("freight_usage_bytes_total", target="m", direction="out") >= 60
