"""Crash survival: what a new worker needs after ``SIGKILL`` of the old one is kept in the
kernel, in the file-descriptor store of systemd or of :mod:`tether.server.supervisor`
(docs/architecture.md, "Surviving the server process").

Per session, two fds are stored (one message under tether's supervisor, before ``connect``
returns; removed at once when a session ends with its shell running, at the end of the loop
iteration, with the others that ended in it, when its shell exited): the PTY master
(``pty.<session>.<project>``: while any process holds it, the shell gets no hang-up) and a
memfd of state (``state.<…>``) laid out as

    slot A | slot B      (32 KiB each) the record: facts, input counts per client, ring head
    ring                 (buffer_size bytes) the output, byte ``p`` at ``RING_BASE + p % size``

Every read from the PTY is copied into the ring area, then the slot is rewritten with the new
head, *before* any client is sent the bytes; every write to the PTY rewrites the slot with the
new input counts. Slots alternate and carry a sequence number and a CRC, so a kill in the middle
of a slot write leaves the previous slot valid. The window this leaves is the one ``read(2)`` or
``write(2)`` in flight at the kill: output read but not yet in a slot is lost without a trace
(at most one read, 64 KiB); input written but not yet counted is sent again by its client
(at most one frame). The listening sockets (``listen.<n>``) and a memfd with the generation
(``server``) are stored too.

Without a notify socket (no supervisor, no systemd) none of this runs and it costs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import struct
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tether.protocol.modes import ModeTracker
from tether.protocol.ring import RingBuffer
from tether.server import fdstore, logs, pty
from tether.server.handover import SessionHandover
from tether.server.manager import SessionManager
from tether.server.session import Session, SessionInfo
from tether.server.supervisor import EXIT_REPORT, EXIT_REPORTS_ENV, SUPERVISOR_PID_ENV

SLOT_SIZE = 32 * 1024
RING_BASE = 2 * SLOT_SIZE
_SLOT = struct.Struct(">QQQQI")  # sequence, head, input bytes, facts length, crc32
_GENERATION = struct.Struct(">Q")
_NUMBERS = struct.Struct(">QQ")
_ENCODE_JSON = json.JSONEncoder(separators=(",", ":")).encode  # one encoder, not one per call


@dataclass(frozen=True)
class Recovered:
    generation: int
    listen_fds: tuple[int, ...]
    sessions: int


class SessionState:
    """A session's crash-survival memfd, kept current by the session (its observer)."""

    def __init__(self, session: Session, capacity: int, fd: int | None = None) -> None:
        if fd is None:  # a new one: empty, of this capacity
            fd = _new_memfd("tether-session", RING_BASE + capacity)
            self._sequence = 0
        else:
            # A memfd taken over (upgrade, crash) goes on from its newest slot: a reader picks
            # the highest sequence number, so starting again from 0 would leave a stale slot
            # the winner. Its size is as made: the buffer size may have changed since.
            capacity = os.fstat(fd).st_size - RING_BASE
            self._sequence = _latest_sequence(fd)
        self.state_fd = fd
        self.capacity = capacity
        self.store_name = _name(session.info.key)
        # The slot's JSON is the record (every fact but the input counts, encoded when one of
        # them changes) and the input counts (encoded on every write to the PTY: the hot path).
        self._record: dict[str, Any] = {}
        self._record_json = b""  # the record's JSON without its closing brace
        self._counts_json = b"[]"
        self._facts = b""
        self._tail_seen: tuple[object, bool] | None = None  # (modes, mid-sequence) last written
        self._input_bytes = session.input_bytes
        self._note_tail_modes(session)
        self.facts_changed(session)

    # SessionObserver
    def output_appended(self, session: Session, data: bytes) -> None:
        start = session.ring.head - len(data)  # the position of data's first byte
        if self._note_tail_modes(session):
            self._encode_facts()
        if len(data) > self.capacity:
            start, data = start + len(data) - self.capacity, data[-self.capacity :]
        offset = start % self.capacity
        first = min(len(data), self.capacity - offset)
        os.pwrite(self.state_fd, data[:first], RING_BASE + offset)
        if first < len(data):
            os.pwrite(self.state_fd, data[first:], RING_BASE)
        self._write_slot(start + len(data))

    def facts_changed(self, session: Session) -> None:
        info = session.info
        self._record |= {
            "key": info.key,
            "session_id": info.session_id,
            "project": info.project,
            "owner": info.owner,
            "created_at": info.created_at,
            "pid": info.pid,
            "name": info.name,
        }
        self._record_json = b""  # encoded again below
        self.input_counted(session)

    def input_counted(self, session: Session) -> None:
        """Bytes were written to the PTY: only the counts are encoded again (per keystroke)."""
        self._counts_json = _ENCODE_JSON(list(session.info.input_counts.items())).encode()
        self._input_bytes = session.input_bytes
        self._encode_facts()
        self._write_slot(session.ring.head)

    def _note_tail_modes(self, session: Session) -> bool:
        """Keep the modes at the ring's tail in the record when they changed (they change only
        while the ring drops bytes, and rarely then: the frozen modes object is compared)."""
        tracker = session.tail_modes
        seen = (tracker.modes, tracker.is_mid_sequence)
        if not seen[1] and self._tail_seen is not None and seen[0] is self._tail_seen[0]:
            return False
        self._tail_seen = seen
        self._record["tail_modes"] = tracker.to_state()
        self._record_json = b""
        return True

    def _encode_facts(self) -> None:
        if not self._record_json:
            self._record_json = _ENCODE_JSON(self._record).encode()[:-1]
        encoded = self._record_json + b',"input_counts":' + self._counts_json + b"}"
        self._facts = encoded[: SLOT_SIZE - _SLOT.size]

    def _write_slot(self, head: int) -> None:
        self._sequence += 1
        crc = _checksum(head, self._input_bytes, self._facts)
        prefix = _SLOT.pack(self._sequence, head, self._input_bytes, len(self._facts), crc)
        slot = (self._sequence % 2) * SLOT_SIZE
        os.pwrite(self.state_fd, prefix + self._facts, slot)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.state_fd)


