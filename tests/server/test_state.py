"""tether.server.state: the session lifecycle table, checked pair by pair."""

from __future__ import annotations

import itertools

import pytest

from tether.errors import IllegalTransition, TetherError
from tether.protocol.codes import CloseCode
from tether.server.state import (
    TRANSITIONS,
    EndReason,
    SessionEvent,
    SessionState,
    next_state,
)

S, E = SessionState, SessionEvent

# The lifecycle written out independently of the module: starting → attached ⇄ detached → ended.
ALLOWED = {
    (S.STARTING, E.ATTACH): S.ATTACHED,
    (S.STARTING, E.ADOPT): S.DETACHED,
    (S.ATTACHED, E.ATTACH): S.ATTACHED,
    (S.DETACHED, E.ATTACH): S.ATTACHED,
    (S.ATTACHED, E.LAST_DETACH): S.DETACHED,
    (S.ENDED, E.LAST_DETACH): S.ENDED,
    (S.STARTING, E.END): S.ENDED,
    (S.ATTACHED, E.END): S.ENDED,
    (S.DETACHED, E.END): S.ENDED,
}


@pytest.mark.parametrize(("state", "event"), list(itertools.product(S, E)))
def test_every_pair_is_allowed_by_the_table_or_refused(
    state: SessionState, event: SessionEvent
) -> None:
    if (state, event) in ALLOWED:
        assert next_state(state, event) is ALLOWED[state, event]
    else:
        with pytest.raises(IllegalTransition) as caught:
            next_state(state, event)
        assert (caught.value.state, caught.value.event) == (state.value, event.value)
        assert state.value in str(caught.value) and event.value in str(caught.value)


def test_the_table_is_exactly_the_lifecycle() -> None:
    assert TRANSITIONS == ALLOWED


def test_ended_is_final_and_everything_else_can_end() -> None:
    assert all(to is S.ENDED for (state, _), to in TRANSITIONS.items() if state is S.ENDED)
    assert all(next_state(state, E.END) is S.ENDED for state in S if state is not S.ENDED)


def test_only_attaching_leaves_starting_or_detached() -> None:
    # ...or, for a session taken over from a previous server process, adoption (detached).
    expected = {S.STARTING: {E.ATTACH, E.ADOPT}, S.DETACHED: {E.ATTACH}}
    for state in (S.STARTING, S.DETACHED):
        leaving = {
            event for (s, event), to in TRANSITIONS.items() if s is state and to is not S.ENDED
        }
        assert leaving == expected[state]


def test_an_illegal_transition_is_a_tether_error() -> None:
    with pytest.raises(TetherError):
        next_state(S.ENDED, E.ATTACH)


def test_states_show_as_the_protocol_names_them() -> None:
    assert [state.value for state in S] == ["starting", "attached", "detached", "ended"]


@pytest.mark.parametrize(
    ("reason", "code", "text"),
    [
        (EndReason.EXITED, CloseCode.EXITED, "shell exited"),
        (EndReason.REAPED, CloseCode.NOT_FOUND, "session idle-reaped"),
        (EndReason.KILLED, CloseCode.TERMINATED, "session terminated by an operator"),
        (EndReason.SHUTDOWN, CloseCode.GOING_AWAY, "server shutting down"),
    ],
)
def test_end_reasons_carry_their_close_code(reason: EndReason, code: int, text: str) -> None:
    assert (reason.code, reason.reason) == (int(code), text)
    assert isinstance(reason.code, int)
