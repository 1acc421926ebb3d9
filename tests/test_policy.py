"""Restart policies as pure functions (``suricate.supervision._policy``):
backoff delays and restart intensity, without a clock."""

from __future__ import annotations

import random

import pytest

import suricate
from suricate import Backoff, Restart, RestartPolicy
from suricate.supervision import (
    may_restart,
    next_delay,
    restarts_in_window,
)

# -- backoff ------------------------------------------------------------------------


def test_backoff_without_jitter_doubles_from_initial_and_is_capped_by_maximum() -> None:
    backoff = Backoff(initial=1.0, multiplier=2.0, maximum=10.0, jitter=0.0)
    assert [backoff.delay(k) for k in range(1, 8)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]


def test_backoff_follows_initial_times_multiplier_to_the_k_minus_one() -> None:
    backoff = Backoff(initial=0.5, multiplier=3.0, maximum=1000.0)
    assert [backoff.delay(k) for k in range(1, 6)] == [0.5, 1.5, 4.5, 13.5, 40.5]


def test_backoff_with_multiplier_one_is_constant() -> None:
    backoff = Backoff(initial=2.0, multiplier=1.0, maximum=30.0)
    assert {backoff.delay(k) for k in range(1, 20)} == {2.0}


def test_default_backoff_restarts_at_once() -> None:
    assert Backoff().delay(1) == 0.0
    assert Backoff().delay(10) == 0.0
    assert RestartPolicy().backoff == Backoff()


def test_zero_initial_delay_stays_zero_even_with_jitter() -> None:
    backoff = Backoff(initial=0.0, jitter=0.5)
    assert [backoff.delay(k, random.Random(1)) for k in range(1, 5)] == [0.0] * 4


@pytest.mark.parametrize("seed", [0, 1, 42, 2024])
def test_jittered_delays_stay_within_their_bounds(seed: int) -> None:
    backoff = Backoff(initial=1.0, multiplier=2.0, maximum=10.0, jitter=0.25)
    plain = Backoff(initial=1.0, multiplier=2.0, maximum=10.0)
    rng = random.Random(seed)
    for k in range(1, 12):
        base = plain.delay(k)
        delay = backoff.delay(k, rng)
        assert base * 0.75 <= delay <= base * 1.25


def test_jitter_multiplies_the_capped_delay_by_a_seeded_uniform_factor() -> None:
    backoff = Backoff(initial=1.0, multiplier=2.0, maximum=10.0, jitter=0.5)
    rng, reference = random.Random(7), random.Random(7)
    for k in range(1, 8):
        base = min(10.0, 1.0 * 2.0 ** (k - 1))
        assert backoff.delay(k, rng) == base * reference.uniform(0.5, 1.5)


def test_the_same_seed_gives_the_same_jittered_delays() -> None:
    backoff = Backoff(initial=1.0, maximum=60.0, jitter=0.3)
    first = [backoff.delay(k, random.Random(99)) for k in range(1, 8)]
    again = [backoff.delay(k, random.Random(99)) for k in range(1, 8)]
    assert first == again
    rng = random.Random(5)
    delays = [backoff.delay(1, rng) for _ in range(50)]
    assert len(set(delays)) > 1, "jitter must actually vary the delay"


@pytest.mark.parametrize(
    "fields",
    [
        {"initial": -1.0},
        {"maximum": -0.1},
        {"multiplier": 0.5},
        {"jitter": -0.1},
        {"jitter": 1.5},
    ],
    ids=lambda f: next(iter(f)),
)
def test_backoff_rejects_out_of_range_fields(fields: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**fields)


