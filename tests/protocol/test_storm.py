"""Tests of tether.protocol.storm with a fake clock (plain floats): docs/protocol.md, section 8."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.protocol.storm import (
    BreakerSnapshot,
    BreakerState,
    FailureSnapshot,
    StartFailureBreaker,
    StormDecision,
    StormDetector,
)

KEY = "session_1754900000000_abcdef:web"
ALLOWED = StormDecision(allowed=True)


def attempt(detector: StormDetector, now: float, key: str = KEY) -> StormDecision:
    """One connection attempt that passes every other check: recorded when allowed."""
    decision = detector.check(key, now)
    if decision.allowed:
        detector.record(key, now)
    return decision


def fill(detector: StormDetector, start: float, count: int, step: float = 0.01) -> float:
    """``count`` admitted attempts from ``start``; returns the time after the last one."""
    now = start
    for _ in range(count):
        assert attempt(detector, now) == ALLOWED, now
        now += step
    return now


def trip(detector: StormDetector, start: float) -> tuple[StormDecision, float]:
    now = fill(detector, start, detector.threshold)
    return attempt(detector, now), now


def state_of(detector: StormDetector, now: float, key: str = KEY) -> BreakerSnapshot | None:
    return next((item for item in detector.snapshot(now) if item.key == key), None)


# --- StormDetector ----------------------------------------------------------------------


def test_eleventh_attempt_in_ten_seconds_is_refused_with_retry_after_1() -> None:
    detector = StormDetector(10, 10.0)
    decision, _ = trip(detector, 0.0)
    assert decision == StormDecision(allowed=False, retry_after=1, tripped=True)


def test_check_does_not_count() -> None:
    detector = StormDetector(2, 10.0)
    for _ in range(50):
        assert detector.check(KEY, 0.0) == ALLOWED


def test_while_open_refused_with_remaining_seconds_and_not_counted() -> None:
    detector = StormDetector(10, 10.0)
    _, opened = trip(detector, 0.0)
    for offset in (0.0, 0.2, 0.999):
        decision = detector.check(KEY, opened + offset)
        assert decision == StormDecision(allowed=False, retry_after=1)
    assert state_of(detector, opened + 0.5) == BreakerSnapshot(
        KEY, BreakerState.OPEN, 0, 1, opened, 1, 1.0
    )


def test_half_open_after_delay_then_closed_on_record() -> None:
    detector = StormDetector(10, 10.0)
    _, opened = trip(detector, 0.0)
    assert detector.check(KEY, opened + 1.0) == ALLOWED
    item = state_of(detector, opened + 1.0)
    assert item is not None and item.state is BreakerState.HALF_OPEN
    detector.record(KEY, opened + 1.0)
    item = state_of(detector, opened + 1.0)
    assert item is not None and item.state is BreakerState.CLOSED and item.trips == 1


def test_second_trip_doubles_the_delay() -> None:
    detector = StormDetector(10, 10.0)
    _, opened = trip(detector, 0.0)
    # The half-open attempt and 9 more are admitted; the 11th since the trip trips again.
    now = fill(detector, opened + 1.0, 10)
    assert attempt(detector, now) == StormDecision(allowed=False, retry_after=2, tripped=True)
    assert detector.check(KEY, now + 1.5) == StormDecision(allowed=False, retry_after=1)
    assert detector.check(KEY, now + 2.0) == ALLOWED


def test_delays_double_up_to_the_cap() -> None:
    detector = StormDetector(3, 10.0)
    now, seen = 0.0, []
    for _ in range(8):
        decision, now = trip(detector, now)
        seen.append(decision.retry_after)
        now += decision.retry_after
    assert seen == [1, 2, 4, 8, 16, 30, 30, 30]


def test_custom_max_delay() -> None:
    detector = StormDetector(1, 10.0, max_delay=3.0, forget_after=100.0)
    now, seen = 0.0, []
    for _ in range(4):
        decision, now = trip(detector, now)
        seen.append(decision.retry_after)
        now += decision.retry_after
    assert seen == [1, 2, 3, 3]


def test_forgotten_after_thirty_quiet_seconds() -> None:
    detector = StormDetector(10, 10.0)
    _, opened = trip(detector, 0.0)
    now = fill(detector, opened + 1.0, 10)
    assert attempt(detector, now).retry_after == 2
    quiet = now + 2.0 + 30.0  # 30 s of quiet after the 2 s it stayed open
    assert state_of(detector, quiet - 0.1) is not None
    assert state_of(detector, quiet) is None
    decision, _ = trip(detector, quiet)
    assert decision.retry_after == 1


def test_not_forgotten_while_attempts_keep_coming() -> None:
    detector = StormDetector(1, 10.0, forget_after=30.0)
    _, tripped_at = trip(detector, 0.0)
    for offset in (20.0, 40.0, 60.0):  # checked attempts keep the key remembered
        detector.check(KEY, tripped_at + offset)
    decision, _ = trip(detector, tripped_at + 80.0)
    assert decision.retry_after == 2


def test_refused_attempts_keep_the_key_remembered() -> None:
    detector = StormDetector(1, 10.0, max_delay=100.0, forget_after=30.0)
    now = 0.0
    for _ in range(6):  # delays 1 … 32
        decision, now = trip(detector, now)
        now += decision.retry_after
    assert decision.retry_after == 32
    assert detector.check(KEY, now - 10.0).retry_after == 10  # 22 s after the trip: remembered


def test_quiet_time_counts_from_the_end_of_the_delay() -> None:
    # A client that obeys retry-after=30 exactly must not be forgotten for having been quiet
    # while it was told to be: the level stays at the cap.
    detector = StormDetector(1, 10.0)
    decision, now = trip(detector, 0.0)
    for _ in range(5):
        decision, now = trip(detector, now + decision.retry_after)
    assert decision.retry_after == 30
    decision, now = trip(detector, now + 30.0)
    assert decision.retry_after == 30
    item = state_of(detector, now + 59.99)
    assert item is not None and item.trips == 7
    assert state_of(detector, now + 60.0) is None


def test_sliding_window() -> None:
    detector = StormDetector(10, 10.0)
    fill(detector, 0.0, 10, step=0.5)  # at 0.0 … 4.5
    assert detector.check(KEY, 9.99).tripped
    detector = StormDetector(10, 10.0)
    fill(detector, 0.0, 10, step=0.5)
    assert detector.check(KEY, 10.0) == ALLOWED  # the attempt at 0.0 left the window (10-10, 10]
    detector.record(KEY, 10.0)
    assert detector.check(KEY, 10.2).tripped  # 0.5 … 4.5 and 10.0 count: 10


def test_remaining_seconds_rounded_up() -> None:
    detector = StormDetector(1, 10.0)
    now = 0.0
    for _ in range(3):  # delays 1, 2, 4
        decision, now = trip(detector, now)
        now += decision.retry_after
    decision, now = trip(detector, now)
    assert decision.retry_after == 8
    assert detector.check(KEY, now + 0.01).retry_after == 8
    assert detector.check(KEY, now + 6.5).retry_after == 2
    assert detector.check(KEY, now + 7.0).retry_after == 1
    assert detector.check(KEY, now + 7.99).retry_after == 1


def test_float_noise_does_not_round_up() -> None:
    detector = StormDetector(1, 10.0)
    detector.record(KEY, 0.1)
    assert detector.check(KEY, 0.1 + 0.2).retry_after == 1  # 0.30000000000000004


def test_keys_are_independent() -> None:
    detector = StormDetector(10, 10.0)
    trip(detector, 0.0)
    assert attempt(detector, 0.5, key="other") == ALLOWED
    assert detector.open_count(0.5) == 1
    assert [item.key for item in detector.snapshot(0.5)] == ["other", KEY]


def test_snapshot_shows_only_keys_worth_showing() -> None:
    detector = StormDetector(10, 10.0)
    detector.check("checked-only", 0.0)
    attempt(detector, 0.0, key="recent")
    assert [item.key for item in detector.snapshot(1.0)] == ["recent"]
    assert detector.snapshot(10.0) == []
    assert (detector.threshold, detector.window) == (10, 10.0)


def test_open_breaker_with_elapsed_delay_shows_half_open() -> None:
    detector = StormDetector(10, 10.0)
    _, opened = trip(detector, 0.0)
    assert detector.open_count(opened + 0.5) == 1
    assert detector.open_count(opened + 1.0) == 0
    item = state_of(detector, opened + 1.0)
    assert item is not None and item.state is BreakerState.HALF_OPEN and item.retry_after == 0


def test_memory_bounded_under_a_flood_of_distinct_keys() -> None:
    detector = StormDetector(10, 10.0, forget_after=30.0)
    for index in range(20_000):
        attempt(detector, index * 0.01, key=f"k{index}")  # 100 new keys per second
    assert len(detector._breakers) <= 2 * 3000 + 256
    detector.prune(1000.0)
    assert detector._breakers == {}


@pytest.mark.parametrize(("threshold", "window"), [(0, 10.0), (10, 0.0)])
def test_invalid_rules_rejected(threshold: int, window: float) -> None:
    with pytest.raises(ValueError):
        StormDetector(threshold, window)


@settings(max_examples=300)
@given(
    st.integers(1, 6),
    st.floats(0.5, 10.0),
    st.lists(st.floats(0.0, 3.0), min_size=1, max_size=120),
)
def test_never_more_than_threshold_admitted_between_trips(
    threshold: int, window: float, gaps: list[float]
) -> None:
    detector = StormDetector(threshold, window)
    now, admitted, trips = 0.0, [], []
    for gap in gaps:
        now += gap
        decision = attempt(detector, now)
        if decision.allowed:
            admitted.append(now)
        if decision.tripped:
            trips.append(now)
        assert decision.allowed or decision.retry_after >= 1
    # A trip clears the count (docs/protocol.md, section 8), so the budget is per stretch between
    # trips: within one, no window-length interval holds more than `threshold` admitted.
    bounds = [float("-inf"), *trips, float("inf")]
    for low, high in itertools.pairwise(bounds):
        stretch = [at for at in admitted if low < at <= high]
        for start in stretch:
            assert len([at for at in stretch if start <= at < start + window]) <= threshold


# --- StartFailureBreaker ----------------------------------------------------------------


def test_opens_after_exactly_five_consecutive_failures() -> None:
    breaker = StartFailureBreaker()
    for index in range(4):
        breaker.record_failure("web", float(index))
        assert breaker.check("web", float(index)) is None
    breaker.record_failure("web", 4.0)
    assert breaker.check("web", 4.0) == 30
    assert breaker.check("web", 33.5) == 1
    assert breaker.check("other", 5.0) is None


def test_success_resets_the_count() -> None:
    breaker = StartFailureBreaker()
    for index in range(4):
        breaker.record_failure("web", float(index))
    breaker.record_success("web")
    for index in range(4):
        breaker.record_failure("web", 10.0 + index)
    assert breaker.check("web", 14.0) is None
    assert breaker.snapshot(14.0) == [FailureSnapshot("web", BreakerState.CLOSED, 4, None, 0)]


def test_half_open_trial_success_closes() -> None:
    breaker = StartFailureBreaker(failures=2, open_for=30.0)
    breaker.record_failure("web", 0.0)
    breaker.record_failure("web", 0.0)
    assert breaker.check("web", 29.9) == 1
    assert breaker.check("web", 30.0) is None  # the trial
    assert breaker.check("web", 30.1) == 1  # others wait for the trial
    breaker.record_success("web")
    assert breaker.check("web", 30.2) is None
    assert breaker.snapshot(30.2) == []


def test_half_open_trial_failure_reopens() -> None:
    breaker = StartFailureBreaker(failures=2, open_for=30.0)
    breaker.record_failure("web", 0.0)
    breaker.record_failure("web", 0.0)
    assert breaker.check("web", 31.0) is None
    breaker.record_failure("web", 31.5)
    assert breaker.check("web", 32.0) == 30
    assert breaker.snapshot(32.0) == [FailureSnapshot("web", BreakerState.OPEN, 3, 31.5, 30)]


def test_lost_trial_is_given_up_after_open_for() -> None:
    breaker = StartFailureBreaker(failures=1, open_for=10.0)
    breaker.record_failure("web", 0.0)
    assert breaker.check("web", 10.0) is None  # trial, never reported
    assert breaker.check("web", 15.0) == 1
    assert breaker.check("web", 20.0) is None  # another trial


def test_failure_snapshot_states() -> None:
    breaker = StartFailureBreaker(failures=1, open_for=10.0)
    breaker.record_failure("web", 0.0)
    assert breaker.snapshot(2.5) == [FailureSnapshot("web", BreakerState.OPEN, 1, 0.0, 8)]
    assert breaker.snapshot(10.0)[0].state is BreakerState.HALF_OPEN
    breaker.check("web", 10.0)
    assert breaker.snapshot(10.0) == [FailureSnapshot("web", BreakerState.HALF_OPEN, 1, 10.0, 0)]


def test_failure_while_open_keeps_it_open() -> None:
    breaker = StartFailureBreaker(failures=1, open_for=10.0)
    breaker.record_failure("web", 0.0)
    breaker.record_failure("web", 5.0)  # a start already under way when it opened
    assert breaker.check("web", 9.0) == 1
    assert breaker.check("web", 10.0) is None


@pytest.mark.parametrize(("failures", "open_for"), [(0, 30.0), (5, 0.0)])
def test_invalid_breaker_settings(failures: int, open_for: float) -> None:
    with pytest.raises(ValueError):
        StartFailureBreaker(failures, open_for)
