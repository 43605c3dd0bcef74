"""The client reconnection policy of docs/protocol.md, section 7: backoff plus a circuit breaker.

A pure state machine: no asyncio, no clock. The caller passes the time (any monotonic clock, in
seconds) into every method and sleeps on its own until :attr:`ReconnectPolicy.retry_at`.
``web/packages/client/src/policy.js`` is the same machine, state names included; both run the
vectors of ``tests/vectors/reconnect_policy.json``, which are the executable form of these rules.

States::

    CONNECTING ──hello──▶ CONNECTED ──lost (retry code)──▶ WAITING ──due──▶ CONNECTING
        │                     │                              ▲  │
        │                     └──lost (stop code)──▶ STOPPED  │  └─reconnect_now─▶ CONNECTING
        └──attempt failed (< 5 in a row)──────────────────────┘
        └──attempt failed (5th in a row)──▶ OPEN ──30 s or reconnect_now──▶ HALF_OPEN
                                             ▲                               │  │
                                             └──────trial failed─────────────┘  └─hello─▶ CONNECTED

Rules (the contract):

- What a close code means comes from the shared table (:func:`tether.protocol.codes.action_for`):
  ``stop``, ``retry``, or ``retry_now``. This module lists no code of its own.
- Reconnection attempt k (k = 1, 2, …) is made min(2^(k−1), 30) s after the previous event:
  1, 2, 4, 8, 16 s. A ``retry-after=N`` close reason makes that delay max(backoff, N).
- A loss with a ``retry_now`` code (1012, service restart) makes the *first* delay 0; later
  attempts keep their backoff (0, 2, 4, 8, 16). Before a hello such a code is an ordinary retry.
- An attempt fails when it reaches no hello (timeout, refused, closed with a retry code). The 5th
  consecutive failure opens the breaker: no attempt for 30 s, then one half-open trial. The trial
  succeeding closes the breaker (counts reset); failing reopens it for another 30 s.
- A stop code ends everything at once, whatever the breaker says.
- The machine starts in CONNECTING for the first connect (attempt 0). If that fails it is
  treated like a lost connection (attempt 1 follows after 1 s) and does not count as a failure.
- ``attempt`` always names the next (or in-flight) attempt: the half-open trial after five
  failures is attempt 6, the next trial attempt 7, and so on.
- ``reconnect_now`` (a user action) goes *through* the breaker: while open it starts the half-open
  trial early (a failure reopens it); while waiting it starts the next attempt early (a failure
  counts as usual). It never comes before a server's ``retry-after``: until then it does nothing.

``time_scale`` multiplies the policy's own durations (backoff and the open period), so tests and
``tether check --time-scale`` run the schedule fast; a server's ``retry-after`` is never scaled.
"""

from __future__ import annotations

import enum
import random as _random
from collections.abc import Callable
from dataclasses import dataclass

from tether.errors import PolicyError as PolicyError  # part of this module's API
from tether.protocol.codes import action_for, retry_after_seconds

MAX_BACKOFF = 30.0
FAILURES_TO_OPEN = 5
OPEN_SECONDS = 30.0

# Float clocks: a timer that fires at ``retry_at`` must find the attempt due.
_EPSILON = 1e-6


class State(enum.Enum):
    """Where the connection stands (the same names as the JavaScript client's ``PolicyState``)."""

    CONNECTING = "connecting"  # an attempt is in flight (the first connect or attempt k)
    CONNECTED = "connected"  # a hello was received
    WAITING = "waiting"  # breaker closed: waiting ``delay`` before attempt k
    OPEN = "open"  # breaker open: no attempt until ``retry_at``
    HALF_OPEN = "half_open"  # the single trial attempt after the open period is in flight
    STOPPED = "stopped"  # a stop code (or the user) ended reconnection for good


# The inputs that report on an attempt or a connection, and the states that can have them.
# Anything else is a caller error (PolicyError). timer, reconnect_now and stop are valid in every
# state: they answer False, or do nothing, where they do not apply.
_EXPECTED: dict[str, tuple[State, ...]] = {
    "on_connected": (State.CONNECTING, State.HALF_OPEN),
    "on_attempt_failed": (State.CONNECTING, State.HALF_OPEN),
    "on_lost": (State.CONNECTED,),
}

# Where a due (or forced) attempt starts from, and the state it starts in.
_STARTS = {State.WAITING: State.CONNECTING, State.OPEN: State.HALF_OPEN}


@dataclass(frozen=True)
class PolicyEvent:
    """One state change, as listeners see it.

    ``attempt`` is the number k of the next (or current) reconnection attempt, 0 while connected.
    ``failures`` counts consecutive failed attempts. ``delay`` and ``retry_at`` (in the caller's
    clock) are set in WAITING and OPEN. ``code``/``reason`` are those of the close that caused the
    change, when there was one.
    """

    state: State
    attempt: int
    failures: int
    delay: float | None = None
    retry_at: float | None = None
    code: int | None = None
    reason: str = ""


Listener = Callable[[PolicyEvent], None]


def backoff_delay(attempt: int) -> float:
    """The unscaled delay before reconnection attempt ``attempt`` (1-based): min(2^(k−1), 30)."""
    if attempt < 1:
        raise ValueError("attempt numbers start at 1")
    return min(2.0 ** min(attempt - 1, 16), MAX_BACKOFF)


