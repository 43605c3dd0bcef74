"""The crash-survival state memfd (server/survival.py): what a new worker reads back after the
old one was killed, including a kill in the middle of a slot write."""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import cast

from tether.protocol.ring import RingBuffer
from tether.server import survival
from tether.server.session import Session, SessionInfo


@dataclass
class _Shell:
    """The parts of a Session the state follows: its facts, its ring and its input total."""

    info: SessionInfo = field(
        default_factory=lambda: SessionInfo(
            "s1:default", "s1", "default", "owner", 1.0, 80, 24, 4242
        )
    )
    ring: RingBuffer = field(default_factory=lambda: RingBuffer(32))
    input_bytes: int = 0

    def output(self, state: survival.SessionState, data: bytes) -> None:
        state.output_appended(cast(Session, self), data)
        self.ring.append(data)

    def typed(self, state: survival.SessionState, client: str, count: int) -> None:
        self.info.input_counts[client] = self.info.input_counts.get(client, 0) + count
        self.input_bytes += count
        state.input_counted(cast(Session, self))


def _state(shell: _Shell) -> survival.SessionState:
    return survival.SessionState(cast(Session, shell), shell.ring.capacity)


def test_counts_head_and_ring_bytes_read_back_after_wrapping() -> None:
    shell = _Shell()
    state = _state(shell)
    stream = b"".join(f"line-{i}\n".encode() for i in range(20))
    for start in range(0, len(stream), 11):
        shell.output(state, stream[start : start + 11])
    shell.output(state, b"X" * 40)  # one read larger than the ring
    shell.typed(state, "client-a", 5)
    shell.typed(state, "client-b", 2)
    found = survival.read_state(state.state_fd, 32)
    assert found is not None
    facts, head, input_bytes, held = found
    assert head == len(stream) + 40 == shell.ring.head
    assert held == shell.ring.held() == b"X" * 32
    assert input_bytes == 7
    assert OrderedDict(facts["input_counts"]) == OrderedDict([("client-a", 5), ("client-b", 2)])
    assert (facts["key"], facts["pid"]) == ("s1:default", 4242)
    state.close()


def test_a_slot_torn_by_a_kill_leaves_the_previous_one() -> None:
    shell = _Shell()
    state = _state(shell)
    shell.output(state, b"hello ")
    shell.typed(state, "client-a", 3)
    before = survival.read_state(state.state_fd, 32)
    shell.output(state, b"world")
    torn_slot = (state._sequence % 2) * survival.SLOT_SIZE
    os.pwrite(state.state_fd, b"\xff" * 40, torn_slot + 20)  # the kill hit mid-write
    after = survival.read_state(state.state_fd, 32)
    assert after is not None and before is not None
    assert after[:3] == before[:3]  # the head and counts of the last complete slot
    assert after[3] == b"hello "  # ...and the ring bytes up to that head
    state.close()


def test_a_state_never_written_is_no_session() -> None:
    fd = os.memfd_create("empty")
    os.ftruncate(fd, survival.RING_BASE + 32)
    assert survival.read_state(fd, 32) is None
    os.close(fd)


def test_a_state_taken_over_by_a_new_worker_goes_on_from_its_newest_slot() -> None:
    shell = _Shell()
    state = _state(shell)
    for _ in range(5):
        shell.typed(state, "client-a", 1)
    again = survival.SessionState(cast(Session, shell), 32, state.state_fd)  # after a crash
    shell.typed(again, "client-a", 10)
    found = survival.read_state(state.state_fd, 32)
    assert found is not None and found[0]["input_counts"] == [["client-a", 15]]
    state.close()
