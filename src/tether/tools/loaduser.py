"""The load tools' client side: a lean connection and a simulated user whose stream is verifiable.

- :class:`Wire`: one connection to ``/ws/terminal`` (hello, then frames); no reconnection policy,
  little overhead, so that thousands of them fit in one process.
- :class:`TypingUser`: a user typing into its own session. Its shell runs ``exec cat`` behind a
  marker, so everything after the marker is a pure function of what the user typed: each
  keystroke is echoed once by the terminal, and each Enter adds ``\\r\\n`` and the line again
  (``cat``). Every output byte is compared with that expectation as it arrives, so a lost or
  doubled output byte *or* keystroke shows at once. The user resumes by offset with its client id
  after every cut (re-sending only unacknowledged input); at the end a fresh connection replays the
  session from offset 0 and must match the user's transcript byte for byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import secrets
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import aiohttp

from tether.client import websocket_url
from tether.protocol.codes import CloseCode, is_stop_code
from tether.tools.loadkit import Recorder

SUBPROTOCOL = "tether.v1"
MARKER = b"__TETHER_LOAD_READY__\r\n"
SETUP_COMMAND = b"echo __TETHER_LOAD_''READY__; exec cat\r"
LETTERS = "abcdefghijklmnopqrstuvwxyz0123456789"
CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True)
class Refused:
    """A connect that got no hello: the close code (1006 without one) and reason."""

    code: int
    reason: str


def new_http(token: str | None = None) -> aiohttp.ClientSession:
    """A client session without aiohttp's default limit of 100 connections.

    With ``token`` every request (and WebSocket upgrade) carries ``Authorization: Bearer``.
    """
    headers = {"Authorization": f"Bearer {token}"} if token else None
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    return aiohttp.ClientSession(connector=connector, headers=headers)


class Wire:
    """One WebSocket connection to ``/ws/terminal`` after its hello."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, hello: dict[str, Any]) -> None:
        self.ws = ws
        self.hello = hello
        self.position = int(hello["replay_from"])

    @classmethod
    async def open(
        cls,
        http: aiohttp.ClientSession,
        url: str,
        params: dict[str, str],
        timeout: float = CONNECT_TIMEOUT,
    ) -> Wire | Refused:
        """Connect and read the hello; a refusal (or no hello in time) is returned, not raised."""
        try:
            async with asyncio.timeout(timeout):
                ws = await http.ws_connect(
                    url, params=params, protocols=(SUBPROTOCOL,), max_msg_size=0, autoping=True
                )
                first = await ws.receive()
        except (aiohttp.ClientError, OSError, TimeoutError, RuntimeError) as exc:
            return Refused(int(CloseCode.ABNORMAL), str(exc) or type(exc).__name__)
        if first.type is aiohttp.WSMsgType.TEXT:
            hello = json.loads(first.data)
            if hello.get("type") == "hello":
                return cls(ws, hello)
        code = int(first.data) if first.type is aiohttp.WSMsgType.CLOSE else CloseCode.ABNORMAL
        await ws.close()
        return Refused(int(code), str(first.extra or ""))

    async def receive(self) -> bytes | dict[str, Any] | Refused:
        """The next output chunk, control message, or how the connection ended."""
        message = await self.ws.receive()
        if message.type is aiohttp.WSMsgType.BINARY:
            self.position += len(message.data)
            return bytes(message.data)
        if message.type is aiohttp.WSMsgType.TEXT:
            decoded: dict[str, Any] = json.loads(message.data)
            return decoded
        if message.type is aiohttp.WSMsgType.CLOSE:
            return Refused(int(message.data), str(message.extra or ""))
        return Refused(self.ws.close_code or int(CloseCode.ABNORMAL), "connection lost")

    async def send(self, data: bytes) -> bool:
        """Send input; False when the connection is already gone."""
        try:
            await self.ws.send_bytes(data)
        except (aiohttp.ClientError, OSError, RuntimeError):
            return False
        return True

    def abort(self) -> None:
        """Drop the TCP connection without a close frame (what a network failure looks like)."""
        connection = getattr(self.ws, "_conn", None)  # aiohttp keeps no public handle on it
        transport = getattr(connection, "transport", None)
        if transport is not None:
            transport.abort()

    async def close(self, code: int = 1000) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(code=code), 5)


