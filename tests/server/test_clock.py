"""tether.server.clock: the system clock, and a fake clock whose sleeps end when time moves."""

from __future__ import annotations

import asyncio
import time

import pytest

from tether.server.clock import Clock, FakeClock, SystemClock


def test_fake_time_moves_only_when_advanced_and_both_clocks_together() -> None:
    clock = FakeClock(monotonic=100.0, wall=1_800_000_000.0)
    assert (clock.monotonic(), clock.time()) == (100.0, 1_800_000_000.0)
    clock.advance(2.5)
    assert (clock.monotonic(), clock.time()) == (102.5, 1_800_000_002.5)
    with pytest.raises(ValueError):
        clock.advance(-1)
    assert clock.monotonic() == 102.5


def test_fake_wall_time_starts_at_the_real_time_by_default() -> None:
    assert abs(FakeClock().time() - time.time()) < 5


async def test_a_fake_sleep_ends_when_its_deadline_is_passed_and_not_before() -> None:
    clock = FakeClock()
    ended: list[str] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        ended.append(name)

    tasks = [asyncio.create_task(sleeper(n, s)) for n, s in (("long", 10), ("short", 5))]
    await asyncio.sleep(0)
    assert clock.sleepers == 2
    clock.advance(4.999)
    await asyncio.sleep(0)
    assert ended == [] and clock.sleepers == 2
    clock.advance(0.001)
    await tasks[1]
    assert ended == ["short"] and clock.sleepers == 1
    clock.advance(100)
    await tasks[0]
    assert ended == ["short", "long"] and clock.sleepers == 0


async def test_a_cancelled_fake_sleep_is_no_longer_counted_nor_woken() -> None:
    clock = FakeClock()
    task = asyncio.create_task(clock.sleep(1))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert clock.sleepers == 0
    clock.advance(2)  # must not try to wake the cancelled sleep


async def test_a_fake_sleep_of_nothing_returns_at_once() -> None:
    clock = FakeClock()
    await asyncio.wait_for(clock.sleep(0), 1)
    assert clock.sleepers == 0


async def test_the_system_clock_is_the_process_clock() -> None:
    clock: Clock = SystemClock()
    before = clock.monotonic()
    await clock.sleep(0.01)
    assert clock.monotonic() >= before + 0.01
    assert abs(clock.time() - time.time()) < 1
