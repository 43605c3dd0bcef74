"""Flow control by client position, and where a client's replay starts (docs/protocol.md, 3 and 5).

Pure arithmetic over a session's :class:`~tether.protocol.ring.RingBuffer`; the session does the
reading and writing. The rules:

* A client's ``position`` is the next stream byte it must receive. The ring is never trimmed
  below the position of an attached client, so an attached client never sees a gap: the program
  is read only while the slowest attached client has room in the ring (:func:`read_room`). A
  program that prints without end is slowed instead of buffered without bound.
* With no client attached the program is read freely and the ring drops its oldest bytes.
* Reading paused by flow control resumes once a useful amount of room is free again
  (:func:`may_resume`), not at every byte a client takes: that would mean one tiny read per frame.
* A client that attaches gets its replay start, gap and screen restore from :func:`plan_replay`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from tether.errors import InvalidParameter
from tether.protocol.modes import ModeTracker
from tether.protocol.restore import plan_restore
from tether.protocol.ring import RingBuffer

MAX_READ = 256 * 1024  # most bytes one drain of the PTY takes, and most bytes of one frame
MIN_READ = 1024  # a tiny ring still reads in useful amounts
RESUME_ROOM = 16 * 1024  # paused reading resumes when this much room is free (or max_read)
EXIT_DRAIN_SLACK = 64 * 1024  # read after the shell exited: beyond twice the ring, this much


class Reader(Protocol):
    """Anything with a stream position: an attached client."""

    @property
    def position(self) -> int: ...


def max_read_for(capacity: int) -> int:
    """Most bytes one drain of the PTY takes for a ring of ``capacity``: half of it, within
    ``[MIN_READ, MAX_READ]``, and never more than the ring (so that a caught-up client always
    leaves enough room to resume reading)."""
    return min(capacity, max(MIN_READ, min(MAX_READ, capacity // 2)))


def slowest_position(readers: Sequence[Reader]) -> int | None:
    """The lowest position among ``readers``; None when there are none."""
    if not readers:
        return None
    lowest = readers[0].position
    for reader in readers:
        if reader.position < lowest:
            lowest = reader.position
    return lowest


def read_room(head: int, capacity: int, max_read: int, readers: Sequence[Reader]) -> int:
    """How many bytes may be read from the program now; 0 or less means: pause reading.

    ``head`` is the ring's head, ``readers`` the attached clients. With none, ``max_read``.
    """
    slowest = slowest_position(readers)
    if slowest is None:
        return max_read
    return min(max_read, capacity - (head - slowest))


def may_resume(room: int, max_read: int) -> bool:
    """True when reading paused by flow control should resume with ``room`` free."""
    return room >= min(max_read, RESUME_ROOM)


def exit_drain_budget(capacity: int) -> int:
    """Most bytes read after the shell exited (what it printed last is still in the PTY).

    Bounded because a job that outlived the shell may keep writing to the terminal.
    """
    return 2 * capacity + EXIT_DRAIN_SLACK


def next_output(ring: RingBuffer, position: int, limit: int = MAX_READ) -> bytes:
    """The next bytes (at most ``limit``) a client at ``position`` must receive; ``b""`` when it
    is caught up. ``position`` must not be below the ring's tail (flow control sees to that)."""
    if position >= ring.head:
        return b""
    return ring.read(position, limit)


@dataclass(frozen=True, slots=True)
class Replay:
    """What a client attaching now receives: the hello's ``replay_from``, ``head``, ``gap`` and
    ``restore``, and whether to nudge the program to redraw once the replay is sent."""

    replay_from: int
    head: int
    gap: int = 0
    restore: str = ""
    nudge: bool = False


def plan_replay(
    ring: RingBuffer, modes_at_tail: ModeTracker, offset: int | None, created: bool
) -> Replay:
    """Where the replay of a client attaching with ``offset`` starts (section 3).

    * a new session (``created``): from the head, whatever the offset;
    * an offset still buffered: from there, no gap, no restore;
    * no offset and nothing ever dropped: from 0;
    * else (bytes the client needs are gone): from the first safe position after the tail, with
      the sequences restoring the modes the dropped bytes set (``modes_at_tail`` is the tracker
      fed every dropped byte), and the gap when an offset was given.

    Raises :class:`~tether.errors.InvalidParameter` for an offset beyond the head or negative.
    """
    head = ring.head
    if created:
        return Replay(head, head)
    if offset is not None:
        if offset > head:
            raise InvalidParameter("offset", f"beyond the end of the stream ({head})")
        if offset < 0:
            raise InvalidParameter("offset", "must not be negative")
        if offset >= ring.tail:
            return Replay(offset, head)
    if ring.tail == 0:
        return Replay(0, head)
    restore = plan_restore(ring, modes_at_tail)
    gap = restore.position - offset if offset is not None else 0
    return Replay(restore.position, head, gap, restore.sequence, restore.alt_screen)
