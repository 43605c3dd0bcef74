"""The reconnection policy (docs/protocol.md, section 7), driven by a fake clock.

Most of the contract is in ``tests/vectors/reconnect_policy.json``, which the JavaScript client's
tests (tests/js/policy.test.mjs) run as well; the tests after the vectors cover what is
particular to this module's API.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

import tether.policy
from tether.protocol.codes import action_for
from tether.protocol.policy import (
    FAILURES_TO_OPEN,
    MAX_BACKOFF,
    OPEN_SECONDS,
    PolicyError,
    PolicyEvent,
    ReconnectPolicy,
    State,
    backoff_delay,
)

SPEC: dict[str, Any] = json.loads(
    (Path(__file__).parents[1] / "vectors" / "reconnect_policy.json").read_text(encoding="utf-8")
)
TABLE: dict[str, Any] = json.loads(
    (resources.files("tether.protocol") / "close_codes.json").read_text(encoding="utf-8")
)
SNAPSHOT_FIELDS = ("state", "attempt", "failures", "delay", "retry_at")


def make_policy(options: dict[str, Any]) -> ReconnectPolicy:
    """A policy from a vector's snake_case options (``random`` is a constant)."""
    kwargs = dict(options)
    if "random" in kwargs:
        value = float(kwargs["random"])
        kwargs["random"] = lambda: value
    return ReconnectPolicy(**kwargs)


def observed(policy: ReconnectPolicy) -> dict[str, Any]:
    snapshot = policy.snapshot()
    return {
        "state": snapshot.state.value,
        "attempt": snapshot.attempt,
        "failures": snapshot.failures,
        "delay": snapshot.delay,
        "retry_at": snapshot.retry_at,
    }


def assert_snapshot(actual: dict[str, Any], expected: dict[str, Any], where: str) -> None:
    assert sorted(expected) == sorted(SNAPSHOT_FIELDS), f"{where}: expect lists every field"
    for field in ("state", "attempt", "failures"):
        assert actual[field] == expected[field], f"{where}: {field}"
    for field in ("delay", "retry_at"):
        if expected[field] is None:
            assert actual[field] is None, f"{where}: {field}"
        else:
            assert actual[field] == pytest.approx(expected[field], abs=1e-9), f"{where}: {field}"


def apply(policy: ReconnectPolicy, step: dict[str, Any]) -> bool | None:
    """Call the input a step names; the value timer and reconnect_now return."""
    now, code, reason = step["at"], step.get("code"), step.get("reason", "")
    inputs: dict[str, Callable[[], bool | None]] = {
        "connected": lambda: policy.on_connected(now),
        "lost": lambda: policy.on_lost(now, step["code"], reason),
        "attempt_failed": lambda: policy.on_attempt_failed(now, code, reason),
        "timer": lambda: policy.on_timer(now),
        "reconnect_now": lambda: policy.reconnect_now(now),
        "stop": lambda: policy.stop(now, code, reason),
        "reset": lambda: policy.reset(now),
    }
    return inputs[step["event"]]()


def run_step(policy: ReconnectPolicy, events: list[PolicyEvent], step: dict[str, Any]) -> None:
    where = f"{step['event']} at {step['at']}"
    before = len(events)
    if step.get("error"):
        with pytest.raises(PolicyError):
            apply(policy, step)
    else:
        returned = apply(policy, step)
        if "returns" in step:
            assert returned is step["returns"], f"{where}: returns"
    assert_snapshot(observed(policy), step["expect"], where)
    quiet = step.get("error") or step.get("returns") is False
    emitted = events[before:]
    assert len(emitted) == step.get("emits", 0 if quiet else 1), f"{where}: events"
    if emitted:
        event = emitted[-1]
        assert event.state.value == step["expect"]["state"], f"{where}: event state"
        assert (event.code, event.reason) == (step.get("code"), step.get("reason", ""))
        assert (event.attempt, event.failures) == (policy.attempt, policy.failures)
        assert (event.delay, event.retry_at) == (policy.delay, policy.retry_at)
    assert policy.is_breaker_open == (policy.state in (State.OPEN, State.HALF_OPEN))


@pytest.mark.parametrize("vector", SPEC["vectors"], ids=lambda vector: vector["name"])
def test_vector(vector: dict[str, Any]) -> None:
    policy = make_policy(vector.get("options", {}))
    events: list[PolicyEvent] = []
    policy.add_listener(events.append)
    assert_snapshot(observed(policy), SPEC["initial"], "initial")
    for step in vector["steps"]:
        run_step(policy, events, step)


