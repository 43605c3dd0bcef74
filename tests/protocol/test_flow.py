"""Tests of tether.protocol.flow: flow control by client position and replay planning."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tether.errors import InvalidParameter
from tether.protocol import flow
from tether.protocol.flow import (
    MAX_READ,
    MIN_READ,
    RESUME_ROOM,
    Replay,
    exit_drain_budget,
    max_read_for,
    may_resume,
    next_output,
    plan_replay,
    read_room,
    slowest_position,
)
from tether.protocol.modes import ModeTracker
from tether.protocol.ring import RingBuffer

KiB, MiB = 1024, 1024 * 1024


@dataclass
class Reader:
    position: int
    start: int = 0
    received: bytearray = field(default_factory=bytearray)


def stream(start: int, end: int) -> bytes:
    """Bytes ``start``..``end`` of a recognisable test stream (each position has its byte)."""
    return bytes(position % 251 for position in range(start, end))


def filled(capacity: int, total: int) -> tuple[RingBuffer, ModeTracker]:
    ring, tracker = RingBuffer(capacity), ModeTracker()
    ring.append(stream(0, total), tracker.feed)
    return ring, tracker


# ----------------------------------------------------------------------------- read sizes
@pytest.mark.parametrize(
    ("capacity", "expected"),
    [
        (1, 1),
        (100, 100),
        (1023, 1023),
        (1024, 1024),
        (2048, 1024),
        (4096, 2048),
        (64 * KiB, 32 * KiB),
        (MiB, 256 * KiB),
        (100 * MiB, 256 * KiB),
    ],
)
def test_max_read_is_half_the_ring_within_bounds(capacity: int, expected: int) -> None:
    assert max_read_for(capacity) == expected


@given(st.integers(1, 10 * MiB))
def test_max_read_bounds(capacity: int) -> None:
    read = max_read_for(capacity)
    assert 1 <= read <= min(capacity, MAX_READ)
    assert read >= min(capacity, MIN_READ)


def test_exit_drain_budget_is_twice_the_ring_and_some() -> None:
    assert exit_drain_budget(MiB) == 2 * MiB + 64 * KiB
    assert exit_drain_budget(1) == 2 + 64 * KiB


# ----------------------------------------------------------------------------- read room
def test_slowest_position() -> None:
    assert slowest_position([]) is None
    assert slowest_position([Reader(7)]) == 7
    assert slowest_position([Reader(9), Reader(3), Reader(5)]) == 3


@given(st.lists(st.integers(0, 10**12), min_size=1, max_size=8))
def test_slowest_position_is_the_minimum(positions: list[int]) -> None:
    assert slowest_position([Reader(p) for p in positions]) == min(positions)


def test_without_readers_the_program_is_read_freely() -> None:
    assert read_room(10 * MiB, MiB, 256 * KiB, []) == 256 * KiB


@pytest.mark.parametrize(
    ("head", "positions", "expected"),
    [
        (0, [0], 1000),  # caught up: a full read
        (500, [500, 200], 1000),  # lag 300: room 1700, max_read limits
        (9_000, [9_000, 8_000], 1000),  # lag 1000: room exactly max_read
        (5_000, [3_800], 800),  # lag 1200: 800 more fit
        (5_000, [3_001], 1),  # one byte short of a full ring
        (5_000, [3_000], 0),  # the slowest client has a full ring to take: pause
    ],
)
def test_read_room_is_what_the_slowest_client_leaves(
    head: int, positions: list[int], expected: int
) -> None:
    capacity, max_read = 2000, 1000
    room = read_room(head, capacity, max_read, [Reader(p) for p in positions])
    slowest = min(positions)
    assert room == min(max_read, capacity - (head - slowest)) == expected


@given(
    capacity=st.integers(1, 4 * MiB),
    lags=st.lists(st.integers(0, 4 * MiB), min_size=1, max_size=5),
    head=st.integers(0, 10**12),
)
def test_reading_the_room_never_trims_below_a_client(
    capacity: int, lags: list[int], head: int
) -> None:
    lags = [min(lag, capacity, head) for lag in lags]  # flow control keeps lag <= capacity
    readers = [Reader(head - lag) for lag in lags]
    room = read_room(head, capacity, max_read_for(capacity), readers)
    assert room <= max_read_for(capacity)
    if room > 0:
        ring_tail_after_read = max(0, head + room - capacity)
        assert ring_tail_after_read <= min(r.position for r in readers)
    else:
        assert room == 0 and max(lags) == capacity, "pausing only when a client is a ring behind"


@pytest.mark.parametrize(
    ("room", "max_read", "expected"),
    [
        (0, 256 * KiB, False),
        (RESUME_ROOM - 1, 256 * KiB, False),
        (RESUME_ROOM, 256 * KiB, True),
        (1024, 1024, True),  # a small ring resumes when a whole (small) read fits
        (1023, 1024, False),
        (-5, 1024, False),
    ],
)
def test_may_resume(room: int, max_read: int, expected: bool) -> None:
    assert may_resume(room, max_read) is expected


@given(st.integers(1, 4 * MiB), st.integers(0, 10**12))
def test_reading_resumes_once_every_client_caught_up(capacity: int, head: int) -> None:
    """Liveness: flow control never stays paused when nobody lags, whatever the ring size."""
    room = read_room(head, capacity, max_read_for(capacity), [Reader(head), Reader(head)])
    assert may_resume(room, max_read_for(capacity))


# ----------------------------------------------------------------------------- next output
def test_next_output_is_empty_when_caught_up() -> None:
    ring, _ = filled(100, 50)
    assert next_output(ring, 50) == b""


def test_next_output_respects_the_limit_and_the_default() -> None:
    ring, _ = filled(MiB, 300 * KiB)
    assert next_output(ring, 10, 5) == stream(10, 15)
    assert next_output(ring, 0) == stream(0, MAX_READ)
    assert next_output(ring, 290 * KiB) == stream(290 * KiB, 300 * KiB)


def test_next_output_below_the_tail_is_a_bug() -> None:
    ring, _ = filled(100, 500)
    with pytest.raises(ValueError):
        next_output(ring, 399)
    assert next_output(ring, 400, 3) == stream(400, 403)


# ----------------------------------------------------------------------------- replay
def test_a_created_session_replays_from_the_head_whatever_the_offset() -> None:
    ring, tracker = filled(100, 500)
    assert plan_replay(ring, tracker, None, True) == Replay(500, 500)
    assert plan_replay(ring, tracker, 10**9, True) == Replay(500, 500)


@pytest.mark.parametrize("offset", [400, 450, 500])
def test_a_buffered_offset_resumes_there_without_gap_or_restore(offset: int) -> None:
    ring, tracker = filled(100, 500)
    assert plan_replay(ring, tracker, offset, False) == Replay(offset, 500, 0, "", False)


@pytest.mark.parametrize("offset", [501, 10**9])
def test_an_offset_beyond_the_head_is_refused(offset: int) -> None:
    ring, tracker = filled(100, 500)
    with pytest.raises(InvalidParameter) as caught:
        plan_replay(ring, tracker, offset, False)
    assert caught.value.parameter == "offset" and caught.value.code == 4000


def test_a_negative_offset_is_refused() -> None:
    ring, tracker = filled(100, 50)
    with pytest.raises(InvalidParameter):
        plan_replay(ring, tracker, -1, False)


def test_no_offset_and_nothing_dropped_replays_everything() -> None:
    ring, tracker = filled(100, 60)
    assert plan_replay(ring, tracker, None, False) == Replay(0, 60)


def test_no_offset_after_drops_replays_from_the_tail_without_gap() -> None:
    ring, tracker = filled(100, 500)
    assert plan_replay(ring, tracker, None, False) == Replay(400, 500, 0, "", False)


def test_a_dropped_offset_reports_the_gap() -> None:
    ring, tracker = filled(100, 500)
    assert plan_replay(ring, tracker, 123, False) == Replay(400, 500, 277, "", False)


def test_after_a_gap_the_modes_come_back_and_alt_screen_asks_for_a_nudge() -> None:
    ring, tracker = RingBuffer(64), ModeTracker()
    ring.append(b"\x1b[?1049h\x1b[?2004h" + b"x" * 200, tracker.feed)
    replay = plan_replay(ring, tracker, 5, False)
    assert replay.replay_from == ring.tail == 200 + 16 - 64
    assert replay.gap == replay.replay_from - 5
    assert replay.restore == "\x1b[?1049h\x1b[?2004h"
    assert replay.nudge is True


def test_a_buffered_offset_gets_no_restore_even_in_alt_screen() -> None:
    ring, tracker = RingBuffer(64), ModeTracker()
    ring.append(b"\x1b[?1049h" + b"x" * 200, tracker.feed)
    assert plan_replay(ring, tracker, ring.tail, False) == Replay(ring.tail, ring.head)


@given(
    capacity=st.integers(1, 300),
    total=st.integers(0, 1000),
    offset=st.one_of(st.none(), st.integers(0, 1000)),
    created=st.booleans(),
)
def test_replay_plan_invariants(
    capacity: int, total: int, offset: int | None, created: bool
) -> None:
    ring, tracker = filled(capacity, total)
    if offset is not None and offset > total and not created:
        with pytest.raises(InvalidParameter):
            plan_replay(ring, tracker, offset, created)
        return
    replay = plan_replay(ring, tracker, offset, created)
    assert replay.head == ring.head
    assert ring.tail <= replay.replay_from <= ring.head
    assert replay.gap >= 0
    if created or offset is None:
        assert replay.gap == 0
    elif offset >= ring.tail:
        assert (replay.replay_from, replay.gap, replay.restore) == (offset, 0, "")
    else:
        assert replay.gap == replay.replay_from - offset > 0
    assert replay.restore == "" and replay.nudge is False  # this stream sets no mode


# ----------------------------------------------------------------------------- the model
class FlowMachine(RuleBasedStateMachine):
    """A program, a ring and clients driven by the flow-control rules, as a session drives them.

    Checks: an attached client never sees a gap or a wrong byte (the ring is never trimmed below
    it), memory stays within the ring, and reading paused by flow control always resumes once the
    clients take their bytes.
    """

    def __init__(self) -> None:
        super().__init__()
        self.ring = RingBuffer(1)
        self.tracker = ModeTracker()
        self.max_read = 1
        self.written = 0  # bytes the program produced (waiting in the PTY beyond the head)
        self.clients: list[Reader] = []
        self.reading = True

    @initialize(capacity=st.integers(1, 400))
    def make(self, capacity: int) -> None:
        self.ring = RingBuffer(capacity)
        self.max_read = max_read_for(capacity)

    @rule(count=st.integers(0, 700))
    def program_writes(self, count: int) -> None:
        self.written += count

    @rule()
    def readable(self) -> None:
        if not self.reading:
            return
        room = read_room(self.ring.head, self.ring.capacity, self.max_read, self.clients)
        if room <= 0:
            self.reading = False
            return
        take = min(room, self.written - self.ring.head)
        self.ring.append(stream(self.ring.head, self.ring.head + take), self.tracker.feed)

    @rule(offset=st.one_of(st.none(), st.integers(0, 10**6)), created=st.booleans())
    def attach(self, offset: int | None, created: bool) -> None:
        if offset is not None:
            offset = min(offset, self.ring.head)
        replay = plan_replay(self.ring, self.tracker, offset, created)
        self.clients.append(Reader(replay.replay_from, replay.replay_from))

    @precondition(lambda self: self.clients)
    @rule(index=st.integers(0, 10), limit=st.integers(1, 600))
    def client_takes(self, index: int, limit: int) -> None:
        client = self.clients[index % len(self.clients)]
        before = client.position
        chunk = next_output(self.ring, client.position, limit)
        assert chunk == stream(before, before + len(chunk))
        assert len(chunk) == min(limit, self.ring.head - before)
        client.received += chunk
        client.position += len(chunk)
        self.progressed()

    @precondition(lambda self: self.clients)
    @rule(index=st.integers(0, 10))
    def detach(self, index: int) -> None:
        self.clients.pop(index % len(self.clients))
        self.progressed()

    def progressed(self) -> None:
        room = read_room(self.ring.head, self.ring.capacity, self.max_read, self.clients)
        if not self.reading and may_resume(room, self.max_read):
            self.reading = True

    @invariant()
    def clients_are_never_passed_by_the_tail(self) -> None:
        for client in self.clients:
            assert self.ring.tail <= client.position <= self.ring.head
            assert bytes(client.received) == stream(client.start, client.position)

    @invariant()
    def lag_is_bounded_by_the_ring(self) -> None:
        if self.clients:
            lag = self.ring.head - min(c.position for c in self.clients)
            assert lag <= self.ring.capacity
        assert self.ring.memory_bytes <= self.ring.capacity

    @invariant()
    def paused_only_while_someone_lags(self) -> None:
        if not self.reading:
            assert self.clients, "without clients the program is never paused"
            lag = self.ring.head - min(c.position for c in self.clients)
            assert lag > 0


TestFlowMachine = FlowMachine.TestCase
TestFlowMachine.settings = settings(max_examples=200, stateful_step_count=50, deadline=None)


def test_module_exports_the_frame_size() -> None:
    assert 256 * KiB == flow.MAX_READ
