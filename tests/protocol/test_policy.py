"""The reconnection policy (docs/protocol.md, section 7), driven by a fake clock."""

from __future__ import annotations

import pytest

from tether.protocol.policy import (
    PolicyError,
    PolicyEvent,
    ReconnectPolicy,
    State,
    backoff_delay,
)


class Clock:
    """A fake clock: time moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def make(**kwargs: object) -> tuple[ReconnectPolicy, Clock, list[PolicyEvent]]:
    policy = ReconnectPolicy(**kwargs)  # type: ignore[arg-type]
    events: list[PolicyEvent] = []
    policy.add_listener(events.append)
    return policy, Clock(), events


def connected(**kwargs: object) -> tuple[ReconnectPolicy, Clock, list[PolicyEvent]]:
    policy, clock, events = make(**kwargs)
    policy.on_connected(clock.now)
    events.clear()
    return policy, clock, events


def run_until_attempt(policy: ReconnectPolicy, clock: Clock) -> float:
    """Advance the clock to the pending retry time; returns the delay waited."""
    assert policy.retry_at is not None
    waited = policy.retry_at - clock.now
    assert not policy.on_timer(clock.advance(waited - 0.001))
    assert policy.on_timer(clock.advance(0.001))
    return round(waited, 6)


def test_backoff_delay_sequence_and_cap() -> None:
    assert [backoff_delay(k) for k in range(1, 9)] == [1, 2, 4, 8, 16, 30, 30, 30]
    assert backoff_delay(1000) == 30
    with pytest.raises(ValueError):
        backoff_delay(0)


def test_starts_connecting_and_connects() -> None:
    policy, clock, events = make()
    assert policy.state is State.CONNECTING
    assert policy.attempt == 0
    policy.on_connected(clock.now)
    assert events == [PolicyEvent(State.CONNECTED, 0, 0)]


def test_exact_delays_then_breaker_opens_at_fifth_failure() -> None:
    policy, clock, events = connected()
    policy.on_lost(clock.now, 1006)
    waits = []
    for k in range(1, 6):
        assert policy.state is State.WAITING
        assert policy.attempt == k
        waits.append(run_until_attempt(policy, clock))
        assert policy.state is State.CONNECTING
        assert policy.failures == k - 1
        policy.on_attempt_failed(clock.now, 1006)
    assert waits == [1, 2, 4, 8, 16]
    assert policy.state is State.OPEN
    assert policy.failures == 5
    assert policy.delay == 30
    assert policy.is_breaker_open
    states = [e.state for e in events]
    assert states.count(State.OPEN) == 1
    assert states.index(State.OPEN) == len(states) - 1


def test_open_lasts_thirty_seconds_then_half_open_trial() -> None:
    policy, clock, _ = connected()
    policy.on_lost(clock.now, 1006)
    for _ in range(5):
        run_until_attempt(policy, clock)
        policy.on_attempt_failed(clock.now)
    assert run_until_attempt(policy, clock) == 30
    assert policy.state is State.HALF_OPEN
    assert policy.attempt == 6


def test_half_open_failure_reopens_for_thirty_seconds() -> None:
    policy, clock, _ = connected()
    policy.on_lost(clock.now, 1006)
    for _ in range(5):
        run_until_attempt(policy, clock)
        policy.on_attempt_failed(clock.now)
    for attempt in (6, 7, 8):
        run_until_attempt(policy, clock)
        assert policy.state is State.HALF_OPEN
        assert policy.attempt == attempt
        policy.on_attempt_failed(clock.now)
        assert policy.state is State.OPEN
        assert policy.delay == 30


def test_half_open_success_closes_and_resets() -> None:
    policy, clock, _ = connected()
    policy.on_lost(clock.now, 1006)
    for _ in range(5):
        run_until_attempt(policy, clock)
        policy.on_attempt_failed(clock.now)
    run_until_attempt(policy, clock)
    policy.on_connected(clock.now)
    assert policy.state is State.CONNECTED
    assert (policy.attempt, policy.failures) == (0, 0)
    assert not policy.is_breaker_open
    policy.on_lost(clock.now, 1006)
    assert policy.delay == 1


def test_success_midway_resets_backoff() -> None:
    policy, clock, _ = connected()
    policy.on_lost(clock.now, 1006)
    for _ in range(3):
        run_until_attempt(policy, clock)
        policy.on_attempt_failed(clock.now)
    run_until_attempt(policy, clock)
    policy.on_connected(clock.now)
    policy.on_lost(clock.now, 1011)
    assert (policy.attempt, policy.failures, policy.delay) == (1, 0, 1)


@pytest.mark.parametrize("code", [1000, 1009, 4000, 4001, 4003, 4004, 4009, 4010, 4012, 4013, 4050])
def test_stop_codes_end_reconnection_from_connected(code: int) -> None:
    policy, clock, events = connected()
    policy.on_lost(clock.now, code, "bye")
    assert policy.state is State.STOPPED
    assert events[-1] == PolicyEvent(State.STOPPED, 0, 0, code=code, reason="bye")
    assert not policy.on_timer(clock.advance(100))
    assert not policy.reconnect_now(clock.now)


@pytest.mark.parametrize("code", [4004, 4012, 4001])
def test_stop_code_during_attempt_ends_even_with_breaker_open(code: int) -> None:
    policy, clock, _ = connected()
    policy.on_lost(clock.now, 1006)
    for _ in range(5):
        run_until_attempt(policy, clock)
        policy.on_attempt_failed(clock.now)
    run_until_attempt(policy, clock)
    policy.on_attempt_failed(clock.now, code, "gone")
    assert policy.state is State.STOPPED


@pytest.mark.parametrize("code", [1001, 1006, 1011, 1013, 4100, 4129, 4199, 3000, 1002])
def test_retry_codes_wait_one_second(code: int) -> None:
    policy, clock, _ = connected()
    policy.on_lost(clock.now, code)
    assert (policy.state, policy.attempt, policy.delay) == (State.WAITING, 1, 1)


def test_1012_makes_only_the_first_delay_zero() -> None:
    policy, clock, _ = connected()
    policy.on_lost(clock.now, 1012)
    assert policy.delay == 0
    assert policy.on_timer(clock.now)
    waits = []
    for _ in range(4):
        policy.on_attempt_failed(clock.now, 1012)
        waits.append(run_until_attempt(policy, clock))
    assert waits == [2, 4, 8, 16]
    policy.on_attempt_failed(clock.now, 1012)
    assert policy.state is State.OPEN


def test_retry_after_extends_a_shorter_backoff() -> None:
    policy, clock, _ = connected()
    policy.on_lost(clock.now, 4129, "retry-after=5")
    assert policy.delay == 5
    run_until_attempt(policy, clock)
    policy.on_attempt_failed(clock.now, 4129, "retry-after=1")
    assert policy.delay == 2  # backoff 2 > retry-after 1
    run_until_attempt(policy, clock)
    policy.on_attempt_failed(clock.now, 4129, "storm retry-after=7")
    assert policy.delay == 7


def test_retry_after_extends_the_open_period() -> None:
    policy, clock, _ = connected()
    policy.on_lost(clock.now, 1006)
    for _ in range(4):
        run_until_attempt(policy, clock)
        policy.on_attempt_failed(clock.now)
    run_until_attempt(policy, clock)
    policy.on_attempt_failed(clock.now, 4129, "retry-after=45")
    assert (policy.state, policy.delay) == (State.OPEN, 45)


def test_retry_after_is_not_scaled_but_backoff_is() -> None:
    policy, clock, _ = connected(time_scale=0.01)
    policy.on_lost(clock.now, 1006)
    assert policy.delay == pytest.approx(0.01)
    run_until_attempt(policy, clock)
    policy.on_attempt_failed(clock.now, 4129, "retry-after=1")
    assert policy.delay == 1
    run_until_attempt(policy, clock)
    policy.on_attempt_failed(clock.now)
    assert policy.delay == pytest.approx(0.04)


def test_time_scale_scales_the_open_period() -> None:
    policy, clock, _ = connected(time_scale=0.1)
    policy.on_lost(clock.now, 1006)
    for _ in range(5):
        run_until_attempt(policy, clock)
        policy.on_attempt_failed(clock.now)
    assert policy.delay == pytest.approx(3.0)


def test_first_connect_failure_is_not_counted() -> None:
    policy, clock, _ = make()
    policy.on_attempt_failed(clock.now, 1006)
    assert (policy.state, policy.attempt, policy.failures, policy.delay) == (
        State.WAITING,
        1,
        0,
        1,
    )
    waits = []
    for _ in range(5):
        waits.append(run_until_attempt(policy, clock))
        policy.on_attempt_failed(clock.now)
    assert waits == [1, 2, 4, 8, 16]
    assert policy.state is State.OPEN


def test_first_connect_stop_code_stops() -> None:
    policy, clock, _ = make()
    policy.on_attempt_failed(clock.now, 4003, "forbidden")
    assert policy.state is State.STOPPED


def test_reconnect_now_while_waiting_starts_next_attempt() -> None:
    policy, clock, _ = connected()
    policy.on_lost(clock.now, 1006)
    run_until_attempt(policy, clock)
    policy.on_attempt_failed(clock.now)
    assert policy.reconnect_now(clock.advance(0.5))
    assert (policy.state, policy.attempt) == (State.CONNECTING, 2)
    policy.on_attempt_failed(clock.now)
    assert (policy.attempt, policy.failures, policy.delay) == (3, 2, 4)


def test_reconnect_now_while_open_forces_half_open_trial_through_breaker() -> None:
    policy, clock, _ = connected()
    policy.on_lost(clock.now, 1006)
    for _ in range(5):
        run_until_attempt(policy, clock)
        policy.on_attempt_failed(clock.now)
    assert policy.reconnect_now(clock.advance(3))
    assert policy.state is State.HALF_OPEN
    policy.on_attempt_failed(clock.now)
    assert (policy.state, policy.delay) == (State.OPEN, 30)  # failure reopens: no bypass
    assert policy.reconnect_now(clock.advance(1))
    policy.on_connected(clock.now)
    assert policy.state is State.CONNECTED


@pytest.mark.parametrize("state", ["connecting", "connected", "half_open"])
def test_reconnect_now_is_a_no_op_while_connecting_or_connected(state: str) -> None:
    policy, clock, _ = make()
    if state == "connected":
        policy.on_connected(clock.now)
    if state == "half_open":
        policy.on_connected(clock.now)
        policy.on_lost(clock.now, 1006)
        for _ in range(5):
            run_until_attempt(policy, clock)
            policy.on_attempt_failed(clock.now)
        run_until_attempt(policy, clock)
    before = policy.snapshot()
    assert not policy.reconnect_now(clock.now)
    assert policy.snapshot() == before


def test_on_timer_before_due_does_nothing() -> None:
    policy, clock, events = connected()
    policy.on_lost(clock.now, 1006)
    count = len(events)
    assert not policy.on_timer(clock.advance(0.5))
    assert len(events) == count
    assert not connected()[0].on_timer(clock.now)


def test_invalid_inputs_are_caller_errors() -> None:
    policy, clock, _ = connected()
    with pytest.raises(PolicyError):
        policy.on_connected(clock.now)
    with pytest.raises(PolicyError):
        policy.on_attempt_failed(clock.now)
    policy.on_lost(clock.now, 1006)
    with pytest.raises(PolicyError):
        policy.on_lost(clock.now, 1006)
    with pytest.raises(ValueError):
        ReconnectPolicy(time_scale=0)
    with pytest.raises(ValueError):
        ReconnectPolicy(jitter=1.5)


def test_stop_is_final_and_idempotent() -> None:
    policy, clock, events = connected()
    policy.on_lost(clock.now, 1006)
    policy.stop(clock.now, 1000, "user")
    policy.stop(clock.now)
    assert [e.state for e in events] == [State.WAITING, State.STOPPED]
    assert events[-1].code == 1000


def test_events_carry_delay_retry_at_and_close() -> None:
    policy, clock, events = connected()
    policy.on_lost(clock.now, 4129, "retry-after=3")
    assert events[-1] == PolicyEvent(
        State.WAITING, 1, 0, delay=3, retry_at=clock.now + 3, code=4129, reason="retry-after=3"
    )
    run_until_attempt(policy, clock)
    assert events[-1] == PolicyEvent(State.CONNECTING, 1, 0)


def test_listener_removal() -> None:
    policy, clock, events = make()
    seen: list[PolicyEvent] = []
    remove = policy.add_listener(seen.append)
    remove()
    policy.on_connected(clock.now)
    assert seen == [] and len(events) == 1


def test_jitter_shortens_backoff_with_injected_random() -> None:
    policy, clock, _ = connected(jitter=0.5, random=lambda: 1.0)
    policy.on_lost(clock.now, 1006)
    assert policy.delay == 0.5
    run_until_attempt(policy, clock)
    policy.on_attempt_failed(clock.now, 4129, "retry-after=3")
    assert policy.delay == 3  # jitter never undercuts retry-after


def test_jitter_off_by_default_is_exact() -> None:
    calls: list[int] = []

    def rnd() -> float:
        calls.append(1)
        return 0.9

    policy, clock, _ = connected(random=rnd)
    policy.on_lost(clock.now, 1006)
    assert policy.delay == 1 and calls == []