def test_the_vectors_cover_every_rule() -> None:
    covered = {rule for vector in SPEC["vectors"] for rule in vector["covers"]}
    assert covered >= {
        "retry",
        "retry_now",
        "stop",
        "backoff",
        "backoff_cap",
        "breaker_open",
        "half_open",
        "breaker_close",
        "retry_after",
        "reconnect_now",
        "first_connect",
        "time_scale",
        "jitter",
        "reset",
        "errors",
    }


def table_codes() -> list[int]:
    """Every code of the shared table, both ends of its ranges, and the spec's extra codes."""
    found = {int(code) for code in TABLE["codes"]}
    for span in TABLE["ranges"]:
        found |= {span["from"], span["to"]}
    return sorted(found | set(SPEC["close_code_actions"]["extra_codes"]))


@pytest.mark.parametrize("code", table_codes())
def test_every_close_code_follows_its_action_in_the_table(code: int) -> None:
    scenarios = SPEC["close_code_actions"]["scenarios"]
    lost = ReconnectPolicy()
    lost.on_connected(0)
    lost.on_lost(10, code)
    assert_snapshot(observed(lost), scenarios["lost"][action_for(code)], f"lost {code}")
    failed = ReconnectPolicy()
    failed.on_connected(0)
    failed.on_lost(10, 1006)
    assert failed.on_timer(11)
    failed.on_attempt_failed(12, code)
    expected = scenarios["attempt_failed"][action_for(code)]
    assert_snapshot(observed(failed), expected, f"attempt failed {code}")


def test_every_action_of_the_table_is_specified() -> None:
    actions = {action_for(code) for code in table_codes()}
    for scenario in SPEC["close_code_actions"]["scenarios"].values():
        assert actions <= set(scenario)
    assert actions == {"stop", "retry", "retry_now"}


@pytest.mark.parametrize(("attempt", "delay"), SPEC["backoff_delays"])
def test_backoff_delay(attempt: int, delay: float) -> None:
    assert backoff_delay(attempt) == delay


def test_backoff_delay_starts_at_attempt_one() -> None:
    with pytest.raises(ValueError):
        backoff_delay(0)


def test_contract_constants() -> None:
    assert (FAILURES_TO_OPEN, OPEN_SECONDS, MAX_BACKOFF) == (5, 30.0, 30.0)
    policy = ReconnectPolicy()
    assert (policy.failures_to_open, policy.open_seconds, policy.time_scale) == (5, 30.0, 1.0)


@pytest.mark.parametrize(
    "options",
    [
        {"time_scale": 0},
        {"time_scale": -1},
        {"jitter": 1.5},
        {"jitter": -0.1},
        {"failures_to_open": 0},
    ],
)
def test_invalid_options(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ReconnectPolicy(**options)


def test_jitter_off_by_default_never_draws() -> None:
    calls: list[int] = []

    def draw() -> float:
        calls.append(1)
        return 0.9

    policy = ReconnectPolicy(random=draw)
    policy.on_connected(0)
    policy.on_lost(0, 1006)
    assert policy.delay == 1 and calls == []


def test_listener_removal() -> None:
    policy = ReconnectPolicy()
    seen: list[PolicyEvent] = []
    remove = policy.add_listener(seen.append)
    remove()
    policy.on_connected(0)
    assert seen == []


def test_events_carry_delay_retry_at_and_close() -> None:
    policy = ReconnectPolicy()
    events: list[PolicyEvent] = []
    policy.add_listener(events.append)
    policy.on_connected(1000)
    policy.on_lost(1000, 4129, "retry-after=3")
    assert events[-1] == PolicyEvent(
        State.WAITING, 1, 0, delay=3, retry_at=1003, code=4129, reason="retry-after=3"
    )
    assert policy.snapshot() == PolicyEvent(State.WAITING, 1, 0, delay=3, retry_at=1003)
    assert policy.on_timer(1003)
    assert events[-1] == PolicyEvent(State.CONNECTING, 1, 0)


def test_a_timer_firing_a_hair_early_on_a_float_clock_is_due() -> None:
    policy = ReconnectPolicy(time_scale=0.01)
    policy.on_connected(1_700_000_000.123)
    policy.on_lost(1_700_000_000.123, 1006)
    assert policy.retry_at is not None
    assert policy.on_timer(policy.retry_at - 1e-7)


def test_state_values_are_the_names_both_clients_use() -> None:
    assert [state.value for state in State] == [
        "connecting",
        "connected",
        "waiting",
        "open",
        "half_open",
        "stopped",
    ]


def test_the_compatibility_path_exports_the_same_objects() -> None:
    names = [
        "FAILURES_TO_OPEN",
        "MAX_BACKOFF",
        "OPEN_SECONDS",
        "Listener",
        "PolicyError",
        "PolicyEvent",
        "ReconnectPolicy",
        "State",
        "backoff_delay",
    ]
    from tether.protocol import policy

    for name in names:
        assert getattr(tether.policy, name) is getattr(policy, name), name
