"""The autoscaler on traces: bursts, idling to zero, flapping backlogs, a shared node."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable

import pytest

import freight
from freight.errors import ModelDefinitionError
from freight.scaling.policy import (
    Decision,
    ModelScaleState,
    Observation,
    Want,
    allocate,
    capped,
    decide,
    replicas_needed,
)

Work = Callable[[int], tuple[int, int]]  # tick -> (queued, in_flight)


def run_trace(
    replicas: freight.Replicas, work: Work, ticks: Iterable[int], start: int
) -> list[tuple[int, Decision]]:
    """Tick once a second; the applier reaches the desired count at once."""
    count = start
    state = ModelScaleState.initial(0.0)
    out: list[tuple[int, Decision]] = []
    for t in ticks:
        queued, in_flight = work(t)
        obs = Observation(now=float(t), queued=queued, in_flight=in_flight, replicas=count)
        decision, state = decide(replicas, obs, state)
        count = decision.desired
        out.append((t, decision))
    return out


def counts(trace: list[tuple[int, Decision]]) -> list[int]:
    return [d.desired for _, d in trace]


def changes(trace: list[tuple[int, Decision]], start: int) -> int:
    seq = [start, *counts(trace)]
    return sum(a != b for a, b in itertools.pairwise(seq))


def first_tick(trace: list[tuple[int, Decision]], count: int, after: int = -1) -> int:
    return next(t for t, d in trace if d.desired == count and t > after)


# -- the settings -----------------------------------------------------------------


def test_replicas_validation() -> None:
    """Impossible scaling settings fail when the model class is defined."""
    for bad in (
        {"min": -1},
        {"min": 3, "max": 2},
        {"min": 0, "max": 0},
        {"target_backlog": 0},
        {"idle_s": -1},
        {"idle_s": float("nan")},
    ):
        with pytest.raises(ModelDefinitionError):
            freight.Replicas(**bad)  # type: ignore[arg-type]
    assert freight.Replicas(min=0, max=4, target_backlog=1, idle_s=0).idle_s == 0


def test_resources_validation_and_default() -> None:
    """GPUs per replica default to none; a negative count is refused."""
    assert freight.Model.resources == freight.Resources(gpus=0)
    assert freight.Resources(gpus=2).gpus == 2
    with pytest.raises(ModelDefinitionError):
        freight.Resources(gpus=-1)


@pytest.mark.parametrize(
    ("work", "expected"), [(0, 1), (1, 1), (8, 1), (9, 2), (16, 2), (17, 3), (1000, 4)]
)
def test_need_is_backlog_per_target_clamped(work: int, expected: int) -> None:
    """ceil(work / target_backlog), never under min, never over max."""
    assert replicas_needed(freight.Replicas(min=1, max=4, target_backlog=8), work) == expected


def test_any_work_needs_a_replica_even_with_min_zero() -> None:
    replicas = freight.Replicas(min=0, max=3, target_backlog=100)
    assert replicas_needed(replicas, 0) == 0
    assert replicas_needed(replicas, 1) == 1


# -- one model ----------------------------------------------------------------------


def test_scale_from_zero_on_the_first_request() -> None:
    """A model at zero gets a replica on the tick its first request is queued."""
    replicas = freight.Replicas(min=0, max=2, target_backlog=8, idle_s=300)
    state = ModelScaleState.initial(0.0)
    decision, state = decide(replicas, Observation(5.0, queued=1, in_flight=0, replicas=0), state)
    assert decision == Decision(1, "first request: scale from zero")
    assert state.last_change_at == 5.0


def test_burst_scales_up_at_once_then_down_one_step_per_idle() -> None:
    """A burst gets every replica it needs on one tick; they go one per idle_s after it."""
    replicas = freight.Replicas(min=1, max=4, target_backlog=8, idle_s=60)
    trace = run_trace(replicas, lambda t: (40, 0) if 10 <= t < 20 else (0, 0), range(400), 1)
    assert counts(trace)[:10] == [1] * 10
    assert trace[10][1].desired == 4  # 40 / 8 = 5, capped at max
    assert trace[10][1].reason == "backlog 40 > 8 per replica x 1 (at max 4)"
    assert trace[11][1].reason.startswith("at max 4")
    # last busy tick 19: one fewer idle_s after it, then idle_s after each change
    assert [first_tick(trace, n, after=20) for n in (3, 2, 1)] == [79, 139, 199]
    assert counts(trace)[-1] == 1
    assert trace[79][1].reason == "idle 60 s"


def test_idle_then_scale_to_zero() -> None:
    """With min 0, an idle model steps down to zero, idle_s between steps."""
    replicas = freight.Replicas(min=0, max=2, target_backlog=1, idle_s=300)
    trace = run_trace(replicas, lambda t: (0, 0), range(1000), 2)
    assert first_tick(trace, 1) == 300  # idle_s after start-up, not at once
    assert first_tick(trace, 0) == 600
    assert counts(trace)[-1] == 0
    assert trace[-1][1].reason == "steady"


def test_scale_from_zero_again_after_idling() -> None:
    replicas = freight.Replicas(min=0, max=1, target_backlog=4, idle_s=10)
    trace = run_trace(replicas, lambda t: (1, 0) if t == 50 else (0, 0), range(80), 1)
    assert first_tick(trace, 0) == 10
    assert trace[50][1] == Decision(1, "first request: scale from zero")
    assert counts(trace)[51:60] == [1] * 9  # holds the replica while it cools down
    assert counts(trace)[-1] == 0


def test_running_work_keeps_its_replica() -> None:
    """In-flight predictions count as work: a busy replica is never scaled away."""
    replicas = freight.Replicas(min=0, max=1, target_backlog=8, idle_s=5)
    trace = run_trace(replicas, lambda t: (0, 1), range(100), 1)
    assert counts(trace) == [1] * 100


def test_flapping_backlog_changes_the_count_once() -> None:
    """A backlog oscillating around the threshold (7, 9, 7, 9 …) raises the count once and
    holds it: scale-down needs the work to fit on one fewer for idle_s without a break."""
    replicas = freight.Replicas(min=1, max=4, target_backlog=8, idle_s=30)
    trace = run_trace(replicas, lambda t: (7, 0) if t % 2 else (9, 0), range(3600), 1)
    assert changes(trace, 1) == 1
    assert counts(trace)[-1] == 2


def test_slow_oscillation_changes_are_bounded_by_idle() -> None:
    """A slow square wave (10 min at 60 queued, 10 min at 4) jumps up once per high
    phase and steps down at most once per idle_s in each low phase."""
    replicas = freight.Replicas(min=1, max=8, target_backlog=8, idle_s=120)
    trace = run_trace(
        replicas, lambda t: (60, 0) if (t // 600) % 2 == 0 else (4, 0), range(3600), 1
    )
    seq = [1, *counts(trace)]
    ups = sum(b > a for a, b in itertools.pairwise(seq))
    downs = sum(b < a for a, b in itertools.pairwise(seq))
    assert ups == 3  # one jump to 8 per high phase
    assert downs == 3 * 5  # 600 s low / 120 s idle = 5 steps, 8 -> 3, per low phase
    assert max(seq) == 8


def test_backlog_between_thresholds_is_held() -> None:
    """Work that fits n replicas but not n - 1 never lowers n, however long it lasts."""
    replicas = freight.Replicas(min=1, max=4, target_backlog=8, idle_s=10)
    trace = run_trace(replicas, lambda t: (20, 0), range(500), 3)  # 20 > 2 x 8
    assert counts(trace) == [3] * 500


def test_down_one_step_while_backlog_fits_fewer() -> None:
    """From 4 with work for 2: one step per idle_s, never below what the work needs."""
    replicas = freight.Replicas(min=1, max=4, target_backlog=8, idle_s=10)
    trace = run_trace(replicas, lambda t: (12, 0), range(100), 4)
    assert first_tick(trace, 3) == 10
    assert first_tick(trace, 2) == 20
    assert counts(trace)[-1] == 2
    assert trace[10][1].reason == "idle 10 s: backlog 12 fits 3"


def test_starting_replicas_hold_scale_down() -> None:
    replicas = freight.Replicas(min=0, max=2, target_backlog=8, idle_s=0)
    state = ModelScaleState.initial(0.0)
    decision, _ = decide(replicas, Observation(100.0, 0, 0, replicas=2, starting=1), state)
    assert decision == Decision(2, "hold: 1 starting")
    decision, _ = decide(replicas, Observation(100.0, 0, 0, replicas=2, starting=0), state)
    assert decision.desired == 1


def test_min_and_max_clamps() -> None:
    """Below min is raised at once, above max lowered at once (settings changed)."""
    replicas = freight.Replicas(min=2, max=3, target_backlog=8, idle_s=300)
    state = ModelScaleState.initial(0.0)
    assert decide(replicas, Observation(1.0, 0, 0, replicas=0), state)[0] == Decision(
        2, "below min 2"
    )
    assert decide(replicas, Observation(1.0, 0, 0, replicas=5), state)[0] == Decision(
        3, "above max 3"
    )
    assert decide(replicas, Observation(1.0, 500, 0, replicas=3), state)[0].desired == 3
    trace = run_trace(replicas, lambda t: (0, 0), range(2000), 3)
    assert min(counts(trace)) == 2


def test_state_is_returned_not_mutated() -> None:
    replicas = freight.Replicas(min=0, max=2, target_backlog=1, idle_s=10)
    state = ModelScaleState.initial(0.0)
    _, after = decide(replicas, Observation(3.0, 5, 0, replicas=1), state)
    assert state == ModelScaleState(0.0, 0.0)
    assert after == ModelScaleState(last_busy_at=3.0, last_change_at=3.0)


# -- the node -----------------------------------------------------------------------


def test_no_bound_grants_what_is_desired() -> None:
    wants = {"a": Want(desired=3), "b": Want(desired=0), "c": Want(desired=1, min=1)}
    assert allocate(wants, max_replicas_total=None) == {"a": 3, "b": 0, "c": 1}


def test_competing_models_under_a_cap_go_by_backlog_per_replica() -> None:
    """The spare capacity goes one replica at a time to the larger backlog per replica."""
    wants = {
        "big": Want(desired=4, min=1, queued=40),  # 40, 20, 13.3, 10 per replica
        "small": Want(desired=2, min=1, queued=16),  # 16, 8
    }
    # floors 1 + 1; then big (40 > 16) 2; big (20 > 16) 3; small (16 > 13.3) 2; then cap
    assert allocate(wants, max_replicas_total=5) == {"big": 3, "small": 2}
    assert allocate(wants, max_replicas_total=3) == {"big": 2, "small": 1}
    assert allocate(wants, max_replicas_total=100) == {"big": 4, "small": 2}


def test_a_model_with_queued_work_is_never_starved() -> None:
    """Even when other models' minimums would fill the node, queued work gets a replica."""
    wants = {
        "pinned": Want(desired=4, min=4, queued=100),
        "cold": Want(desired=1, min=0, queued=1),
    }
    assert allocate(wants, max_replicas_total=4) == {"pinned": 3, "cold": 1}
    # its desired count may even be stale (0): work still gets one
    assert allocate({"cold": Want(desired=0, queued=2)}, max_replicas_total=1) == {"cold": 1}