def _latest_sequence(fd: int) -> int:
    found = _newest_slot(fd)
    return found[0] if found is not None else 0


def _newest_slot(fd: int) -> tuple[int, dict[str, Any], int, int] | None:
    """(sequence, facts, head, input bytes) of the newest valid slot of a state memfd."""
    best: tuple[int, dict[str, Any], int, int] | None = None
    for slot in (0, SLOT_SIZE):
        raw = os.pread(fd, SLOT_SIZE, slot)
        if len(raw) < _SLOT.size:
            continue
        sequence, head, input_bytes, length, crc = _SLOT.unpack_from(raw)
        encoded = raw[_SLOT.size : _SLOT.size + length]
        if sequence == 0 or _checksum(head, input_bytes, encoded) != crc:
            continue
        if best is None or sequence > best[0]:
            best = (sequence, json.loads(encoded), head, input_bytes)
    return best


def _checksum(head: int, input_bytes: int, facts: bytes) -> int:
    return zlib.crc32(facts, zlib.crc32(_NUMBERS.pack(head, input_bytes)))


def read_state(fd: int, capacity_hint: int) -> tuple[dict[str, Any], int, int, bytes] | None:
    """(facts, head, input bytes, ring bytes ending at head) from a state memfd; None if no
    valid slot (killed before the first write)."""
    best = _newest_slot(fd)
    if best is None:
        return None
    _, facts, head, input_bytes = best
    capacity = os.fstat(fd).st_size - RING_BASE
    if capacity <= 0:
        capacity = capacity_hint
    held = min(head, capacity)
    start = (head - held) % capacity
    first = min(held, capacity - start)
    data = os.pread(fd, first, RING_BASE + start)
    if first < held:
        data += os.pread(fd, held - first, RING_BASE)
    return facts, head, input_bytes, data


# ----------------------------------------------------------------------------- worker hooks
_enabled = False
_origin = "fresh"  # fresh | upgrade | recovery
_states: dict[str, SessionState] = {}


def enabled() -> bool:
    """Crash survival is on when a manager (systemd, the supervisor) keeps our fds."""
    return fdstore.notify_socket_address(os.environ) is not None


def watch(manager: SessionManager) -> None:
    """From now on, every new session of ``manager`` keeps its state in the store (and the
    exit statuses of shells the supervisor reaps for us are heard)."""
    global _enabled
    _enabled = enabled()
    if _enabled:
        manager.on_created.append(lambda s: _keep(s, manager.settings.buffer_size))
        manager.on_ended.append(_forget)
    _listen_for_exit_reports()


