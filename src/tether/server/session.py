"""One terminal session: a shell on a PTY, its output ring, its attached clients, its state.

The session reads the PTY whenever the slowest attached client has room (docs/protocol.md, section
5):
a client's ``position`` is the next stream byte it must receive, and the ring is never trimmed
below it, so an attached client never sees a gap and a fast program is slowed instead of
buffered without bound. With no client attached the session reads freely and the ring drops the
oldest bytes, feeding them to the mode tracker that later rebuilds the screen modes.
"""

from __future__ import annotations

import asyncio
import enum
import signal
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from tether.errors import InvalidParameter
from tether.protocol.codes import CloseCode
from tether.protocol.modes import ModeTracker
from tether.protocol.ring import RingBuffer
from tether.server import pty

MAX_READ = 256 * 1024
_MAX_INPUT_IDS = 256
_SAFE_START_STEP = 4096


class SessionState(enum.Enum):
    """``starting → attached ⇄ detached → ended``."""

    STARTING = "starting"
    ATTACHED = "attached"
    DETACHED = "detached"
    ENDED = "ended"


class EndReason(enum.Enum):
    """Why a session ended, and the close code its clients (and tombstone) carry."""

    EXITED = (CloseCode.EXITED, "shell exited")
    REAPED = (CloseCode.NOT_FOUND, "session idle-reaped")
    KILLED = (CloseCode.TERMINATED, "session terminated by an operator")
    SHUTDOWN = (CloseCode.GOING_AWAY, "server shutting down")

    @property
    def code(self) -> int:
        return int(self.value[0])

    @property
    def reason(self) -> str:
        return str(self.value[1])


class ClientSink(Protocol):
    """What a connection front (aiohttp, ASGI, …) gives the session to reach its client."""

    def wake(self) -> None:
        """Output or a final message is ready: send from ``client.position`` when you can."""

    def send_message(self, message: dict[str, Any]) -> None:
        """Queue a JSON control message (``resize``)."""

    def close(self, code: int, reason: str) -> None:
        """Close the connection now with ``code`` and ``reason``."""


@dataclass
class Client:
    """One attached connection: where it is in the stream and how to reach it."""

    sink: ClientSink
    client_id: str | None
    input_key: str
    position: int
    replay_end: int
    nudge_after_replay: bool = False
    active: bool = True
    final: tuple[dict[str, Any] | None, int, str] | None = None


@dataclass(frozen=True)
class AttachResult:
    client: Client
    hello: dict[str, Any]


@dataclass
class SessionInfo:
    """The serializable facts about a session (what a shared registry would hold)."""

    key: str
    session_id: str
    project: str
    owner: str
    created_at: float
    cols: int
    rows: int
    pid: int = 0
    last_activity: float = 0.0
    input_counts: OrderedDict[str, int] = field(default_factory=OrderedDict)


