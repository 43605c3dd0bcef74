"""The crash-survival state memfd (server/survival.py): what a new worker reads back after the
old one was killed, including a kill in the middle of a slot write, and the supervisor's exit
reports of the shells it reaps."""

from __future__ import annotations

import os
import socket
import subprocess
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import cast

from tether.protocol.modes import ModeTracker
from tether.protocol.ring import RingBuffer
from tether.server import survival
from tether.server.session import Session, SessionInfo
from tether.server.supervisor import EXIT_REPORT


@dataclass
class _Shell:
    """The parts of a Session the state follows: its facts, its ring and its input total."""

    info: SessionInfo = field(
        default_factory=lambda: SessionInfo(
            "s1:default", "s1", "default", "owner", 1.0, 80, 24, 4242
        )
    )
    ring: RingBuffer = field(default_factory=lambda: RingBuffer(32))
    tail_modes: ModeTracker = field(default_factory=ModeTracker)
    input_bytes: int = 0

    def output(self, state: survival.SessionState, data: bytes) -> None:
        self.ring.append(data, self.tail_modes.feed)  # as the session does, then the observer
        state.output_appended(cast(Session, self), data)

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


def test_counts_written_per_keystroke_keep_the_other_facts_and_the_other_way_round() -> None:
    shell = _Shell()
    state = _state(shell)
    shell.typed(state, "client-a", 1)
    shell.info.name = "build"  # renamed: the facts are encoded again, the counts kept
    state.facts_changed(cast(Session, shell))
    shell.typed(state, "client-b", 4)
    shell.typed(state, "client-a", 2)  # the most recent client last, as the session keeps them
    shell.info.input_counts.move_to_end("client-a")
    state.input_counted(cast(Session, shell))
    found = survival.read_state(state.state_fd, 32)
    assert found is not None
    facts, _, input_bytes, _ = found
    assert facts["name"] == "build" and facts["pid"] == 4242
    assert facts["input_counts"] == [["client-b", 4], ["client-a", 3]]
    assert input_bytes == 7
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


def test_the_modes_at_the_rings_tail_are_kept_for_a_new_worker() -> None:
    shell = _Shell()
    state = _state(shell)
    shell.output(state, b"\x1b[?1049h\x1b[?1h")  # alternate screen, application cursor keys
    shell.output(state, b"y" * 40)  # both sequences have left the 32-byte ring
    shell.output(state, b"\x1b[?1l" + b"z" * 30)  # cursor keys off, still in the ring
    found = survival.read_state(state.state_fd, 32)
    assert found is not None
    kept = ModeTracker.from_state(found[0]["tail_modes"]).modes
    assert kept == shell.tail_modes.modes
    assert kept.alt_screen and kept.app_cursor_keys  # what the tail's replay must restore
    shell.output(state, b"w" * 32)  # now the reset dropped off too
    found = survival.read_state(state.state_fd, 32)
    assert found is not None
    kept = ModeTracker.from_state(found[0]["tail_modes"]).modes
    assert kept.alt_screen and not kept.app_cursor_keys
    state.close()


def test_a_tail_cut_inside_an_escape_sequence_is_kept_exactly() -> None:
    shell = _Shell()
    state = _state(shell)
    shell.output(state, b"\x1b[?1049h")
    shell.output(state, b"c" * 29)  # the ring drops 5 bytes: its tail is inside the sequence
    assert shell.tail_modes.is_mid_sequence
    found = survival.read_state(state.state_fd, 32)
    assert found is not None
    assert found[0]["tail_modes"] == shell.tail_modes.to_state()
    shell.output(state, b"d" * 5)  # ...and now past it
    found = survival.read_state(state.state_fd, 32)
    assert found is not None
    assert ModeTracker.from_state(found[0]["tail_modes"]).modes.alt_screen
    state.close()


def test_exit_reports_of_the_supervisor_reach_the_worker() -> None:
    supervisor_end, worker_end = socket.socketpair()
    reports = survival.ExitReports(worker_end.detach())
    record = EXIT_REPORT.pack(4242, 7, 0) + EXIT_REPORT.pack(4343, -1, 9)
    supervisor_end.send(record[:5])  # a record cut in two by the stream
    reports.receive()
    supervisor_end.send(record[5:])
    assert reports.status_of(4242) == (7, None)
    assert reports.status_of(4343) == (None, 9)
    assert reports.status_of(4242) == (None, None)  # claimed once; now gone, unreported
    zombie = subprocess.Popen(["true"])  # ended, not reaped: as a shell before its report
    try:
        os.waitid(os.P_PID, zombie.pid, os.WEXITED | os.WNOWAIT)  # ended, still a zombie
        assert reports.status_of(zombie.pid) is None  # ask again: the report is on its way
        supervisor_end.send(EXIT_REPORT.pack(zombie.pid, 3, 0))
        assert reports.status_of(zombie.pid) == (3, None)
    finally:
        zombie.wait()
        supervisor_end.close()
        os.close(reports.fd)
