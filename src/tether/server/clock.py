"""Time, injected: the one :class:`Clock` a server reads, and a :class:`FakeClock` for tests.

A server is given one clock at the top (``create_app(settings, clock=...)``) and passes it to
everything that measures or waits for time: the session manager (idle timeouts, storms,
tombstones), the metrics, the HTTP API (retry-after, breakers, uptime), the heartbeat, the idle
reaper and the drain grace. With a :class:`FakeClock` a test moves time with
:meth:`FakeClock.advance` instead of sleeping: timeouts become instant and exact, as with trio's
``MockClock``.

Latency measurements of the socket layer (how long an upgrade took) are not domain time: they
use ``time.perf_counter`` where they are taken.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    """Where a server reads the time and waits for it."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (deadlines, durations)."""

    def time(self) -> float:
        """Seconds since the epoch (what logs and the HTTP API show as dates)."""

    async def sleep(self, seconds: float) -> None:
        """Return once ``seconds`` have passed on this clock."""


class SystemClock:
    """The process's clocks and the event loop's timers."""

    # The builtins themselves, not methods wrapping them: the session manager reads the clock
    # on every input write, so a wrapper would add a call to a hot path.
    monotonic = staticmethod(time.monotonic)
    time = staticmethod(time.time)
    sleep = staticmethod(asyncio.sleep)


class FakeClock:
    """A clock that moves only when told to (:meth:`advance`), waking the sleepers it passes.

    ``time()`` starts at ``wall`` (by default the real time when the clock is made, so that dates
    a test compares with "now" stay plausible) and moves with ``monotonic()``.
    """

    def __init__(self, monotonic: float = 10_000.0, wall: float | None = None) -> None:
        self._now = monotonic
        self._wall_offset = (time.time() if wall is None else wall) - monotonic
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def monotonic(self) -> float:
        return self._now

    def time(self) -> float:
        return self._now + self._wall_offset

    def advance(self, seconds: float) -> None:
        """Move time forward; every sleep that is now over returns (when the loop next runs)."""
        if seconds < 0:
            raise ValueError(f"time cannot go back ({seconds} s)")
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, waiter = heapq.heappop(self._sleepers)
            if not waiter.done():
                waiter.set_result(None)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        waiter = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), waiter))
        await waiter

    @property
    def sleepers(self) -> int:
        """How many sleeps are waiting for time to move (lets a test wait until one is)."""
        return sum(1 for _, _, waiter in self._sleepers if not waiter.done())
