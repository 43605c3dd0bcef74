"""Server-side storm detection (docs/protocol.md, section 8): breakers per key, per address, per
project.

:class:`StormDetector` enforces one rule — at most ``threshold`` admitted connection attempts per
key within a sliding ``window`` — for many keys (composite keys, or client addresses). The rules,
as the protocol states them:

* ``check`` before admitting, ``record`` once every other check passed. Refused attempts are
  never recorded, so they never count.
* An attempt that would be the ``threshold + 1``-th admitted within the window **trips** the key:
  its breaker opens (its count is cleared) and the attempt is refused with ``retry-after``.
* While open, attempts are refused with the whole seconds that remain (at least 1).
* The first attempt after the delay is admitted (half-open); recording it closes the breaker.
* Each trip while the key is remembered doubles the delay: 1, 2, 4, 8, 16 s, capped at 30 s.
* A key with no attempt for ``forget_after`` seconds is forgotten (its delay back to 1 s);
  the seconds it spent open, telling clients to wait, do not count as quiet.

:class:`StartFailureBreaker` stops a project whose shell keeps failing to start from
fork-looping the machine: 5 consecutive failures open it for 30 s, then one trial is let through.

Time is passed in (seconds, any monotonic origin): nothing here reads a clock.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass, field

# Floating-point noise must not turn "1 s remaining" into "retry-after=2".
_EPSILON = 1e-9
# Lazy pruning runs after this many calls at least (amortised O(1) per call).
_MIN_PRUNE_INTERVAL = 256


class BreakerState(enum.Enum):
    """closed → open (tripped) → half_open (delay elapsed, a trial admitted) → closed."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class StormDecision:
    """The answer to ``check``: refused attempts carry ``retry_after`` whole seconds (≥ 1)."""

    allowed: bool
    retry_after: int = 0
    tripped: bool = False  # this very attempt opened the breaker


@dataclass(frozen=True)
class BreakerSnapshot:
    """One key's breaker, for ``GET /stats/circuit-breaker``.

    ``trips`` is how many times the key tripped while remembered; ``delay`` the length of its
    latest opening (0 if none); ``retry_after`` 0 unless open.
    """

    key: str
    state: BreakerState
    attempts_in_window: int
    trips: int
    opened_at: float | None
    retry_after: int
    delay: float


def _whole_seconds(remaining: float) -> int:
    """Seconds to wait, rounded up, at least 1."""
    return max(1, math.ceil(remaining - _EPSILON))


@dataclass
class _KeyBreaker:
    last_seen: float
    admitted: deque[float] = field(default_factory=deque)
    state: BreakerState = BreakerState.CLOSED
    trips: int = 0
    opened_at: float | None = None
    delay: float = 0.0

    def remaining(self, now: float) -> float:
        """Seconds the breaker stays open (≤ 0 when closed or the delay has elapsed)."""
        if self.state is not BreakerState.OPEN or self.opened_at is None:
            return 0.0
        return self.opened_at + self.delay - now

    def slide(self, now: float, window: float) -> None:
        """Forget admitted attempts outside the window ``(now - window, now]``."""
        while self.admitted and self.admitted[0] <= now - window:
            self.admitted.popleft()


