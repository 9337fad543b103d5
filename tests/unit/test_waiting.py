"""Why a prediction waits, from the nodes' reports (``freight.waiting.reason``)."""

from __future__ import annotations

import pytest

from freight.prediction import Kind, Prediction, Status
from freight.waiting import ModelReport, NodeReport, Reason, capacity_of, reason

NOW = 1_000_000.0


def row(status: Status = Status.QUEUED, **fields: object) -> Prediction:
    return Prediction(id="p", target="m", status=status, created_at=NOW, **fields)  # type: ignore[arg-type]


def node(name: str = "n", drivers: int = 1, **models: ModelReport) -> NodeReport:
    return NodeReport(name, "host", NOW, NOW, models, drivers=drivers)


def why(p: Prediction, nodes: list[NodeReport], **kw: bool) -> Reason | None:
    found = reason(p, nodes, now=NOW, **kw)
    return None if found is None else found.reason


def test_the_reasons_in_their_order() -> None:
    ready_busy = node(m=ModelReport(ready=2, busy=2, replicas=2))
    assert why(row(Status.AWAITING_INPUT), []) == Reason.AWAITING_INPUT
    assert why(row(not_before=NOW + 1), [ready_busy]) == Reason.RETRY_BACKOFF
    assert why(row(not_before=NOW - 1), [ready_busy]) == Reason.AT_CAPACITY
    assert why(row(), [ready_busy], quota_full=True) == Reason.QUOTA
    assert why(row(), []) == Reason.NO_REPLICA
    assert why(row(), [node(m=ModelReport(starting=1, replicas=1))]) == Reason.COLD_START
    assert why(row(), [node(m=ModelReport(desired=1))]) == Reason.COLD_START
    assert why(row(), [node(m=ModelReport(load_error="boom"))]) == Reason.NO_REPLICA
    assert why(row(), [ready_busy], higher_queued=True) == Reason.LOWER_PRIORITY
    assert why(row(), [ready_busy]) == Reason.AT_CAPACITY


@pytest.mark.parametrize("status", [Status.RUNNING, Status.SUCCEEDED, Status.PENDING])
def test_rows_that_do_not_wait_have_no_reason(status: Status) -> None:
    assert reason(row(status), [], now=NOW) is None


def test_a_node_that_cannot_serve_the_model_is_named() -> None:
    gpu_less = node(m=ModelReport(served=False, not_served="needs 1 GPU, this node has 0"))
    found = reason(row(), [gpu_less], now=NOW)
    assert found is not None and found.reason == Reason.NO_REPLICA
    assert "needs 1 GPU" in found.message


def test_batch_jobs_wait_for_a_driver() -> None:
    job = row(kind=Kind.BATCH)
    assert why(job, []) == Reason.NO_REPLICA
    assert why(job, [node(drivers=0)]) == Reason.NO_REPLICA
    assert why(job, [node()]) == Reason.AT_CAPACITY


def test_capacity_sums_the_nodes_that_serve_it() -> None:
    nodes = [
        node("a", m=ModelReport(ready=1, busy=1, replicas=1)),
        node("b", m=ModelReport(ready=2, busy=0, starting=1, replicas=3, desired=3)),
        node("c", m=ModelReport(served=False, not_served="no GPU")),
    ]
    cap = capacity_of(nodes, "m")
    assert (cap.nodes, cap.ready, cap.busy, cap.starting, cap.replicas, cap.desired) == (
        2,
        3,
        1,
        1,
        4,
        3,
    )
    assert cap.not_served == ("no GPU",)


def test_a_report_survives_its_json() -> None:
    report = node(m=ModelReport(ready=1, busy=1, desired=2, decision="backlog 5"))
    again = NodeReport.of_row("n", "host", NOW, NOW, report.to_json())
    assert again == report
