"""The hand-over format (server/handover.py) and the ring and mode-tracker snapshots it carries:
round trips, and clean refusals of what the reader cannot trust."""

from __future__ import annotations

import os
import struct

import pytest

from tether.errors import HandoverError
from tether.protocol.modes import ModeTracker
from tether.protocol.ring import RingBuffer
from tether.server import handover
from tether.server.handover import Handover, SessionHandover


def session(key: str, held: bytes, head: int) -> SessionHandover:
    return SessionHandover(
        info={"key": key, "input_counts": [["client-a", 3], ["client-b", 9]]},
        fd=7,
        head=head,
        held=held,
        tail_modes=ModeTracker().to_state(),
        detached_for=1.5,
        input_bytes=12,
        state_fd=9,
        store_name="s.default",
    )


def test_a_hand_over_reads_back_equal() -> None:
    sent = Handover(
        generation=4,
        listen_fds=(5, 6),
        sessions=(session("a:default", b"\x00\xffbinary", 900), session("b:default", b"", 0)),
        tombstones=({"key": "c:default", "owner": "o", "code": 4013, "reason": "r",
                     "expires_in": 3.0},),
    )  # fmt: skip
    fd = handover.write(sent)
    assert os.get_inheritable(fd)  # the exec'd process must inherit it
    assert handover.read(fd) == sent


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"nonsense", "not a tether hand-over"),
        (handover.MAGIC + struct.pack(">IQ", 99, 2) + b"{}", "version 99"),
        (handover.MAGIC + struct.pack(">IQ", 1, 2) + b"{}", "malformed"),
        (handover.MAGIC + struct.pack(">IQ", 1, 5) + b"[1,2", "malformed"),
    ],
)
def test_what_cannot_be_trusted_is_refused_by_name(data: bytes, message: str) -> None:
    fd = os.memfd_create("test")
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    with pytest.raises(HandoverError, match=message):
        handover.read(fd)


def test_ring_bytes_cut_short_are_refused() -> None:
    fd = handover.write(Handover(1, (), (session("a:default", b"0123456789", 10),)))
    data = os.read(fd, 1 << 20)
    os.close(fd)
    cut = os.memfd_create("test")
    os.write(cut, data[:-3])
    os.lseek(cut, 0, os.SEEK_SET)
    with pytest.raises(HandoverError, match="cut short"):
        handover.read(cut)


def test_the_inherited_fd_is_taken_from_the_environment_once() -> None:
    environ = {handover.ENV_FD: "12"}
    assert handover.inherited_fd(environ) == 12
    assert handover.inherited_fd(environ) is None
    with pytest.raises(HandoverError):
        handover.inherited_fd({handover.ENV_FD: "twelve"})


@pytest.mark.parametrize("written", [0, 5, 64, 100, 1000])
def test_a_restored_ring_has_the_same_positions_and_bytes(written: int) -> None:
    ring = RingBuffer(64)
    stream = bytes(i % 251 for i in range(written))
    for start in range(0, written, 7):
        ring.append(stream[start : start + 7])
    twin = RingBuffer.restored(64, ring.head, ring.held())
    assert (twin.tail, twin.head, twin.held()) == (ring.tail, ring.head, ring.held())
    smaller = RingBuffer.restored(16, ring.head, ring.held())
    assert smaller.head == ring.head and smaller.held() == ring.held()[-16:]


def test_a_ring_cannot_hold_more_bytes_than_its_head() -> None:
    with pytest.raises(ValueError):
        RingBuffer.restored(64, 3, b"four")


@pytest.mark.parametrize(
    "stream",
    [
        b"",
        b"\x1b[?1049h\x1b[?1;2004h\x1b[5;20r\x1b[?1000;1006h\x1b=",
        b"\x1b[?25l plain \xe2\x82",  # ends inside a UTF-8 character
        b"\x1b]0;title",  # ends inside an OSC string
        b"\x1bP data",  # ends inside a DCS string
        b"\x1b[?104",  # ends inside a CSI
    ],
)
def test_a_mode_tracker_snapshot_continues_like_the_original(stream: bytes) -> None:
    tracker = ModeTracker()
    tracker.feed(stream)
    twin = ModeTracker.from_state(tracker.to_state())
    assert twin.modes == tracker.modes
    assert twin.is_mid_sequence == tracker.is_mid_sequence
    for follower in (b"9h\x07\x1b\\\x1b[?47l\xac", b"text"):
        tracker.feed(follower)
        twin.feed(follower)
        assert twin.modes == tracker.modes
        assert twin.is_mid_sequence == tracker.is_mid_sequence
