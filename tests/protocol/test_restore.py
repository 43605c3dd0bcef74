"""Tests of tether.protocol.restore: where a replay after a gap starts, and what it restores."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tether.protocol.modes import ModeTracker
from tether.protocol.restore import SAFE_START_STEP, Restore, plan_restore, skip_to_safe_start
from tether.protocol.ring import RingBuffer


def held(stream: bytes, capacity: int, chunk: int = 7) -> tuple[RingBuffer, ModeTracker]:
    """A ring of ``capacity`` fed ``stream`` in chunks, and the tracker fed what it dropped."""
    ring, tracker = RingBuffer(capacity), ModeTracker()
    for start in range(0, len(stream), chunk):
        ring.append(stream[start : start + chunk], tracker.feed)
    return ring, tracker


def test_nothing_dropped_nothing_to_restore() -> None:
    ring, tracker = held(b"plain text\r\n", 100)
    assert plan_restore(ring, tracker) == Restore(0, "", False)


def test_modes_set_by_dropped_bytes_are_restored() -> None:
    stream = b"\x1b[?2004h\x1b[?1h\x1b[?25l\x1b[?1000h\x1b[5;20r" + b"x" * 100
    ring, tracker = held(stream, 50)
    restore = plan_restore(ring, tracker)
    assert restore.position == ring.tail == len(stream) - 50
    assert restore.sequence == "\x1b[5;20r\x1b[?1h\x1b[?2004h\x1b[?1000h\x1b[?25l"
    assert restore.alt_screen is False


def test_the_tracker_given_is_not_changed() -> None:
    ring, tracker = held(b"\x1b[?1049h" + b"x" * 20 + "é".encode() * 40, 41)
    before = (tracker.modes, tracker.is_mid_sequence)
    plan_restore(ring, tracker)
    plan_restore(ring, tracker)
    assert (tracker.modes, tracker.is_mid_sequence) == before


@pytest.mark.parametrize(
    ("stream", "capacity", "start"),
    [
        (b"ab\x1b[31mcd", 6, b"cd"),  # the tail cuts "ESC [ 3 1 m": start after the "m"
        (b"ab\x1b[?1049hcd", 4, b"cd"),  # cut inside a mode sequence
        ("a€b".encode(), 3, b"b"),  # cut inside a 3-byte character: skip its continuation bytes
        ("a😀b".encode(), 2, b"b"),
        (b"x\x1b]0;some title\x07after", 10, b"after"),  # inside an OSC ended by BEL
        (b"x\x1b]0;some title\x1b\\after", 12, b"after"),  # inside an OSC ended by ST
        (b"x\x1bP1$rdata\x1b\\after", 9, b"after"),  # inside a DCS
        (b"x\x1b]0;title\x1b\\after", 6, b"after"),  # the tail cuts the ST itself
    ],
)
def test_the_replay_starts_outside_any_sequence(stream: bytes, capacity: int, start: bytes) -> None:
    ring, tracker = held(stream, capacity, chunk=1)
    assert ring.tail < stream.index(start), "the tail is inside the sequence"
    restore = plan_restore(ring, tracker)
    assert restore.position == stream.index(start)
    reference = ModeTracker()
    reference.feed(stream[: restore.position])
    assert not reference.is_mid_sequence


def test_a_byte_that_aborts_the_cut_sequence_starts_the_replay() -> None:
    # ESC then a byte that can follow no ESC: the sequence is over, nothing to skip.
    ring, tracker = held(b"\x1b\xffabc", 4, chunk=1)
    assert tracker.is_mid_sequence
    assert plan_restore(ring, tracker).position == ring.tail == 1


def test_the_mode_set_by_a_cut_sequence_is_restored() -> None:
    # The tail cuts "ESC [ ? 1049 h": the part before the tail went to the tracker, the rest is
    # skipped and fed to the copy, so the alternate screen is both restored and seen at the head.
    stream = b"text\x1b[?1049hscreen"
    ring, tracker = held(stream, len(stream) - 6, chunk=1)
    restore = plan_restore(ring, tracker)
    assert restore.position == stream.index(b"screen")
    assert restore.sequence == "\x1b[?1049h" and restore.alt_screen is True


def test_a_sequence_that_outlasts_the_ring_starts_the_replay_at_the_head() -> None:
    ring, tracker = held(b"\x1b]0;" + b"t" * 500, 100)
    assert plan_restore(ring, tracker).position == ring.head


def test_a_string_longer_than_one_step_is_skipped_in_several_steps() -> None:
    stream = b"\x1b]0;" + b"t" * (3 * SAFE_START_STEP) + b"\x07after"
    ring, tracker = held(stream, 3 * SAFE_START_STEP + 6, chunk=SAFE_START_STEP)
    assert ring.tail == 4
    copy = tracker.copy()
    assert skip_to_safe_start(ring, copy) == stream.index(b"after")
    assert not copy.is_mid_sequence


def test_alt_screen_is_seen_at_the_head_not_at_the_tail() -> None:
    left = b"\x1b[?1049h" + b"x" * 100 + b"\x1b[?1049l" + b"y" * 10
    ring, tracker = held(left, 30)
    restore = plan_restore(ring, tracker)
    assert restore.sequence == "\x1b[?1049h", "the tail is in the alternate screen"
    assert restore.alt_screen is False, "but the program left it: no redraw nudge"
    entered = b"y" * 100 + b"\x1b[?1049h" + b"x" * 10
    ring, tracker = held(entered, 30)
    assert plan_restore(ring, tracker) == Restore(ring.tail, "", True)


FRAGMENTS = [
    b"a",
    b"hello ",
    b"\r\n",
    "é".encode(),
    "€".encode(),
    "😀".encode(),
    b"\xff",
    b"\x1b[?1049h",
    b"\x1b[?1049l",
    b"\x1b[?2004h",
    b"\x1b[?25l",
    b"\x1b[?1000h\x1b[?1006h",
    b"\x1b[3;20r",
    b"\x1b[r",
    b"\x1b[1;31m",
    b"\x1b]0;title\x07",
    b"\x1b]2;t\x1b\\",
    b"\x1bP1$r\x1b\\",
    b"\x1b=",
    b"\x1bc",
    b"\x1b[!p",
    b"\x1b(B",
    b"\x1b",
    b"\x18",
]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fragments=st.lists(st.sampled_from(FRAGMENTS), max_size=80),
    capacity=st.integers(1, 120),
    chunk=st.integers(1, 40),
)
def test_restore_matches_a_tracker_that_saw_the_whole_stream(
    fragments: list[bytes], capacity: int, chunk: int
) -> None:
    stream = b"".join(fragments)
    ring, tracker = held(stream, capacity, chunk)
    restore = plan_restore(ring, tracker)
    assert ring.tail <= restore.position <= ring.head
    before = ModeTracker()
    before.feed(stream[: restore.position])
    assert restore.sequence == before.modes.restore_sequence()
    # A safe start: what follows needs no skipping (it may abort an unfinished sequence).
    assert restore.position == ring.head or before.safe_start(stream[restore.position :]) == 0
    whole = ModeTracker()
    whole.feed(stream)
    assert restore.alt_screen == whole.modes.alt_screen
    # The earliest safe start: every position skipped was inside a sequence or a character.
    at_tail = ModeTracker()
    at_tail.feed(stream[: ring.tail])
    for position in range(ring.tail, restore.position):
        probe = at_tail.copy()
        probe.feed(stream[ring.tail : position])
        assert probe.safe_start(stream[position:]) > 0, position