# ----------------------------------------------------------------------------- supervisor
class ExitReports:
    """How shells that are not our children ended, as their reaper (the supervisor) reports
    them on ``fd`` (:data:`~tether.server.supervisor.EXIT_REPORT` records)."""

    _KEPT = 4096  # reports kept unclaimed (most are claimed at once)
    _PATIENCE = 2.0  # seconds to wait for a zombie's report (a stopped supervisor sends none)

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_inheritable(fd, False)
        os.set_blocking(fd, False)
        self._partial = b""
        self._statuses: OrderedDict[int, pty.ExitStatus] = OrderedDict()
        self._waiting: dict[int, float] = {}  # zombies asked about: since when (monotonic)

    def receive(self) -> None:
        """Take every report waiting (non-blocking)."""
        while True:
            try:
                data = os.read(self.fd, 256 * EXIT_REPORT.size)
            except OSError:  # nothing more now (or the supervisor is gone)
                return
            if not data:
                return
            data = self._partial + data
            whole = len(data) - len(data) % EXIT_REPORT.size
            for pid, code, signum in EXIT_REPORT.iter_unpack(data[:whole]):
                self._statuses[pid] = (code if code >= 0 else None, signum or None)
                while len(self._statuses) > self._KEPT:
                    self._statuses.popitem(last=False)
            self._partial = data[whole:]

    def status_of(self, pid: int) -> pty.ExitStatus | None:
        """``pid``'s exit status; None while it is a zombie not reported yet (the supervisor
        reports before it reaps); (None, None) when it is gone unreported."""
        self.receive()
        status = self._statuses.pop(pid, None)
        if status is None and pty.exists(pid) and pty.is_zombie_or_gone(pid):
            since = self._waiting.setdefault(pid, time.monotonic())
            if time.monotonic() - since < self._PATIENCE:
                return None
        self._waiting.pop(pid, None)
        return status or (None, None)


def _listen_for_exit_reports() -> None:
    value = os.environ.get(EXIT_REPORTS_ENV, "")
    if not value.isdigit():
        return
    try:
        reports = ExitReports(int(value))
    except OSError:  # not an open fd (a stale variable)
        return
    reports.receive()  # shells that ended while no worker ran
    asyncio.get_running_loop().add_reader(reports.fd, reports.receive)
    pty.report_orphan_exits_with(reports.status_of)
    _inheritable_extra.append(reports.fd)


def watch_supervisor(stop: Callable[[], None]) -> None:
    """Under the supervisor: when it is gone (SIGKILLed), nothing would restart a crashed
    worker or keep our fds any more; call ``stop`` (drain and end, as SIGTERM does)."""
    value = os.environ.get(SUPERVISOR_PID_ENV, "")
    if not value.isdigit():
        return
    loop = asyncio.get_running_loop()
    try:
        pidfd = os.pidfd_open(int(value))
    except OSError:
        pidfd = -1
    if pidfd < 0 or os.getppid() != int(value):  # gone already
        if pidfd >= 0:
            os.close(pidfd)
        loop.call_soon(_supervisor_lost, stop)
        return

    def lost() -> None:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        _supervisor_lost(stop)

    loop.add_reader(pidfd, lost)


def _supervisor_lost(stop: Callable[[], None]) -> None:
    global _enabled
    _enabled = False
    for variable in ("NOTIFY_SOCKET", SUPERVISOR_PID_ENV):
        os.environ.pop(variable, None)
    logs.log_at(logging.WARNING, "supervisor_lost", action="drain")
    stop()


def _keep(session: Session, capacity: int, state_fd: int | None = None) -> None:
    state = SessionState(session, capacity, state_fd)
    session.observer = state
    _states[session.info.key] = state
    if state_fd is None:
        # Removals still pending go first: one of them may be an ended session of this key.
        _send_removals()
        # Now, not batched with other sessions' (as removals are): the front sends the hello
        # as soon as this returns, and a client told of a session must find it after a crash.
        # Under tether's supervisor the master and the state memfd go in one message.
        name = state.store_name
        entries = [("pty." + name, session.process.fd), ("state." + name, state.state_fd)]
        fdstore.store_entries(entries)


def _forget(session: Session) -> None:
    state = _states.pop(session.info.key, None)
    if state is None:
        return
    session.observer = None
    first = not _pending_removals
    _pending_removals.extend(("pty." + state.store_name, "state." + state.store_name))
    if pty.is_running_shell(session.process.pid):
        # Killed (or reaped, fenced, shut down) with its shell running: the store's copy of
        # the master goes now, or a crash before it would bring the session back.
        _send_removals()
    elif first:
        # Its shell is gone: a crash before the removal only has the next worker adopt a
        # session that ends at once. The removals of every session that exits in this loop
        # iteration go together at its end (one message under tether's supervisor).
        try:
            asyncio.get_running_loop().call_soon(_send_removals)
        except RuntimeError:  # no loop (a synchronous caller): now
            _send_removals()
    state.close()


_pending_removals: list[str] = []


def _send_removals() -> None:
    if _pending_removals:
        names = list(_pending_removals)
        _pending_removals.clear()
        fdstore.remove_names(names)


def handed_over() -> None:
    """This process took over from an upgrade: its listening sockets are in the store already."""
    global _origin
    _origin = "upgrade"


