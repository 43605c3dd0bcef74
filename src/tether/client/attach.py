"""``tether attach``: bridge the local terminal to a session, like ``tmux attach`` over the network.

The local terminal is put in raw mode and always restored (even on errors), and so are the modes
the remote program set (alternate screen, mouse reporting, …: :mod:`tether.client.screen`); its
size follows the window (SIGWINCH); the :class:`~tether.client.terminal.Terminal` reconnects on
its own, and while it is down a status bar on the last row says what it does.

**Detach key: Ctrl-\\ then d.** The session stays on the server. Ctrl-\\ twice sends one Ctrl-\\;
Ctrl-\\ followed by anything else sends both keys.

While a replay is written (right after a hello) the local terminal answers the queries the replay
contains (cursor position, device attributes); those automatic answers are dropped instead of
being typed into the shell (docs/protocol.md, section 3).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import termios
import tty
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from tether.client import ClientEvent, Connected, Disconnected, Exited, Gap, Terminal
from tether.client.screen import LocalScreen
from tether.errors import SessionEnded
from tether.protocol.messages import MAX_COLS, MAX_ROWS
from tether.protocol.policy import PolicyEvent, State

DETACH_PREFIX = 0x1C  # Ctrl-\
DETACH_KEY = ord("d")
REPLY_GRACE = 0.5  # seconds after a replay during which terminal answers are dropped
STATUS_DELAY = 0.25  # seconds down before the status bar shows (a 1012 resume shows nothing)
NUDGE_DELAY = 0.05  # seconds between the two resizes of a redraw nudge (as the server's)
_TERMINAL_REPLY = re.compile(rb"\x1b\[\d+;\d+R|\x1b\[[?>][\d;]*c")


class DetachKeyFilter:
    """Pure: finds Ctrl-\\ d in typed bytes (across reads) and passes everything else on."""

    def __init__(self) -> None:
        self._armed = False

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """(bytes to send, detach requested); bytes after the detach key are dropped."""
        out = bytearray()
        for byte in data:
            if self._armed:
                self._armed = False
                if byte == DETACH_KEY:
                    return bytes(out), True
                out.append(DETACH_PREFIX)
                if byte != DETACH_PREFIX:
                    out.append(byte)
            elif byte == DETACH_PREFIX:
                self._armed = True
            else:
                out.append(byte)
        return bytes(out), False


def strip_terminal_replies(data: bytes) -> bytes:
    """Drop cursor-position reports and device-attribute answers from typed bytes."""
    return _TERMINAL_REPLY.sub(b"", data)


def describe(event: ClientEvent, now: datetime | None = None) -> str | None:
    """A one-line status for a UI ("reconnecting in 4 s"), or None for quiet events."""
    if isinstance(event, PolicyEvent):
        return _describe_policy(event, now or datetime.now())
    if isinstance(event, Gap):
        return f"{event.lost} bytes of output were lost while away"
    if isinstance(event, Exited):
        how = f"signal {event.signal}" if event.signal else f"status {event.code}"
        return f"the shell exited ({how})"
    if isinstance(event, Connected) and event.resumed:
        return "reconnected"
    if isinstance(event, Disconnected):
        return f"connection lost ({event.code}{' ' + event.reason if event.reason else ''})"
    return None


def _describe_policy(event: PolicyEvent, now: datetime) -> str | None:
    if event.state is State.WAITING:
        return f"reconnecting in {event.delay or 0:.3g} s (attempt {event.attempt})"
    if event.state is State.OPEN:
        until = now + timedelta(seconds=event.delay or 0)
        return f"paused: server unreachable, retrying at {until:%H:%M:%S}"
    if event.state is State.HALF_OPEN:
        return "trying the server again"
    return None


@dataclass(frozen=True)
class AttachResult:
    """How an attach ended: the user detached, the session ended, or input ran out;
    ``exit_status``: the shell's exit, when it was reported before the end."""

    reason: Literal["detached", "ended", "eof"]
    session_id: str | None
    ended: SessionEnded | None = None
    exit_status: Exited | None = None


@contextlib.contextmanager
def raw_mode(fd: int) -> Iterator[None]:
    """Put the terminal ``fd`` in raw mode (if it is one) and always restore it."""
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSAFLUSH, saved)


def window_size(fd: int, default: tuple[int, int] = (80, 24)) -> tuple[int, int]:
    """The (cols, rows) of the terminal on ``fd``, within the protocol's limits."""
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return default
    cols, rows = size.columns or default[0], size.lines or default[1]
    return (min(cols, MAX_COLS), min(rows, MAX_ROWS))


