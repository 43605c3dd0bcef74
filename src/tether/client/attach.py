"""``tether attach``: bridge the local terminal to a session, like ``tmux attach`` over the network.

The local terminal is put in raw mode and always restored (even on errors); its size follows the
window (SIGWINCH); the :class:`~tether.client.terminal.Terminal` reconnects on its own and reports
what it does through ``status`` messages.

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from tether.client import ClientEvent, Connected, Disconnected, Exited, Gap, Terminal
from tether.errors import SessionEnded
from tether.protocol.policy import PolicyEvent, State

DETACH_PREFIX = 0x1C  # Ctrl-\
DETACH_KEY = ord("d")
REPLY_GRACE = 0.5  # seconds after a replay during which terminal answers are dropped
_TERMINAL_REPLY = re.compile(rb"\x1b\[\d+;\d+R|\x1b\[[?>][\d;]*c")

Status = Callable[[str], None]


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
    """How an attach ended: the user detached, the session ended, or input ran out."""

    reason: Literal["detached", "ended", "eof"]
    session_id: str | None
    ended: SessionEnded | None = None


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
    """The (cols, rows) of the terminal on ``fd``."""
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return default
    return (size.columns or default[0], size.lines or default[1])


class Attachment:
    """One attach: local terminal ⇄ Terminal until detach or the session's end."""

    def __init__(self, term: Terminal, stdin: int = 0, stdout: int = 1, status: Status = print):
        self.term = term
        self.stdin, self.stdout = stdin, stdout
        self.status = status
        self._keys = DetachKeyFilter()
        self._typed: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._done = asyncio.Event()
        self._detached = False
        self._replay_end = 0.0
        self._resizes: set[asyncio.Task[None]] = set()

    async def run(self) -> AttachResult:
        """Bridge until the user detaches or the session ends; the terminal mode is restored."""
        loop = asyncio.get_running_loop()
        remove = self.term.add_listener(self._on_event)
        with raw_mode(self.stdin):
            loop.add_reader(self.stdin, self._on_stdin)
            loop.add_signal_handler(signal.SIGWINCH, self._on_resize)
            tasks = [
                asyncio.create_task(self._pump_output()),
                asyncio.create_task(self._pump_input()),
            ]
            try:
                await self._done.wait()
            finally:
                loop.remove_reader(self.stdin)
                loop.remove_signal_handler(signal.SIGWINCH)
                remove()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        return await self._finish()

    async def _finish(self) -> AttachResult:
        ended = self.term.ended
        session_id = self.term.session_id
        if ended is not None:
            await self.term.close()
            return AttachResult("ended", session_id, ended)
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
            self._typed.put_nowait(payload)
        if detach:
            self._detached = True
            self._typed.put_nowait(None)

    def _replaying(self) -> bool:
        return self.term.position < int(self.term.hello.get("head", 0))

    async def _pump_input(self) -> None:
        while (data := await self._typed.get()) is not None:
            await self.term.send(data)
        self._done.set()

    async def _pump_output(self) -> None:
        try:
            async for chunk in self.term.output(screen=True):
                _write_all(self.stdout, chunk)
                if self._replaying():
                    self._replay_end = asyncio.get_running_loop().time() + REPLY_GRACE
        except SessionEnded:
            pass
        self._done.set()

    def _on_resize(self) -> None:
        cols, rows = window_size(self.stdout)
        task = asyncio.create_task(self.term.resize(cols, rows))
        self._resizes.add(task)
        task.add_done_callback(self._resizes.discard)

    def _on_event(self, event: ClientEvent) -> None:
        if isinstance(event, Connected):
            self._replay_end = asyncio.get_running_loop().time() + REPLY_GRACE
        message = describe(event)
        if message:
            self.status(message)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            continue
        view = view[written:]