def keep_after_upgrade(session: Session, entry: SessionHandover, capacity: int) -> None:
    """A session handed over by an upgrade keeps the state memfd it had (same store entry)."""
    if entry.state_fd >= 0:
        os.set_inheritable(entry.state_fd, False)
        if enabled():
            _keep(session, capacity, entry.state_fd)
        else:
            os.close(entry.state_fd)


_inheritable_extra: list[int] = []  # the exit reports' fd


def inheritable_fds() -> list[int]:
    """The fds an upgrade's exec must keep besides the masters: the state memfds (and the
    supervisor's exit reports). The store removals still pending are sent now: the exec
    follows."""
    _send_removals()
    return [state.state_fd for state in _states.values()] + _inheritable_extra


def serving(manager: SessionManager, listen_fds: Sequence[int], generation: int) -> None:
    """Once listening: store the listening sockets (first start only) and the generation, and
    tell the manager we are ready."""
    if not _enabled:
        return
    if _origin == "fresh":
        for index, fd in enumerate(listen_fds):
            fdstore.store(f"listen.{index}", [fd])
    fdstore.remove("server")
    fd = _new_memfd("tether-server", _GENERATION.size)
    os.pwrite(fd, _GENERATION.pack(generation), 0)
    fdstore.store("server", [fd])
    os.close(fd)
    fdstore.notify(f"READY=1\nMAINPID={os.getpid()}")


def recover(manager: SessionManager, now: float) -> Recovered | None:
    """After a crash: the sessions and sockets the store passed us (None: nothing passed)."""
    global _origin
    passed = fdstore.listen_fds(os.environ)
    if not passed:
        return None
    _origin = "recovery"
    by_name: dict[str, int] = {}
    listen: list[int] = []
    for name, fd in passed:
        if name.startswith("listen."):
            listen.append(fd)
        else:
            by_name[name] = fd
    generation = _read_generation(by_name.pop("server", -1)) + 1
    count = 0
    for name in [n for n in by_name if n.startswith("pty.")]:
        master, state_fd = by_name.pop(name), by_name.pop("state." + name[4:], -1)
        if _recover_session(manager, master, state_fd, now):
            count += 1
    for fd in by_name.values():  # stray entries: not ours to keep
        os.close(fd)
    return Recovered(generation, tuple(listen), count)


def _recover_session(manager: SessionManager, master: int, state_fd: int, now: float) -> bool:
    capacity = manager.settings.buffer_size
    state = read_state(state_fd, capacity) if state_fd >= 0 else None
    if state is None:  # no record: the shell cannot be matched to a session; let it hang up
        os.close(master)
        if state_fd >= 0:
            os.close(state_fd)
        return False
    facts, head, input_bytes, held = state
    cols, rows = pty.window_size(master)
    info = SessionInfo(
        key=str(facts["key"]),
        session_id=str(facts["session_id"]),
        project=str(facts["project"]),
        owner=str(facts["owner"]),
        created_at=float(facts["created_at"]),
        cols=cols,
        rows=rows,
        pid=int(facts["pid"]),
        last_activity=now,
        input_counts=OrderedDict((str(c), int(n)) for c, n in facts["input_counts"]),
        name=str(facts.get("name", "")),  # absent in a hand-over from before display names
    )
    tail_modes = _tail_modes(facts.get("tail_modes"))
    if len(held) > capacity:  # a smaller buffer now: the modes of what is dropped count
        tail_modes.feed(held[: len(held) - capacity])
    ring = RingBuffer.restored(capacity, head, held[-capacity:])
    process = pty.adopt(info.pid, master)
    adopted = (ring, tail_modes)
    session = Session(info, process, capacity, manager.clock, _no_exit, adopted=adopted)
    session.input_bytes = input_bytes
    manager.adopt(session)
    _keep(session, capacity, state_fd)
    return True


def _tail_modes(state: Any) -> ModeTracker:
    """The tracker of the modes at the ring's tail as the record kept it (a record written by
    an older tether has none: then no restore for a replay from the tail)."""
    if not isinstance(state, dict):
        return ModeTracker()
    try:
        return ModeTracker.from_state(state)
    except (KeyError, ValueError, TypeError, IndexError):
        return ModeTracker()


def _no_exit(_session: Session, _code: int | None, _signal: int | None) -> None:
    """Replaced by the manager's handler when it adopts the session."""


def _read_generation(fd: int) -> int:
    if fd < 0:
        return 1
    try:
        raw = os.pread(fd, _GENERATION.size, 0)
        return _GENERATION.unpack(raw)[0] if len(raw) == _GENERATION.size else 1
    finally:
        os.close(fd)


def _new_memfd(name: str, size: int) -> int:
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    os.ftruncate(fd, size)
    return fd


def _name(key: str) -> str:
    # fd names may not hold ":" (LISTEN_FDNAMES separates with it); keys are session:project
    return key.replace(":", ".")
