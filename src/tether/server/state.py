"""A session's states, every transition between them, and why a session ends.

``starting → attached ⇄ detached → ended``. :class:`~tether.server.session.Session` changes its
state only through :func:`next_state`, so the table below is the whole lifecycle. Pure: no I/O.
"""

from __future__ import annotations

import enum

from tether.errors import IllegalTransition
from tether.protocol.codes import CloseCode


class SessionState(enum.Enum):
    """``starting → attached ⇄ detached → ended`` (``GET /stats/sessions`` shows the value)."""

    STARTING = "starting"
    ATTACHED = "attached"
    DETACHED = "detached"
    ENDED = "ended"


class SessionEvent(enum.Enum):
    """What moves a session from one state to another."""

    ATTACH = "attach"  # a client attached
    LAST_DETACH = "last_detach"  # the last attached client left
    END = "end"  # the session ended (exit, idle reaping, operator kill, shutdown)
    ADOPT = "adopt"  # taken over from a previous server process (upgrade, crash): no clients


# Every allowed transition. Rules: a session starts without clients and gets its first one in
# the step that creates it; any client attaching makes it attached; the last one leaving makes it
# detached (idle time counts from then); anything but ended can end, and ended is final — its
# remaining clients (those of an exited shell, receiving the last bytes) may still leave. Any
# other (state, event) is a bug in the caller: IllegalTransition.
_S, _E = SessionState, SessionEvent
TRANSITIONS: dict[tuple[SessionState, SessionEvent], SessionState] = {
    (_S.STARTING, _E.ATTACH): _S.ATTACHED,
    (_S.STARTING, _E.ADOPT): _S.DETACHED,
    (_S.ATTACHED, _E.ATTACH): _S.ATTACHED,
    (_S.DETACHED, _E.ATTACH): _S.ATTACHED,
    (_S.ATTACHED, _E.LAST_DETACH): _S.DETACHED,
    (_S.ENDED, _E.LAST_DETACH): _S.ENDED,
    (_S.STARTING, _E.END): _S.ENDED,
    (_S.ATTACHED, _E.END): _S.ENDED,
    (_S.DETACHED, _E.END): _S.ENDED,
}
del _S, _E


def next_state(state: SessionState, event: SessionEvent) -> SessionState:
    """The state after ``event`` in ``state``; raises :class:`IllegalTransition`."""
    try:
        return TRANSITIONS[state, event]
    except KeyError:
        raise IllegalTransition(state.value, event.value) from None


class EndReason(enum.Enum):
    """Why a session ended, and the close code its clients (and tombstone) carry."""

    EXITED = (CloseCode.EXITED, "shell exited")
    REAPED = (CloseCode.NOT_FOUND, "session idle-reaped")
    KILLED = (CloseCode.TERMINATED, "session terminated by an operator")
    ENDED = (CloseCode.TERMINATED, "session ended by its owner")
    SHUTDOWN = (CloseCode.GOING_AWAY, "server shutting down")
    # A cluster node that was lost finds another node took the key (docs/scaling.md).
    FENCED = (CloseCode.NOT_FOUND, "node lost: session taken over by another node")

    @property
    def code(self) -> int:
        return int(self.value[0])

    @property
    def reason(self) -> str:
        return str(self.value[1])
