"""One terminal session: a shell on a PTY, its output ring, its attached clients, its state.

This module is the session's I/O: it reads the PTY when flow control allows, writes input,
resizes, and starts the ending of its processes. The rest lives in modules of their own: flow
control and replay planning in :mod:`tether.protocol.flow`, screen restore in
:mod:`tether.protocol.restore`, the states and their transitions in :mod:`tether.server.state`,
ending processes in :mod:`tether.server.ending`.

The session reads the PTY whenever the slowest attached client has room (docs/protocol.md,
section 5). With no client attached it reads freely and the ring drops the oldest bytes, feeding
them to the mode tracker that later rebuilds the screen modes.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from tether.protocol import flow
from tether.protocol.codes import CloseCode
from tether.protocol.flow import MAX_READ
from tether.protocol.modes import ModeTracker
from tether.protocol.ring import RingBuffer
from tether.server import ending, pty
from tether.server.state import EndReason, SessionEvent, SessionState, next_state

# Names the other modules import from here (EndReason and SessionState live in state.py).
__all__ = [
    "MAX_READ",
    "AttachResult",
    "Client",
    "ClientSink",
    "EndReason",
    "Session",
    "SessionInfo",
    "SessionObserver",
    "SessionRecorder",
    "SessionState",
]

_MAX_INPUT_IDS = 256  # input counts kept per session (the most recently used client ids)
_NUDGE_DELAY = 0.05  # seconds between the two resizes of a redraw nudge
_FRESH_MODES = ModeTracker()  # the modes at the tail of a ring that never dropped a byte


# ----------------------------------------------------------------------------- clients
class ClientSink(Protocol):
    """What a connection front (aiohttp, ASGI, …) gives the session to reach its client."""

    def wake(self) -> None:
        """Output or a final message is ready: send from ``client.position`` when you can."""

    def send_message(self, message: dict[str, Any]) -> None:
        """Queue a JSON control message (``resize``)."""

    def close(self, code: int, reason: str) -> None:
        """Close the connection now with ``code`` and ``reason``."""


class SessionObserver(Protocol):
    """Told of what a new server process would need after a crash (server/survival.py)."""

    def output_appended(self, session: Session, data: bytes) -> None:
        """``data`` was read from the PTY and appended to the ring (no client has it yet)."""

    def facts_changed(self, session: Session) -> None:
        """A fact a new process needs changed (the display name)."""

    def input_counted(self, session: Session) -> None:
        """Bytes were written to the PTY: an input count changed (on every keystroke)."""


class SessionRecorder(Protocol):
    """Told of the session's output, input and resizes (server/recording.py); never blocks."""

    def output(self, data: bytes) -> None: ...

    def input(self, data: bytes) -> None: ...

    def resize(self, cols: int, rows: int) -> None: ...

    def stats(self) -> dict[str, Any]: ...


@dataclass(slots=True)
class Client:
    """One attached connection: where it is in the stream and how to reach it.

    The front advances ``position`` by the bytes it sent, then calls
    :meth:`Session.client_progressed`. ``final`` is set when the session ended: (message to send
    once caught up, close code, reason).
    """

    sink: ClientSink
    client_id: str | None
    input_key: str
    position: int
    replay_end: int
    nudge_after_replay: bool = False
    active: bool = True
    final: tuple[dict[str, Any] | None, int, str] | None = None


@dataclass(frozen=True, slots=True)
class AttachResult:
    client: Client
    hello: dict[str, Any]


@dataclass(slots=True)
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
    name: str = ""  # the display name its owner gave it (empty: none)


_PendingInput = tuple[str, memoryview, asyncio.Future[None] | None]