class Attachment:
    """One attach: local terminal ⇄ Terminal until detach or the session's end.

    Everything written to the local terminal goes through a :class:`LocalScreen`: the status bar
    shows on the last row while the connection is down (after ``STATUS_DELAY``, so a quick
    reconnect shows nothing) and, once it is back, is erased and the program nudged to repaint
    what it covered; leaving resets the modes the program set. Typing re-asserts this
    terminal's size when another client resized the session (the most recently active client
    sets the size, like tmux's ``window-size latest``).
    """

    def __init__(self, term: Terminal, stdin: int = 0, stdout: int = 1) -> None:
        self.term = term
        self.stdin, self.stdout = stdin, stdout
        self.screen = LocalScreen()
        self._keys = DetachKeyFilter()
        self._typed: asyncio.Queue[bytes | tuple[int, int] | None] = asyncio.Queue()
        self._done = asyncio.Event()
        self._detached = False
        self._replay_end = 0.0
        self._is_down = False
        self._status_text: str | None = None
        self._status_timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> AttachResult:
        """Bridge until the user detaches or the session ends; the terminal is restored."""
        loop = asyncio.get_running_loop()
        remove = self.term.add_listener(self._on_event)
        with raw_mode(self.stdin):
            loop.add_reader(self.stdin, self._on_stdin)
            loop.add_signal_handler(signal.SIGWINCH, self._on_resize)
            pumps = [
                asyncio.create_task(self._pump_output()),
                asyncio.create_task(self._pump_input()),
            ]
            try:
                await self._done.wait()
            finally:
                loop.remove_reader(self.stdin)
                loop.remove_signal_handler(signal.SIGWINCH)
                remove()
                if self._status_timer is not None:
                    self._status_timer.cancel()
                for task in [*pumps, *self._tasks]:
                    task.cancel()
                await asyncio.gather(*pumps, *self._tasks, return_exceptions=True)
                with contextlib.suppress(OSError):  # a terminal that went away needs nothing
                    self._write(self.screen.leave())
        return await self._finish()

    async def _finish(self) -> AttachResult:
        ended = self.term.ended
        session_id = self.term.session_id
        if ended is not None:
            await self.term.close()
            return AttachResult("ended", session_id, ended, self.term.exit_status)
        await self.term.detach()
        return AttachResult("detached" if self._detached else "eof", session_id)

    def _on_stdin(self) -> None:
        try:
            data = os.read(self.stdin, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._typed.put_nowait(None)
            return
        payload, detach = self._keys.feed(data)
        if asyncio.get_running_loop().time() < self._replay_end or self._replaying():
            payload = strip_terminal_replies(payload)
        if payload:
            size = window_size(self.stdout)
            if size != (self.term.cols, self.term.rows):
                self._typed.put_nowait(size)  # another client resized: this one is active now
            self._typed.put_nowait(payload)
        if detach:
            self._detached = True
            self._typed.put_nowait(None)

    def _replaying(self) -> bool:
        return self.term.position < int(self.term.hello.get("head", 0))

    async def _pump_input(self) -> None:
        while (item := await self._typed.get()) is not None:
            if isinstance(item, tuple):
                await self.term.resize(*item)
            else:
                await self.term.send(item)
        self._done.set()

    async def _pump_output(self) -> None:
        try:
            async for chunk in self.term.output(screen=True):
                self._write(self.screen.output(chunk))
                if self._replaying():
                    self._replay_end = asyncio.get_running_loop().time() + REPLY_GRACE
        except SessionEnded:
            pass
        self._done.set()

    def _on_resize(self) -> None:
        cols, rows = window_size(self.stdout)
        self._spawn(self.term.resize(cols, rows))
        if self.screen.status is not None:
            self._write(self.screen.show_status(self.screen.status, cols, rows))

    def _on_event(self, event: ClientEvent) -> None:
        if isinstance(event, Disconnected):
            self._connection_down()
        elif isinstance(event, Connected):
            self._connection_back(gap=int(event.hello.get("gap", 0)) > 0)
        message = describe(event)
        if message and self._is_down:
            self._status_text = message
            if self.screen.status is not None:
                self._draw_status()

    def _connection_down(self) -> None:
        self._is_down = True
        if self._status_timer is None:
            loop = asyncio.get_running_loop()
            self._status_timer = loop.call_later(STATUS_DELAY, self._draw_status)

    def _connection_back(self, gap: bool) -> None:
        self._replay_end = asyncio.get_running_loop().time() + REPLY_GRACE
        self._is_down = False
        if self._status_timer is not None:
            self._status_timer.cancel()
            self._status_timer = None
        if self.screen.status is not None:
            self._write(self.screen.hide_status())
            if not gap:  # after a gap the screen is reset and the server nudges on its own
                self._spawn(self._nudge_redraw())

    def _draw_status(self) -> None:
        self._status_timer = None
        if self._is_down and self._status_text:
            text = f"{self._status_text} - Ctrl-\\ d detaches"
            self._write(self.screen.show_status(text, *window_size(self.stdout)))

    async def _nudge_redraw(self) -> None:
        """Make the program repaint what the status bar covered: two resizes (SIGWINCHs)."""
        cols, rows = self.term.cols, self.term.rows
        await self.term.resize(cols, rows - 1 if rows > 1 else rows + 1)
        await asyncio.sleep(NUDGE_DELAY)
        await self.term.resize(cols, rows)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(self.stdout, view)
            except BlockingIOError:
                continue
            view = view[written:]
