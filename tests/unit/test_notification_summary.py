"""How a prediction's outbox rows, counted by status and attempts, become its
notifications summary: which rows are failing, and the state as the worst of them."""

from __future__ import annotations

import pytest

from freight.deliveries import NotificationState, summarize

State = NotificationState


def test_the_counts_partition_the_rows() -> None:
    """Every row lands in exactly one count; a pending row with an attempt is failing,
    a sending one only from its second attempt."""
    summary = summarize(
        [
            ("pending", 0, 2),
            ("pending", 3, 1),
            ("sending", 1, 4),
            ("sending", 2, 1),
            ("delivered", 1, 5),
            ("dead", 7, 1),
            ("stopped", 1, 2),
        ],
        ended=True,
    )
    assert (summary.pending, summary.failing) == (6, 2)
    assert (summary.delivered, summary.dead, summary.stopped) == (5, 1, 2)
    assert summary.deliveries == 16


@pytest.mark.parametrize(
    ("counts", "ended", "state"),
    [
        ([("delivered", 1, 2), ("dead", 3, 1), ("pending", 2, 1)], True, State.DEAD),
        ([("delivered", 1, 2), ("pending", 2, 1), ("pending", 0, 1)], True, State.FAILING),
        ([("delivered", 1, 2), ("sending", 1, 1), ("stopped", 1, 1)], True, State.PENDING),
        ([("delivered", 1, 2), ("stopped", 1, 1)], True, State.STOPPED),
        ([("delivered", 1, 2)], True, State.DELIVERED),
        ([("delivered", 1, 1)], False, State.PENDING),
        ([], False, State.PENDING),
        ([], True, State.DELIVERED),
    ],
)
def test_the_state_is_the_worst_row(
    counts: list[tuple[str, int, int]], ended: bool, state: NotificationState
) -> None:
    """dead over failing over pending over stopped; delivered only once the prediction
    ended (before, its later events are still to come)."""
    assert summarize(counts, ended=ended).state == state