def session_id() -> str:
    """A fresh current-format session id (docs/protocol.md, section 1)."""
    random_part = "".join(secrets.choice(LETTERS) for _ in range(20))
    return f"session_{int(time.time() * 1000)}_{random_part}"


def client_id() -> str:
    return "load_" + secrets.token_hex(10)


# ------------------------------------------------------------------------ the verified user
class UserFailed(Exception):
    """The user cannot go on (a stop code, a session that is gone, a timeout)."""


class TypingUser:
    """A user typing into ``cat`` in its own session; see the module docstring.

    ``abort()``/``close()`` cut the connection; the receive task then resumes at once by offset
    with ``create=0`` and this client id, re-sending input the server has not acknowledged.
    """

    def __init__(
        self,
        http: aiohttp.ClientSession,
        url: str,
        project: str,
        recorder: Recorder,
        *,
        rng: random.Random | None = None,
        session: str | None = None,
    ) -> None:
        self.http, self.url, self.project, self.recorder = (
            http,
            websocket_url(url),
            project,
            recorder,
        )
        self.rng = rng or random.Random()
        self.session = session or session_id()
        self.client = client_id()
        self.transcript = bytearray()  # the whole stream from position 0
        self.expected = bytearray()  # what must follow the marker
        self.marker_end: int | None = None
        self.verified = 0  # bytes after the marker checked against ``expected``
        self.pending = bytearray()  # input not yet acknowledged, from byte ``acked`` on
        self.acked = self.sent = 0
        self.failed: str | None = None
        self.exit_code: int | None = None
        self.wire: Wire | None = None
        self.reconnecting = False
        self._progress = asyncio.Event()
        self._echoes: deque[tuple[int, float]] = deque()
        self._reader: asyncio.Task[None] | None = None
        self._finishing = False
        self._line = bytearray()
        self._resumer: asyncio.Task[None] | None = None

    @property
    def position(self) -> int:
        return len(self.transcript)

    @property
    def is_connected(self) -> bool:
        return self.wire is not None and not self.reconnecting

    # -- connecting ------------------------------------------------------------------------
    def _params(self, resume: bool) -> dict[str, str]:
        params = {"project": self.project, "session": self.session, "client": self.client}
        if resume:
            params |= {"offset": str(self.position), "create": "0"}
        return params

    async def start(self) -> None:
        """Create the session; record connect latency (to the first byte); start ``cat``."""
        started = time.perf_counter()
        result = await Wire.open(self.http, self.url, self._params(resume=False))
        if isinstance(result, Refused):
            self.recorder.close_codes[result.code] += 1
            raise UserFailed(f"connect refused: {result.code} {result.reason}")
        self.recorder.count("sessions_created" if result.hello["created"] else "sessions_joined")
        self._attach(result)
        await self.wait_for(lambda: self.position > 0, 10, "the first byte")
        self.recorder.latency("connect", time.perf_counter() - started)
        await self.send(SETUP_COMMAND, track=False)
        await self.wait_for(lambda: self.marker_end is not None, 15, "the ready marker")

    def _attach(self, wire: Wire) -> None:
        self.wire = wire
        self._reader = asyncio.create_task(self._read(wire))

    async def resume(self) -> None:
        """Reconnect by offset until a hello (immediate retries, then backoff); or fail."""
        for attempt in range(1, 8):
            self.recorder.count("reconnect_attempts")
            started = time.perf_counter()
            result = await Wire.open(self.http, self.url, self._params(resume=True))
            if isinstance(result, Wire):
                self.recorder.latency("reattach", time.perf_counter() - started)
                self.recorder.count("reconnect_successes")
                await self._receive_hello(result)
                return
            self.recorder.close_codes[result.code] += 1
            if is_stop_code(result.code):
                raise UserFailed(f"resume refused: {result.code} {result.reason}")
            await asyncio.sleep(min(2 ** (attempt - 1), 30) * (0.5 + self.rng.random()) / 4)
        raise UserFailed("resume failed 7 times")

    async def _receive_hello(self, wire: Wire) -> None:
        hello = wire.hello
        if hello["replay_from"] != self.position or hello["gap"]:
            self._fail(f"resume at {self.position} got replay_from={hello['replay_from']} gap")
        acked = int(hello["input_acked"])
        if acked < self.acked or acked > self.sent:
            self._fail(f"input_acked {acked} outside [{self.acked}, {self.sent}]")
        self._drop_acked(acked)
        self._attach(wire)
        self.reconnecting = False
        if self.pending:
            await wire.send(bytes(self.pending))

    async def cut(self, abrupt: bool = True) -> None:
        """Drop the connection (a network failure, or a clean close) and resume by offset."""
        wire = self.wire
        if wire is None or self.reconnecting or self._finishing:
            return
        self.reconnecting = True
        self._echoes.clear()
        if abrupt:
            wire.abort()
        else:
            await wire.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        await self.resume()

    # -- receiving -------------------------------------------------------------------------
    async def _read(self, wire: Wire) -> None:
        while True:
            item = await wire.receive()
            if isinstance(item, bytes):
                self._receive_output(item)
            elif isinstance(item, dict):
                self._receive_message(item)
            else:
                self._receive_close(item)
                return

    def _receive_output(self, data: bytes) -> None:
        start = len(self.transcript)
        self.transcript += data
        if self.marker_end is None:
            found = self.transcript.find(MARKER, max(0, start - len(MARKER)))
            if found >= 0:
                self.marker_end = found + len(MARKER)
        if self.marker_end is not None:
            self._verify()
        self._progress.set()

    def _verify(self) -> None:
        assert self.marker_end is not None
        received = self.transcript[self.marker_end + self.verified :]
        if not received or self.failed:
            return
        wanted = self.expected[self.verified : self.verified + len(received)]
        if received != wanted:
            where = self.marker_end + self.verified
            self._fail(
                f"stream differs at {where}: got {bytes(received)[:40]!r}, "
                f"expected {bytes(wanted)[:40]!r}"
            )
            return
        self.verified += len(received)
        now = time.perf_counter()
        while self._echoes and self._echoes[0][0] < self.verified:
            self.recorder.latency("echo", now - self._echoes.popleft()[1])

    def _receive_message(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "ack":
            self._drop_acked(int(message["input"]))
        elif kind == "exit":
            self.exit_code = message.get("code")
        elif kind == "error":
            self.recorder.error(f"{self.session}: server error message {message}")

    def _receive_close(self, closed: Refused) -> None:
        self.wire = None
        if self.reconnecting:
            return  # our own cut
        if self._finishing and closed.code == CloseCode.EXITED:
            self.recorder.count("clean_exits")
            self._progress.set()
            return
        self.recorder.close_codes[closed.code] += 1
        self.recorder.count("unexpected_closes")
        if is_stop_code(closed.code):
            self._fail(f"closed with stop code {closed.code} {closed.reason}")
            return
        self.reconnecting = True
        self._resumer = asyncio.get_running_loop().create_task(self._resume_after_loss())

    async def _resume_after_loss(self) -> None:
        try:
            await self.resume()
        except UserFailed as exc:
            self._fail(str(exc))

    def _drop_acked(self, acked: int) -> None:
        if acked > self.acked:
            del self.pending[: acked - self.acked]
            self.acked = acked

    def _fail(self, message: str) -> None:
        if self.failed is None:
            self.failed = message
            self.recorder.error(f"{self.session}: {message}")
        self._progress.set()

    # -- typing ----------------------------------------------------------------------------
    async def send(self, data: bytes, track: bool = True) -> None:
        """Type ``data``: kept until acknowledged; echo latency measured while connected."""
        echo_at = len(self.expected)  # the stream index (after the marker) of the first echo
        if track:
            self._expect_typed(data)
            self.recorder.count("keys", len(data))
        self.pending += data
        self.sent += len(data)
        if self.is_connected and self.wire is not None:
            if track:
                self._echoes.append((echo_at, time.perf_counter()))
            await self.wire.send(data)

    def _expect_typed(self, data: bytes) -> None:
        # The terminal echoes each key (Enter as \r\n); cat then prints the whole line.
        for char in data:
            if char == 13:
                self.expected += b"\r\n" + self._line + b"\r\n"
                self._line.clear()
            else:
                self.expected.append(char)
                self._line.append(char)

    async def type_line(self, length: int, pace: tuple[float, float], timeout: float = 30) -> None:
        """Type ``length`` random characters at ``pace`` seconds apart, Enter, await the output."""
        line = "".join(self.rng.choice(LETTERS) for _ in range(length)).encode()
        for char in line:
            await self.send(bytes((char,)))
            await asyncio.sleep(self.rng.uniform(*pace))
        await self.send(b"\r")
        await self.wait_for(lambda: self.verified >= len(self.expected), timeout, "a line's output")
        self.recorder.count("lines")

    async def wait_for(self, condition: Any, timeout: float, what: str) -> None:
        """Wait until ``condition()`` is true (raises UserFailed on timeout or failure)."""
        deadline = time.monotonic() + timeout
        while not condition():
            if self.failed:
                raise UserFailed(self.failed)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise UserFailed(f"timed out waiting for {what} at {self.position}")
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), min(remaining, 1.0))

    # -- the end ---------------------------------------------------------------------------
    async def verify_replay(self) -> bool:
        """A fresh connection replays the session from offset 0: it must equal our transcript."""
        params = {"project": self.project, "session": self.session, "offset": "0", "create": "0"}
        result = await Wire.open(self.http, self.url, params)
        if isinstance(result, Refused):
            self._fail(f"replay check refused: {result.code} {result.reason}")
            return False
        replay, start, head = (
            bytearray(),
            int(result.hello["replay_from"]),
            int(result.hello["head"]),
        )
        try:
            async with asyncio.timeout(15):
                while start + len(replay) < head:
                    item = await result.receive()
                    if isinstance(item, Refused):
                        break
                    if isinstance(item, bytes):
                        replay += item
        except TimeoutError:
            pass
        finally:
            await result.close()
        same = bytes(replay[: head - start]) == bytes(self.transcript[start:head])
        if not same:
            self._fail(f"replay from {start} to {head} differs from what the user received")
        return same

    async def finish(self, timeout: float = 15) -> None:
        """End ``cat`` (and so the shell) with ^D: the session ends with 4012."""
        if self.wire is None and not self.reconnecting:
            await self.resume()
        await self.wait_for(lambda: self.is_connected, timeout, "a connection to finish")
        self._finishing = True
        if self.pending:
            await self.wait_for(lambda: not self.pending, timeout, "input acknowledgement")
        if self.acked != self.sent:
            self._fail(f"{self.sent} bytes typed, {self.acked} acknowledged")
            raise UserFailed(str(self.failed))
        await self.send(b"\x04", track=False)
        await self.wait_for(lambda: self.wire is None, timeout, "the shell to exit")

    async def close(self) -> None:
        """Stop reading and close the connection (the session stays on the server)."""
        self._finishing = True
        if self._resumer is not None:
            self._resumer.cancel()
            await asyncio.gather(self._resumer, return_exceptions=True)
        wire, self.wire = self.wire, None
        if wire is not None:
            await wire.close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)


# ------------------------------------------------------------------------------- wire helpers
async def read_at_least(wire: Wire, count: int, timeout: float = 10) -> bytes:
    """Read output until at least ``count`` bytes (or the connection ends, or the timeout)."""
    data = bytearray()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while len(data) < count:
                item = await wire.receive()
                if isinstance(item, Refused):
                    break
                if isinstance(item, bytes):
                    data += item
    return bytes(data)


async def read_until(wire: Wire, needle: bytes, timeout: float) -> bytes:
    """Read output until ``needle`` appears; raises UserFailed if the connection ends first."""
    data = bytearray()
    async with asyncio.timeout(timeout):
        while needle not in data:
            item = await wire.receive()
            if isinstance(item, Refused):
                raise UserFailed(f"closed {item.code} before {needle!r}")
            if isinstance(item, bytes):
                data += item
    return bytes(data)


async def read_until_closed(wire: Wire, timeout: float) -> int | None:
    """Read until the connection closes; its close code (None on timeout, then closed)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while True:
                item = await wire.receive()
                if isinstance(item, Refused):
                    return item.code
    await wire.close()
    return None