def test_minimums_come_before_backlog() -> None:
    wants = {"hot": Want(desired=5, queued=500), "warm": Want(desired=2, min=2)}
    assert allocate(wants, max_replicas_total=4) == {"hot": 2, "warm": 2}


def test_ties_go_by_name() -> None:
    wants = {"b": Want(desired=2, queued=8), "a": Want(desired=2, queued=8)}
    assert allocate(wants, max_replicas_total=3) == {"a": 2, "b": 1}


def test_memory_bound_skips_what_does_not_fit() -> None:
    """A replica too big for the memory left is skipped; a smaller model uses the rest."""
    wants = {
        "llm": Want(desired=3, queued=90, memory_mb=4000),
        "tiny": Want(desired=2, queued=2, memory_mb=500),
    }
    got = allocate(wants, max_replicas_total=None, max_memory_mb=9000)
    assert got == {"llm": 2, "tiny": 2}


def test_gpu_bound() -> None:
    wants = {"gpu": Want(desired=3, queued=30, gpus=1), "cpu": Want(desired=2, queued=10)}
    assert allocate(wants, max_replicas_total=10, max_gpus=2) == {"gpu": 2, "cpu": 2}


def test_capped_says_the_node_was_full() -> None:
    decision = Decision(4, "backlog 40 > 8 per replica x 1")
    assert capped(decision, 4) is decision
    assert capped(decision, 2) == Decision(2, "capacity: node full (2 of 4)")


def test_two_models_sharing_a_node_over_a_trace() -> None:
    """decide + allocate on a shared node: the total stays within the bound and the
    model with work always runs."""
    specs = {
        "a": freight.Replicas(min=0, max=4, target_backlog=4, idle_s=20),
        "b": freight.Replicas(min=1, max=4, target_backlog=4, idle_s=20),
    }
    load = {"a": lambda t: 30 if 10 <= t < 50 else 0, "b": lambda t: 30 if t >= 30 else 1}
    count = {"a": 0, "b": 1}
    states = {name: ModelScaleState.initial(0.0) for name in specs}
    for t in range(200):
        wants: dict[str, Want] = {}
        decisions: dict[str, Decision] = {}
        for name, replicas in specs.items():
            obs = Observation(float(t), queued=load[name](t), in_flight=0, replicas=count[name])
            decisions[name], states[name] = decide(replicas, obs, states[name])
            wants[name] = Want.of(decisions[name], replicas, obs)
        granted = allocate(wants, max_replicas_total=5)
        assert sum(granted.values()) <= 5
        for name in specs:
            if load[name](t):
                assert granted[name] >= 1
            count[name] = capped(decisions[name], granted[name]).desired
    assert count == {"a": 0, "b": 4}