class ReconnectPolicy:
    """Backoff and circuit breaker for one logical connection; see the module docstring."""

    def __init__(
        self,
        *,
        time_scale: float = 1.0,
        jitter: float = 0.0,
        random: Callable[[], float] = _random.random,
        open_seconds: float = OPEN_SECONDS,
        failures_to_open: int = FAILURES_TO_OPEN,
    ) -> None:
        """``jitter`` in [0, 1] shortens each backoff by up to that fraction (``random()``).

        ``open_seconds`` (before scaling) is how long the breaker stays open and
        ``failures_to_open`` how many consecutive failures open it: 30 and 5 by contract.
        """
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        if not 0.0 <= jitter <= 1.0:
            raise ValueError("jitter must be within [0, 1]")
        if failures_to_open < 1:
            raise ValueError("failures_to_open must be at least 1")
        self.time_scale = time_scale
        self.open_seconds = open_seconds
        self.failures_to_open = failures_to_open
        self._jitter = jitter
        self._random = random
        self._listeners: list[Listener] = []
        self.state = State.CONNECTING
        self.attempt = 0
        self.failures = 0
        self.delay: float | None = None
        self.retry_at: float | None = None
        self._not_before: float | None = None  # a server's retry-after: no attempt before it

    # -- observation -----------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` on every state change; returns a function that removes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def snapshot(self) -> PolicyEvent:
        """The current state as an event (without a close code)."""
        return PolicyEvent(self.state, self.attempt, self.failures, self.delay, self.retry_at)

    @property
    def is_breaker_open(self) -> bool:
        """True while the breaker is open or its half-open trial is in flight."""
        return self.state in (State.OPEN, State.HALF_OPEN)

    # -- inputs ------------------------------------------------------------------------------

    def on_connected(self, now: float) -> None:
        """An attempt reached its hello: close the breaker and reset the counts."""
        self._expect("on_connected")
        self.attempt = self.failures = 0
        self._not_before = None
        self._enter(State.CONNECTED, now)

    def on_lost(self, now: float, code: int, reason: str = "") -> None:
        """The established connection was lost (or closed) with ``code``."""
        self._expect("on_lost")
        action = action_for(code)
        if action == "stop":
            self._enter(State.STOPPED, now, code=code, reason=reason)
            return
        self.attempt = 1
        delay = 0.0 if action == "retry_now" else self._backoff(1)
        self._wait(State.WAITING, now, delay, code, reason)

    def on_attempt_failed(self, now: float, code: int | None = None, reason: str = "") -> None:
        """The current attempt reached no hello: refused, timed out, or closed with ``code``.

        Before a hello, a ``retry_now`` code is an ordinary failure: only a loss skips the wait.
        """
        self._expect("on_attempt_failed")
        if code is not None and action_for(code) == "stop":
            self._enter(State.STOPPED, now, code=code, reason=reason)
            return
        if self.attempt > 0:  # the first connect is no reconnection attempt: it is not counted
            self.failures += 1
        self.attempt += 1
        if self.state is State.HALF_OPEN or self.failures >= self.failures_to_open:
            self._wait(State.OPEN, now, self.open_seconds * self.time_scale, code, reason)
            return
        self._wait(State.WAITING, now, self._backoff(self.attempt), code, reason)

    def on_timer(self, now: float) -> bool:
        """Advance when ``retry_at`` has come; True when the caller must start an attempt now."""
        if self.state not in _STARTS or not self._is_due(now):
            return False
        self._enter(_STARTS[self.state], now)
        return True

    def reconnect_now(self, now: float) -> bool:
        """A user asked to reconnect: start the pending attempt early; True when one starts.

        While the breaker is open this is its half-open trial. Nothing happens while connecting,
        connected, stopped, or before a server's ``retry-after`` has passed.
        """
        if self.state not in _STARTS or self._is_held_back(now):
            return False
        self._enter(_STARTS[self.state], now)
        return True

    def stop(self, now: float, code: int | None = None, reason: str = "") -> None:
        """End reconnection for good (the user closed, or the caller gives up)."""
        if self.state is not State.STOPPED:
            self._enter(State.STOPPED, now, code=code, reason=reason)

    def reset(self, now: float) -> None:
        """Forget every failure and start a fresh first connect (a new session, a re-attach)."""
        self.attempt = self.failures = 0
        self._not_before = None
        self._enter(State.CONNECTING, now)

    # -- internals ---------------------------------------------------------------------------

    def _backoff(self, attempt: int) -> float:
        delay = backoff_delay(attempt)
        if self._jitter:
            delay *= 1.0 - self._jitter * self._random()
        return delay * self.time_scale

    def _wait(self, state: State, now: float, delay: float, code: int | None, reason: str) -> None:
        # Only a close carries a server's retry-after; a refused or timed-out attempt has none.
        retry_after = retry_after_seconds(reason) if code is not None else None
        self._not_before = None if retry_after is None else now + retry_after
        if retry_after is not None:
            delay = max(delay, float(retry_after))
        self._enter(state, now, delay=delay, code=code, reason=reason)

    def _is_due(self, now: float) -> bool:
        return self.retry_at is None or now >= self.retry_at - _EPSILON

    def _is_held_back(self, now: float) -> bool:
        return self._not_before is not None and now < self._not_before - _EPSILON

    def _expect(self, method: str) -> None:
        if self.state not in _EXPECTED[method]:
            raise PolicyError(f"{method} in state {self.state.value}")

    def _enter(
        self,
        state: State,
        now: float,
        *,
        delay: float | None = None,
        code: int | None = None,
        reason: str = "",
    ) -> None:
        """The one place where the state changes and listeners hear of it."""
        self.state = state
        self.delay = delay
        self.retry_at = None if delay is None else now + delay
        event = PolicyEvent(state, self.attempt, self.failures, delay, self.retry_at, code, reason)
        for listener in list(self._listeners):
            listener(event)