@pytest.mark.parametrize(
    "fields", [{"max_restarts": -1}, {"within": 0.0}, {"within": -5.0}], ids=lambda f: str(f)
)
def test_restart_policy_rejects_out_of_range_fields(fields: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RestartPolicy(**fields)


def test_restart_policy_defaults_are_the_documented_ones() -> None:
    policy = RestartPolicy()
    assert policy.restart is Restart.PERMANENT
    assert policy.max_restarts == 3
    assert policy.within == 5.0
    assert suricate.RestartPolicy is RestartPolicy
    assert suricate.Backoff is Backoff


# -- intensity ----------------------------------------------------------------------


def simulate(policy: RestartPolicy, crash_times: list[float]) -> list[bool]:
    """For crashes at ``crash_times``: whether each one is restarted.  Restart
    times (not crash times) enter the history; the policy stops at the first
    refusal."""
    history: list[float] = []
    decisions = []
    for now in crash_times:
        allowed = may_restart(policy, history, now)
        decisions.append(allowed)
        if not allowed:
            break
        history.append(now)
    return decisions


@pytest.mark.parametrize("max_restarts", [0, 1, 3, 5])
def test_max_restarts_inside_the_window_are_allowed_and_one_more_is_refused(
    max_restarts: int,
) -> None:
    policy = RestartPolicy(max_restarts=max_restarts, within=5.0)
    crashes = [0.1 * n for n in range(max_restarts + 1)]
    assert simulate(policy, crashes) == [True] * max_restarts + [False]


def test_max_restarts_zero_never_restarts() -> None:
    policy = RestartPolicy(max_restarts=0, within=5.0)
    assert not may_restart(policy, [], 0.0)
    assert not may_restart(policy, [], 1000.0)


@pytest.mark.parametrize(("max_restarts", "within"), [(1, 1.0), (3, 5.0), (5, 60.0)])
def test_restarts_spread_wider_than_the_window_are_never_refused(
    max_restarts: int, within: float
) -> None:
    policy = RestartPolicy(max_restarts=max_restarts, within=within)
    spacing = within / max_restarts * 1.01
    crashes = [spacing * n for n in range(200)]
    assert simulate(policy, crashes) == [True] * 200


def test_old_restarts_leave_the_window() -> None:
    policy = RestartPolicy(max_restarts=2, within=5.0)
    history = [0.0, 1.0]
    assert not may_restart(policy, history, 4.0)
    assert may_restart(policy, history, 5.5)  # the restart at 0.0 has left the window
    assert may_restart(policy, history, 100.0)


def test_a_burst_after_a_quiet_period_gets_the_full_allowance_again() -> None:
    policy = RestartPolicy(max_restarts=3, within=5.0)
    crashes = [0.0, 0.1, 0.2, 50.0, 50.1, 50.2, 50.3]
    assert simulate(policy, crashes) == [True, True, True, True, True, True, False]


def test_restarts_in_window_counts_the_half_open_interval_ending_now() -> None:
    history = [0.0, 4.9, 5.0, 7.5, 10.0, 12.0]
    # (now - within, now] = (5, 10]: 7.5 and 10.0; 5.0 is just outside, 12.0 is in the future.
    assert restarts_in_window(history, 10.0, 5.0) == 2
    assert restarts_in_window([], 10.0, 5.0) == 0


def test_next_delay_uses_the_restart_number_within_the_window() -> None:
    policy = RestartPolicy(
        max_restarts=10, within=5.0, backoff=Backoff(initial=1.0, multiplier=2.0, maximum=30.0)
    )
    assert next_delay(policy, [], 0.0) == 1.0
    assert next_delay(policy, [0.0], 1.0) == 2.0
    assert next_delay(policy, [0.0, 1.0], 2.0) == 4.0
    # The window forgot both earlier restarts: back to the first delay.
    assert next_delay(policy, [0.0, 1.0], 20.0) == 1.0


def test_next_delay_passes_the_random_source_to_the_jitter() -> None:
    policy = RestartPolicy(backoff=Backoff(initial=2.0, jitter=0.5))
    expected = 2.0 * random.Random(3).uniform(0.5, 1.5)
    assert next_delay(policy, [], 0.0, random.Random(3)) == expected