class Session:
    """A shell on a PTY with its ring buffer and clients; create it through the manager."""

    def __init__(
        self,
        info: SessionInfo,
        process: pty.PtyProcess,
        buffer_size: int,
        clock: Callable[[], float],
        on_exit: Callable[[Session, int | None, int | None], None],
    ) -> None:
        self.info = info
        self.process = process
        self.ring = RingBuffer(buffer_size)
        self.tail_modes = ModeTracker()
        self.clients: list[Client] = []
        self.state = SessionState.STARTING
        self.detached_since: float = clock()
        self.input_bytes = 0
        self.terminated = asyncio.Event()
        self.ending: asyncio.Task[None] | None = None  # ends the processes; held so it runs out
        self._clock = clock
        self._on_exit = on_exit
        self._loop = asyncio.get_running_loop()
        self._max_read = max(1024, min(MAX_READ, buffer_size // 2))
        self._reading = False
        self._end_of_file = False
        self._pending_input: list[tuple[str, memoryview, asyncio.Future[None] | None]] = []
        self._writer_registered = False
        self._exit_status: tuple[int | None, int | None] | None = None
        self._exit_drain_budget = 0
        self._start_reading()
        if process.pidfd >= 0:
            self._loop.add_reader(process.pidfd, self._on_child_event)

    # ----------------------------------------------------------------- output
    def _start_reading(self) -> None:
        if not self._reading and not self._end_of_file and self.state is not SessionState.ENDED:
            self._loop.add_reader(self.process.fd, self._on_readable)
            self._reading = True

    def _stop_reading(self) -> None:
        if self._reading:
            self._loop.remove_reader(self.process.fd)
            self._reading = False

    def _read_room(self) -> int:
        if not self.clients:
            return self._max_read
        lag = self.ring.head - min(client.position for client in self.clients)
        return min(self._max_read, self.ring.capacity - lag)

    def _on_readable(self) -> None:
        room = self._read_room()
        if room <= 0:
            self._stop_reading()  # flow control: resumed by client_progressed()
            return
        try:
            data, end_of_file = self.process.read_available(room)
        except OSError:
            data, end_of_file = b"", True
        if data:
            self._append_output(data)
        if end_of_file:
            # Every slave holder is gone; the pidfd tells when the shell itself is reaped.
            self._end_of_file = True
            self._stop_reading()
            if self.process.pidfd < 0:
                self._on_child_event()

    def _append_output(self, data: bytes) -> None:
        self.ring.append(data, self.tail_modes.feed)
        for client in self.clients:
            client.sink.wake()

    def client_progressed(self) -> None:
        """A client sent more of the stream: resume reading if flow control had paused it."""
        if self._exit_status is not None:
            self._drain_after_exit()
        elif not self._reading and self._read_room() >= min(self._max_read, 16384):
            self._start_reading()

    def read_for(self, client: Client, limit: int = MAX_READ) -> bytes:
        """The next bytes ``client`` must receive (empty when it is caught up)."""
        if client.position >= self.ring.head:
            return b""
        return self.ring.read(client.position, limit)

    # ----------------------------------------------------------------- attach / detach
    def attach(
        self,
        sink: ClientSink,
        client_id: str | None,
        input_key: str,
        offset: int | None,
        created: bool,
        size: tuple[int, int] | None,
    ) -> AttachResult:
        """Attach a client; compute its replay start, gap and restore. Never awaits."""
        head = self.ring.head
        if offset is not None and offset > head and not created:
            raise InvalidParameter("offset", f"beyond the end of the stream ({head})")
        restore, nudge = "", False
        if created or (offset is not None and offset >= self.ring.tail):
            replay_from = head if created else offset
            assert replay_from is not None
        elif self.ring.tail == 0:
            replay_from = 0
        else:
            replay_from, restore, nudge = self._plan_restore()
        gap = replay_from - offset if offset is not None and not created else 0
        gap = max(gap, 0)
        self._replace_client_id(client_id)
        client = Client(sink, client_id, input_key, replay_from, head, nudge_after_replay=nudge)
        self.clients.append(client)
        self.state = SessionState.ATTACHED
        self.info.last_activity = self._clock()
        if size is not None and not created:
            self.resize(*size, origin=client)
        hello = {
            "type": "hello",
            "protocol": 1,
            "session": self.info.session_id,
            "project": self.info.project,
            "key": self.info.key,
            "created": created,
            "replay_from": replay_from,
            "gap": gap,
            "head": head,
            "input_acked": self.info.input_counts.get(input_key, 0),
            "restore": restore,
            "cols": self.info.cols,
            "rows": self.info.rows,
        }
        return AttachResult(client, hello)

    def _plan_restore(self) -> tuple[int, str, bool]:
        tracker = self.tail_modes.copy()
        position = self.ring.tail
        while tracker.is_mid_sequence and position < self.ring.head:
            following = self.ring.read(position, _SAFE_START_STEP)
            skip = tracker.safe_start(following)
            tracker.feed(following[:skip])
            position += skip
            if skip < len(following):
                break
        restore = tracker.modes.restore_sequence()
        current = tracker.copy()
        current.feed(self.ring.read(position, self.ring.head - position))
        return position, restore, current.modes.alt_screen

    def _replace_client_id(self, client_id: str | None) -> None:
        if client_id is None:
            return
        for old in [c for c in self.clients if c.client_id == client_id]:
            self.detach(old)
            old.sink.close(CloseCode.REPLACED, "replaced by a newer connection of this client")
        # Input of this client id not yet written is dropped: the new connection learns the
        # count in its hello and re-sends the rest, so nothing is written twice.
        kept = []
        for entry in self._pending_input:
            if entry[0] == client_id:
                if entry[2] is not None and not entry[2].done():
                    entry[2].set_result(None)
            else:
                kept.append(entry)
        self._pending_input[:] = kept

    def detach(self, client: Client) -> None:
        """Remove a client (its connection closed); the session stays and keeps buffering."""
        if not client.active:
            return
        client.active = False
        if client in self.clients:
            self.clients.remove(client)
        if client.client_id is None:
            self.info.input_counts.pop(client.input_key, None)
        if not self.clients and self.state is SessionState.ATTACHED:
            self.state = SessionState.DETACHED
            self.detached_since = self._clock()
        self.info.last_activity = self._clock()
        self.client_progressed()

    def replay_done(self, client: Client) -> None:
        """The client received its replay: nudge an alternate-screen program to redraw."""
        if client.nudge_after_replay:
            client.nudge_after_replay = False
            self.nudge_redraw()

    def nudge_redraw(self) -> None:
        """A resize round trip, so that full-screen programs repaint (SIGWINCH twice)."""
        cols, rows = self.info.cols, self.info.rows
        if self.state is SessionState.ENDED:
            return
        self.process.resize(cols, max(1, rows - 1) if rows > 1 else rows + 1)
        self._loop.call_later(0.05, self._restore_size)

    def _restore_size(self) -> None:
        if self.state is not SessionState.ENDED:
            self.process.resize(self.info.cols, self.info.rows)

    # ----------------------------------------------------------------- input / resize
    async def write_input(self, input_key: str, data: bytes) -> None:
        """Write input in order; counts bytes toward ``input_key`` only once written."""
        if self.state is SessionState.ENDED or not data:
            return
        self.info.last_activity = self._clock()
        view = memoryview(data)
        if not self._pending_input:
            written = self.process.write(view)
            self._count_input(input_key, written)
            if written == len(view):
                return
            view = view[written:]
        future: asyncio.Future[None] = self._loop.create_future()
        self._pending_input.append((input_key, view, future))
        self._register_writer()
        await future

    def _count_input(self, input_key: str, written: int) -> None:
        counts = self.info.input_counts
        counts[input_key] = counts.get(input_key, 0) + written
        counts.move_to_end(input_key)
        self.input_bytes += written
        if len(counts) > _MAX_INPUT_IDS:
            counts.popitem(last=False)

    def input_count(self, input_key: str) -> int:
        return self.info.input_counts.get(input_key, 0)

    def _register_writer(self) -> None:
        if not self._writer_registered:
            self._loop.add_writer(self.process.fd, self._on_writable)
            self._writer_registered = True

    def _on_writable(self) -> None:
        while self._pending_input:
            input_key, view, future = self._pending_input[0]
            try:
                written = self.process.write(view)
            except OSError as exc:
                self._fail_pending_input(exc)
                return
            self._count_input(input_key, written)
            if written < len(view):
                self._pending_input[0] = (input_key, view[written:], future)
                return
            self._pending_input.pop(0)
            if future is not None and not future.done():
                future.set_result(None)
        self._loop.remove_writer(self.process.fd)
        self._writer_registered = False

    def _fail_pending_input(self, exc: BaseException | None = None) -> None:
        if self._writer_registered:
            self._loop.remove_writer(self.process.fd)
            self._writer_registered = False
        for _key, _view, future in self._pending_input:
            if future is not None and not future.done():
                future.set_result(None)
        self._pending_input.clear()

    def resize(self, cols: int, rows: int, origin: Client | None = None) -> None:
        """Resize the terminal (last writer wins) and tell every other client."""
        if self.state is SessionState.ENDED:
            return
        if (cols, rows) != (self.info.cols, self.info.rows):
            self.info.cols, self.info.rows = cols, rows
            self.process.resize(cols, rows)
        for client in self.clients:
            if client is not origin:
                client.sink.send_message({"type": "resize", "cols": cols, "rows": rows})

    # ----------------------------------------------------------------- ending
    def _on_child_event(self) -> None:
        status = self.process.poll_exit()
        if status is None or self._exit_status is not None:
            return
        if self.process.pidfd >= 0:
            self._loop.remove_reader(self.process.pidfd)
        self._stop_reading()
        self._exit_status = status
        # What the shell printed last is still in the PTY: deliver it before ending, within
        # flow control (client_progressed resumes this), and bounded in case a job keeps writing.
        self._exit_drain_budget = 2 * self.ring.capacity + 65536
        self._drain_after_exit()

    def _drain_after_exit(self) -> None:
        while self._exit_drain_budget > 0:
            room = min(self._read_room(), self._exit_drain_budget)
            if room <= 0:
                return
            try:
                data, end_of_file = self.process.read_available(room)
            except OSError:
                data, end_of_file = b"", True
            self._exit_drain_budget -= len(data)
            if data:
                self._append_output(data)
            if end_of_file or not data:
                break
        status, self._exit_status = self._exit_status, None
        self._exit_drain_budget = 0
        if status is not None:
            self._on_exit(self, *status)

    def end(
        self, reason: EndReason, kill_grace: float, exit_status: tuple[Any, Any] = (None, None)
    ) -> None:
        """End the session now: clients get their final message, processes are ended."""
        if self.state is SessionState.ENDED:
            return
        self.state = SessionState.ENDED
        self._stop_reading()
        self._fail_pending_input()
        if self.process.pidfd >= 0:
            self._loop.remove_reader(self.process.pidfd)
        message = None
        if reason is EndReason.EXITED:
            message = {"type": "exit", "code": exit_status[0], "signal": exit_status[1]}
        for client in self.clients:
            # Clients of an exited shell get every byte, then `exit`; the others close now.
            client.final = (message, reason.code, reason.reason)
            if reason is EndReason.EXITED:
                client.sink.wake()
            else:
                client.active = False
                client.sink.close(reason.code, reason.reason)
        self.ending = self._loop.create_task(self._end_processes(kill_grace))

    async def _end_processes(self, kill_grace: float) -> None:
        sid = self.process.pid
        everyone: set[int] = {sid}
        try:
            found = await self._signal_session(sid, (signal.SIGHUP, signal.SIGCONT))
            everyone.update(found)
            if await self._still_running(found, kill_grace):
                found = await self._signal_session(sid, (signal.SIGKILL,))
                everyone.update(found)
                await self._still_running(found, 2.0)
            await self._reap_all(everyone)
        finally:
            self.process.close_fds()
            self.terminated.set()

    @staticmethod
    async def _signal_session(sid: int, signals: tuple[int, ...]) -> list[int]:
        # As a subreaper the server finds the session's processes in a few reads of /proc; else
        # it must read all of /proc, slow with thousands of processes: in a thread.
        members = pty.session_members(sid)
        if members is None:
            return await asyncio.to_thread(pty.signal_session, sid, signals)
        return pty.signal_session(sid, signals, members)

    async def _still_running(self, pids: list[int], timeout: float) -> list[int]:
        """Wait up to ``timeout`` for ``pids`` to end; returns those still running."""
        deadline = self._loop.time() + timeout
        running = list(pids)
        while running:
            pty.reap(running)
            running = [pid for pid in running if not pty.is_zombie_or_gone(pid)]
            if not running or self._loop.time() >= deadline:
                break
            await asyncio.sleep(0.02)
        return running

    async def _reap_all(self, pids: set[int]) -> None:
        # The server is a child subreaper, so orphaned jobs are its children: collect them.
        for _ in range(50):
            pty.reap(list(pids))
            pids = {pid for pid in pids if pty.exists(pid)}
            if not pids:
                return
            await asyncio.sleep(0.01)

    # ----------------------------------------------------------------- facts
    @property
    def memory_bytes(self) -> int:
        """Server memory this session holds (ring storage plus a fixed overhead estimate)."""
        return self.ring.memory_bytes + 4096

    def stats(self) -> dict[str, Any]:
        return {
            "key": self.info.key,
            "session": self.info.session_id,
            "project": self.info.project,
            "owner": self.info.owner,
            "state": self.state.value,
            "pid": self.info.pid,
            "clients": len(self.clients),
            "output_position": self.ring.head,
            "buffered_bytes": self.ring.size,
            "memory_bytes": self.memory_bytes,
            "cols": self.info.cols,
            "rows": self.info.rows,
            "input_bytes": self.input_bytes,
        }