class StormDetector:
    """One storm rule (threshold admitted attempts per window) applied to many keys."""

    def __init__(
        self,
        threshold: int,
        window: float,
        *,
        max_delay: float = 30.0,
        forget_after: float = 30.0,
    ) -> None:
        if threshold < 1 or window <= 0:
            raise ValueError("threshold must be at least 1 and window positive")
        self.threshold = threshold
        self.window = window
        self.max_delay = max_delay
        self.forget_after = forget_after
        self._breakers: dict[str, _KeyBreaker] = {}
        self._calls_since_prune = 0

    def check(self, key: str, now: float) -> StormDecision:
        """May an attempt for ``key`` proceed? Does not count it: call ``record`` if admitted."""
        breaker = self._touch(key, now)
        remaining = breaker.remaining(now)
        if remaining > _EPSILON:
            return StormDecision(allowed=False, retry_after=_whole_seconds(remaining))
        if breaker.state is BreakerState.OPEN:
            breaker.state = BreakerState.HALF_OPEN
            return StormDecision(allowed=True)
        breaker.slide(now, self.window)
        if len(breaker.admitted) >= self.threshold:
            return self._trip(breaker, now)
        return StormDecision(allowed=True)

    def record(self, key: str, now: float) -> None:
        """Count an admitted attempt for ``key``; a half-open breaker closes (keeping its level)."""
        breaker = self._touch(key, now)
        breaker.admitted.append(now)
        breaker.slide(now, self.window)
        if breaker.state is BreakerState.HALF_OPEN:
            breaker.state = BreakerState.CLOSED

    def prune(self, now: float) -> None:
        """Forget every key with no attempt for ``forget_after`` seconds."""
        stale = [key for key, b in self._breakers.items() if self._is_forgotten(b, now)]
        for key in stale:
            del self._breakers[key]
        self._calls_since_prune = 0

    def snapshot(self, now: float) -> list[BreakerSnapshot]:
        """The keys worth showing (open, half-open, or with attempts in the window), by key."""
        shown = []
        for key in sorted(self._breakers):
            item = self._snapshot_of(key, self._breakers[key], now)
            if item.state is not BreakerState.CLOSED or item.attempts_in_window:
                shown.append(item)
        return shown

    def open_count(self, now: float) -> int:
        """How many keys are refusing attempts at ``now``."""
        return sum(
            1
            for breaker in self._breakers.values()
            if not self._is_forgotten(breaker, now) and breaker.remaining(now) > _EPSILON
        )

    def _touch(self, key: str, now: float) -> _KeyBreaker:
        """The key's breaker (fresh if unknown or forgotten), marked as seen at ``now``."""
        self._calls_since_prune += 1
        if self._calls_since_prune >= max(_MIN_PRUNE_INTERVAL, len(self._breakers)):
            self.prune(now)
        breaker = self._breakers.get(key)
        if breaker is None or self._is_forgotten(breaker, now):
            breaker = self._breakers[key] = _KeyBreaker(last_seen=now)
        breaker.last_seen = now
        return breaker

    def _trip(self, breaker: _KeyBreaker, now: float) -> StormDecision:
        """Open the breaker: clear the count, double the delay of the previous trip."""
        breaker.delay = min(self.max_delay, float(2 ** min(breaker.trips, 62)))
        breaker.trips += 1
        breaker.state = BreakerState.OPEN
        breaker.opened_at = now
        breaker.admitted.clear()
        return StormDecision(allowed=False, retry_after=_whole_seconds(breaker.delay), tripped=True)

    def _is_forgotten(self, breaker: _KeyBreaker, now: float) -> bool:
        # Quiet time counts from the last attempt, but not while the breaker told clients to
        # wait: a client obeying retry-after=30 must not find its key forgotten (level reset).
        quiet_since = breaker.last_seen
        if breaker.opened_at is not None:
            quiet_since = max(quiet_since, breaker.opened_at + breaker.delay)
        return now - quiet_since >= self.forget_after

    def _snapshot_of(self, key: str, breaker: _KeyBreaker, now: float) -> BreakerSnapshot:
        if self._is_forgotten(breaker, now):
            return BreakerSnapshot(key, BreakerState.CLOSED, 0, 0, None, 0, 0.0)
        remaining = breaker.remaining(now)
        state = breaker.state
        if state is BreakerState.OPEN and remaining <= _EPSILON:
            state = BreakerState.HALF_OPEN  # the next attempt will be the trial
        attempts = sum(1 for at in breaker.admitted if at > now - self.window)
        retry_after = _whole_seconds(remaining) if remaining > _EPSILON else 0
        return BreakerSnapshot(
            key, state, attempts, breaker.trips, breaker.opened_at, retry_after, breaker.delay
        )


@dataclass(frozen=True)
class FailureSnapshot:
    """One project's start-failure breaker, for ``GET /stats/circuit-breaker``."""

    project: str
    state: BreakerState
    failures: int
    opened_at: float | None
    retry_after: int


@dataclass
class _ProjectBreaker:
    failures: int = 0
    state: BreakerState = BreakerState.CLOSED
    opened_at: float = 0.0  # when it opened, or when the half-open trial began


class StartFailureBreaker:
    """Stops starting shells for a project after ``failures`` consecutive start failures.

    Open for ``open_for`` seconds, then half-open: one trial start is allowed. Its success closes
    the breaker; its failure opens it again. Other starts during the trial are refused (1 s); a
    trial that never reports back is given up after ``open_for`` and another one is allowed.
    """

    def __init__(self, failures: int = 5, open_for: float = 30.0) -> None:
        if failures < 1 or open_for <= 0:
            raise ValueError("failures must be at least 1 and open_for positive")
        self.failures = failures
        self.open_for = open_for
        self._projects: dict[str, _ProjectBreaker] = {}

    def check(self, project: str, now: float) -> int | None:
        """None when a start may be tried, else the whole seconds to wait (≥ 1)."""
        breaker = self._projects.get(project)
        if breaker is None or breaker.state is BreakerState.CLOSED:
            return None
        remaining = breaker.opened_at + self.open_for - now
        if remaining > _EPSILON:
            return 1 if breaker.state is BreakerState.HALF_OPEN else _whole_seconds(remaining)
        breaker.state, breaker.opened_at = BreakerState.HALF_OPEN, now
        return None

    def record_failure(self, project: str, now: float) -> None:
        """A start failed; the ``failures``-th in a row, or a failed trial, opens the breaker."""
        breaker = self._projects.setdefault(project, _ProjectBreaker())
        breaker.failures += 1
        if breaker.state is BreakerState.HALF_OPEN or (
            breaker.state is BreakerState.CLOSED and breaker.failures >= self.failures
        ):
            breaker.state, breaker.opened_at = BreakerState.OPEN, now

    def record_success(self, project: str) -> None:
        """A start succeeded: the breaker closes and the failure count resets."""
        self._projects.pop(project, None)

    def snapshot(self, now: float) -> list[FailureSnapshot]:
        """Every project with failures on record, by project."""
        return [self._snapshot_of(project, now) for project in sorted(self._projects)]

    def _snapshot_of(self, project: str, now: float) -> FailureSnapshot:
        breaker = self._projects[project]
        remaining = breaker.opened_at + self.open_for - now
        state = breaker.state
        if state is BreakerState.OPEN and remaining <= _EPSILON:
            state = BreakerState.HALF_OPEN  # the next start will be the trial
        is_open = state is BreakerState.OPEN
        return FailureSnapshot(
            project,
            state,
            breaker.failures,
            None if state is BreakerState.CLOSED else breaker.opened_at,
            _whole_seconds(remaining) if is_open else 0,
        )
