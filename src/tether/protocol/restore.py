"""Screen restore after a gap (docs/protocol.md, section 3, "Screen restore").

When the bytes a client needs were dropped from the ring, its replay starts at the ring's tail —
but not inside an escape sequence or a UTF-8 character, and with the modes the dropped bytes set
(alternate screen, scroll region, mouse tracking, …) restored first. The session feeds a
:class:`~tether.protocol.modes.ModeTracker` every byte the ring drops; from that tracker and the
ring, :func:`plan_restore` computes where the replay starts and what to send before it. Pure: the
tracker given is copied, never changed.
"""

from __future__ import annotations

from dataclasses import dataclass

from tether.protocol.modes import ModeTracker
from tether.protocol.ring import RingBuffer

SAFE_START_STEP = 4096  # bytes looked at per step when skipping an unfinished sequence


@dataclass(frozen=True, slots=True)
class Restore:
    """``position``: where the replay starts (``tail <= position <= head``, outside any escape
    sequence and UTF-8 character unless the held bytes never leave it); ``sequence``: the escape
    sequences that restore the modes in force at ``position``; ``alt_screen``: the program is in
    the alternate screen at the head, so it should be nudged to redraw after the replay."""

    position: int
    sequence: str
    alt_screen: bool


def plan_restore(ring: RingBuffer, modes_at_tail: ModeTracker) -> Restore:
    """Plan the replay of the bytes held in ``ring`` for a client that lost what came before.

    ``modes_at_tail`` has been fed every byte dropped from the ring (the stream up to its tail).
    """
    tracker = modes_at_tail.copy()
    position = skip_to_safe_start(ring, tracker)
    sequence = tracker.modes.restore_sequence()
    tracker.feed(ring.read(position, ring.head - position))
    return Restore(position, sequence, tracker.modes.alt_screen)


def skip_to_safe_start(ring: RingBuffer, tracker: ModeTracker) -> int:
    """The first position from the ring's tail where a replay may start; ``tracker`` (at the
    tail) is fed the bytes skipped. The head when the held bytes never leave the sequence."""
    position = ring.tail
    while tracker.is_mid_sequence and position < ring.head:
        following = ring.read(position, SAFE_START_STEP)
        skip = tracker.safe_start(following)
        tracker.feed(following[:skip])
        position += skip
        if skip < len(following):
            break
    return position