# ----------------------------------------------------------------------------- session
class Session:
    """A shell on a PTY with its ring buffer and clients; create it through the manager."""

    def __init__(
        self,
        info: SessionInfo,
        process: pty.PtyProcess,
        buffer_size: int,
        clock: Callable[[], float],
        on_exit: Callable[[Session, int | None, int | None], None],
        *,
        adopted: tuple[RingBuffer, ModeTracker] | None = None,
    ) -> None:
        """``adopted``: the ring and tail modes of a session taken over from a previous server
        process (docs/architecture.md, "Surviving the server process"); it starts detached."""
        self.info = info
        self.process = process
        self.ring = adopted[0] if adopted else RingBuffer(buffer_size)
        # Fed every byte the ring drops: the modes at its tail. Made when the ring first drops
        # a byte (most rings never do): until then the modes of a fresh terminal.
        self._tail_modes: ModeTracker | None = adopted[1] if adopted else None
        self.clients: list[Client] = []
        self.state = SessionState.STARTING
        self.detached_since: float = clock()
        self.input_bytes = 0
        self._terminated: asyncio.Event | None = None  # made when someone waits: see terminated
        self._processes_ended = False
        self.ending: asyncio.Task[None] | None = None  # ends the processes; held so it runs out
        self._clock = clock
        self._on_exit = on_exit
        self._loop = asyncio.get_running_loop()
        self._max_read = flow.max_read_for(buffer_size)
        self._reading = False
        self._end_of_file = False
        self._pending_input: list[_PendingInput] = []
        self._writer_registered = False
        self._exit_status: tuple[int | None, int | None] | None = None
        self._exit_drain_budget = 0
        self.observer: SessionObserver | None = None  # crash-survival state (server/survival.py)
        self.recorder: SessionRecorder | None = None  # with --record-dir (server/recording.py)
        if adopted is not None:
            self._transition(SessionEvent.ADOPT)
        self._start_reading()
        if process.pidfd >= 0:
            self._loop.add_reader(process.pidfd, self._on_child_event)

    @property
    def tail_modes(self) -> ModeTracker:
        """The terminal modes in force at the ring's tail (read it, do not feed it)."""
        return self._tail_modes if self._tail_modes is not None else _FRESH_MODES

    def _feed_tail_modes(self, evicted: bytes) -> None:
        if self._tail_modes is None:
            self._tail_modes = ModeTracker()
        self._tail_modes.feed(evicted)

    @property
    def terminated(self) -> asyncio.Event:
        """Set once every process is gone and the fds are closed (after :meth:`end`)."""
        if self._terminated is None:
            self._terminated = asyncio.Event()
            if self._processes_ended:
                self._terminated.set()
        return self._terminated

    def set_exit_handler(self, on_exit: Callable[[Session, int | None, int | None], None]) -> None:
        """Who is told when the shell exits (the manager that adopted this session)."""
        self._on_exit = on_exit

    def _transition(self, event: SessionEvent) -> None:
        """The one place where ``state`` changes (the table: ``tether.server.state``)."""
        self.state = next_state(self.state, event)
        if self.state is SessionState.DETACHED:
            self.detached_since = self._clock()  # idle time counts from the last detach

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
        return flow.read_room(self.ring.head, self.ring.capacity, self._max_read, self.clients)

    def _on_readable(self) -> None:
        room = self._read_room()
        if room <= 0:
            self._stop_reading()  # flow control: resumed by client_progressed()
            return
        data, end_of_file = self._read(room)
        if data:
            self._append_output(data)
        if end_of_file:
            # Every slave holder is gone; the pidfd tells when the shell itself is reaped.
            self._end_of_file = True
            self._stop_reading()
            if self.process.pidfd < 0:
                self._on_child_event()

    def _read(self, limit: int) -> tuple[bytes, bool]:
        try:
            return self.process.read_available(limit)
        except OSError:
            return b"", True

    def _append_output(self, data: bytes) -> None:
        self.ring.append(data, self._feed_tail_modes)
        if self.observer is not None:  # before any client is sent the bytes
            self.observer.output_appended(self, data)
        if self.recorder is not None:
            self.recorder.output(data)
        for client in self.clients:
            client.sink.wake()

    def client_progressed(self) -> None:
        """A client sent more of the stream: resume reading if flow control had paused it."""
        if self._exit_status is not None:
            self._drain_after_exit()
        elif not self._reading and flow.may_resume(self._read_room(), self._max_read):
            self._start_reading()

    def read_for(self, client: Client, limit: int = MAX_READ) -> bytes:
        """The next bytes ``client`` must receive (empty when it is caught up)."""
        return flow.next_output(self.ring, client.position, limit)

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
        """Attach a client; compute its replay start, gap and restore. Never awaits.

        Raises InvalidParameter for an offset beyond the head (nothing changes then), and
        IllegalTransition on an ended session.
        """
        replay = flow.plan_replay(self.ring, self.tail_modes, offset, created)
        self._transition(SessionEvent.ATTACH)
        client = Client(sink, client_id, input_key, replay.replay_from, replay.head, replay.nudge)
        self.clients.append(client)
        self._replace_client_id(client)
        self.info.last_activity = self._clock()
        if size is not None and not created:
            self.resize(*size, origin=client)
        return AttachResult(client, self._hello(replay, created, input_key))

    def _hello(self, replay: flow.Replay, created: bool, input_key: str) -> dict[str, Any]:
        return {
            "type": "hello",
            "protocol": 1,
            "session": self.info.session_id,
            "project": self.info.project,
            "key": self.info.key,
            "created": created,
            "replay_from": replay.replay_from,
            "gap": replay.gap,
            "head": replay.head,
            "input_acked": self.info.input_counts.get(input_key, 0),
            "restore": replay.restore,
            "cols": self.info.cols,
            "rows": self.info.rows,
        }

    def _replace_client_id(self, newer: Client) -> None:
        """Close the older connections of ``newer``'s client id (attached before it)."""
        client_id = newer.client_id
        if client_id is None:
            return
        for old in [c for c in self.clients if c.client_id == client_id and c is not newer]:
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
            if not self.clients:
                self._transition(SessionEvent.LAST_DETACH)
        if client.client_id is None:
            self.info.input_counts.pop(client.input_key, None)
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
        self._loop.call_later(_NUDGE_DELAY, self._restore_size)

    def _restore_size(self) -> None:
        if self.state is not SessionState.ENDED:
            self.process.resize(self.info.cols, self.info.rows)

    # ----------------------------------------------------------------- input / resize
    async def write_input(self, input_key: str, data: bytes) -> None:
        """Write input in order; counts bytes toward ``input_key`` only once written."""
        waiting = self.offer_input(input_key, data)
        if waiting is not None:
            await waiting

    def offer_input(self, input_key: str, data: bytes) -> asyncio.Future[None] | None:
        """Write what the PTY takes now; None when all of it went, else a future done once
        the rest is written (input offered meanwhile queues behind it, in order)."""
        if self.state is SessionState.ENDED or not data:
            return None
        self.info.last_activity = self._clock()
        if self.recorder is not None:
            self.recorder.input(data)
        view = memoryview(data)
        if not self._pending_input:
            written = self.process.write(view)
            self._count_input(input_key, written)
            if written == len(view):
                return None
            view = view[written:]
        future: asyncio.Future[None] = self._loop.create_future()
        self._pending_input.append((input_key, view, future))
        self._register_writer()
        return future

    def _count_input(self, input_key: str, written: int) -> None:
        counts = self.info.input_counts
        counts[input_key] = counts.get(input_key, 0) + written
        counts.move_to_end(input_key)
        self.input_bytes += written
        if len(counts) > _MAX_INPUT_IDS:
            counts.popitem(last=False)
        if self.observer is not None:
            self.observer.input_counted(self)

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
            except OSError:
                self._fail_pending_input()
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

    def _fail_pending_input(self) -> None:
        """Give up the input not yet written (never counted, so a client re-sends it)."""
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
            if self.recorder is not None:
                self.recorder.resize(cols, rows)
        for client in self.clients:
            if client is not origin:
                client.sink.send_message({"type": "resize", "cols": cols, "rows": rows})

    def rename(self, name: str) -> None:
        """Set the display name (already validated: ``store.record.check_display_name``)."""
        self.info.name = name
        if self.observer is not None:  # the facts a new process reads after a crash
            self.observer.facts_changed(self)

    # ----------------------------------------------------------------- exit and ending
    def _on_child_event(self) -> None:
        status = self.process.poll_exit()
        if status is None or self._exit_status is not None:
            return
        self._stop_watching_child()
        self._stop_reading()
        self._exit_status = status
        # What the shell printed last is still in the PTY: deliver it before ending, within
        # flow control (client_progressed resumes this), and bounded in case a job keeps writing.
        self._exit_drain_budget = flow.exit_drain_budget(self.ring.capacity)
        self._drain_after_exit()

    def _stop_watching_child(self) -> None:
        if self.process.pidfd >= 0:
            self._loop.remove_reader(self.process.pidfd)

    def _drain_after_exit(self) -> None:
        while self._exit_drain_budget > 0:
            room = min(self._read_room(), self._exit_drain_budget)
            if room <= 0:
                return  # a client must take more first: client_progressed() comes back here
            data, end_of_file = self._read(room)
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
        """End the session now: clients get their final message, processes are ended.

        Ending an ended session does nothing (an exit and a kill may race: the first wins).
        ``terminated`` is set once every process is gone and the fds are closed.
        """
        if self.state is SessionState.ENDED:
            return
        self._transition(SessionEvent.END)
        self._exit_status, self._exit_drain_budget = None, 0  # an exit still draining is moot
        self._stop_reading()
        self._fail_pending_input()
        self._stop_watching_child()
        self._send_final(reason, exit_status)
        self.ending = self._loop.create_task(self._end_processes(kill_grace))

    def _send_final(self, reason: EndReason, exit_status: tuple[Any, Any]) -> None:
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

    async def _end_processes(self, kill_grace: float) -> None:
        try:
            await ending.end_processes(self.process, kill_grace)
        finally:
            self._processes_ended = True
            if self._terminated is not None:
                self._terminated.set()

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
            "name": self.info.name,
            **({"recording": self.recorder.stats()} if self.recorder is not None else {}),
        }
