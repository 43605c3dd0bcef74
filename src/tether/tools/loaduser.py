"""The load tools' client side: a lean connection and a simulated user whose stream is verifiable.

- :class:`Wire`: one connection to ``/ws/terminal`` (hello, then frames) over a
  :class:`~tether.protocol.client.ClientProtocol`, with no reconnection of its own and little
  overhead, so that thousands of them fit in one process. A frame that breaks the protocol ends
  the connection (1002), like any other close.
- :class:`TypingUser`: a user typing into its own session. Its shell runs ``exec cat`` behind a
  marker, so everything after the marker is a pure function of what the user typed: each
  keystroke is echoed once by the terminal, and each Enter adds ``\\r\\n`` and the line again
  (``cat``). Every output byte is compared with that expectation as it arrives, so a lost or
  doubled output byte *or* keystroke shows at once. The user resumes by offset with its client id
  after every cut (its protocol re-sends only unacknowledged input), on the schedule of the
  :class:`~tether.protocol.policy.ReconnectPolicy` every client follows; at the end a fresh
  connection replays the session from offset 0 and must match the user's transcript byte for byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import aiohttp

from tether.client import websocket_url
from tether.errors import RemoteProtocolError
from tether.protocol.client import (
    Attached,
    ClientOptions,
    ClientProtocol,
    ClientState,
)
from tether.protocol.codes import CloseCode
from tether.protocol.messages import SUBPROTOCOL, Ack, Exit, Hello, Pong, Rejected, Resize
from tether.protocol.policy import ReconnectPolicy, State
from tether.tools import figures
from tether.tools.loadkit import Recorder

MARKER = b"__TETHER_LOAD_READY__\r\n"
SETUP_COMMAND = b"echo __TETHER_LOAD_''READY__; exec cat\r"
LETTERS = "abcdefghijklmnopqrstuvwxyz0123456789"
CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True)
class Refused:
    """A connect that got no hello, or how a connection ended: the close code (1006 without
    one; 1002 when the server broke the protocol) and reason."""

    code: int
    reason: str


def new_http(token: str | None = None) -> aiohttp.ClientSession:
    """A client session without aiohttp's default limit of 100 connections.

    With ``token`` every request (and WebSocket upgrade) carries ``Authorization: Bearer``.
    """
    headers = {"Authorization": f"Bearer {token}"} if token else None
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    return aiohttp.ClientSession(connector=connector, headers=headers)


def options_from_query(params: Mapping[str, str]) -> ClientOptions:
    """The :class:`ClientOptions` whose first connect asks exactly for ``params``."""
    cols, rows = params.get("cols"), params.get("rows")
    offset = params.get("offset")
    return ClientOptions(
        project=params.get("project", ""),
        session=params.get("session"),
        client_id=params.get("client"),
        size=(int(cols), int(rows)) if cols and rows else None,
        create=params.get("create") not in ("0", "false"),
        offset=int(offset) if offset else None,
        token=params.get("token"),
    )


Received = bytes | Ack | Resize | Pong | Exit | Rejected | Refused


class Wire:
    """One WebSocket connection to ``/ws/terminal`` after its hello, over a ClientProtocol.

    The protocol may outlive the wire: a user resumes by opening the next wire with the same
    protocol (its query then asks for the position, with ``create=0``).
    """

    def __init__(
        self, ws: aiohttp.ClientWebSocketResponse, protocol: ClientProtocol, attached: Attached
    ) -> None:
        self.ws = ws
        self.protocol = protocol
        self.attached = attached
        self._ended: Refused | None = None
        self._send_lock = asyncio.Lock()

    @property
    def hello(self) -> Hello:
        return self.attached.hello

    @property
    def position(self) -> int:
        """The stream position after the last output byte received."""
        return self.protocol.position

    @classmethod
    async def open(
        cls,
        http: aiohttp.ClientSession,
        url: str,
        params: Mapping[str, str] | ClientProtocol,
        timeout: float = CONNECT_TIMEOUT,
    ) -> Wire | Refused:
        """Connect and read the hello; a refusal (or no valid hello in time) is returned.

        ``params`` is the first connect's query, or the protocol to connect (or resume) with.
        """
        protocol = params if isinstance(params, ClientProtocol) else None
        protocol = protocol or ClientProtocol(options_from_query(cast(Mapping[str, str], params)))
        query = protocol.start_connect()
        try:
            async with asyncio.timeout(timeout):
                ws = await http.ws_connect(
                    url, params=query, protocols=(SUBPROTOCOL,), max_msg_size=0, autoping=True
                )
                first = await ws.receive()
        except (aiohttp.ClientError, OSError, TimeoutError, RuntimeError) as exc:
            protocol.connection_lost(CloseCode.ABNORMAL, str(exc) or type(exc).__name__)
            return Refused(int(CloseCode.ABNORMAL), str(exc) or type(exc).__name__)
        if first.type is aiohttp.WSMsgType.TEXT:
            try:
                attached = protocol.receive_text(first.data)
            except RemoteProtocolError as exc:
                return await cls._refuse(ws, protocol, Refused(exc.code, exc.reason), exc.code)
            assert isinstance(attached, Attached)  # the protocol accepts only a hello first
            return cls(ws, protocol, attached)
        if first.type is aiohttp.WSMsgType.CLOSE:
            return await cls._refuse(ws, protocol, Refused(int(first.data), str(first.extra or "")))
        return await cls._refuse(ws, protocol, Refused(CloseCode.ABNORMAL, "no hello"))

    @staticmethod
    async def _refuse(
        ws: aiohttp.ClientWebSocketResponse,
        protocol: ClientProtocol,
        refused: Refused,
        code: int = CloseCode.NORMAL,
    ) -> Refused:
        protocol.connection_lost(refused.code, refused.reason)
        with contextlib.suppress(Exception):
            await ws.close(code=code, message=refused.reason.encode())
        return refused

    async def receive(self) -> Received:
        """The next output chunk, control message, or how the connection ended.

        A frame that breaks the protocol ends the connection (1002); unknown types are skipped.
        """
        while self._ended is None:
            message = await self.ws.receive()
            if message.type is aiohttp.WSMsgType.BINARY:
                self.protocol.receive_output(message.data)
                return bytes(message.data)
            if message.type is aiohttp.WSMsgType.TEXT:
                try:
                    received = self.protocol.receive_text(message.data)
                except RemoteProtocolError as exc:
                    await self.close(exc.code, exc.reason)
                    break
                if received is not None:
                    assert not isinstance(received, Attached)
                    return received
            elif message.type is aiohttp.WSMsgType.CLOSE:
                self._end(int(message.data), str(message.extra or ""))
            else:
                self._end(self.ws.close_code or int(CloseCode.ABNORMAL), "connection lost")
        assert self._ended is not None
        return self._ended

    async def send(self, data: bytes) -> bool:
        """Type ``data``: held by the protocol until acknowledged (re-sent after a resume) and
        written now; False when the connection is already gone."""
        if self.protocol.state is ClientState.ENDED:
            return False
        self.protocol.send_input(data)
        return await self.flush()

    async def flush(self) -> bool:
        """Write what the protocol queued (input re-sent after a hello, typed input), in order."""
        async with self._send_lock:
            try:
                for frame in self.protocol.frames_to_send():
                    if isinstance(frame, bytes):
                        await self.ws.send_bytes(frame)
                    else:
                        await self.ws.send_str(frame)
            except (aiohttp.ClientError, OSError, RuntimeError):
                return False
        return self._ended is None

    def abort(self) -> None:
        """Drop the TCP connection without a close frame (what a network failure looks like)."""
        self._end(CloseCode.ABNORMAL, "aborted by the client")
        connection = getattr(self.ws, "_conn", None)  # aiohttp keeps no public handle on it
        transport = getattr(connection, "transport", None)
        if transport is not None:
            transport.abort()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close with ``code``: 1000 ends the protocol too; a retry code (1001) lets it resume."""
        self._end(code, reason)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(code=code, message=reason.encode()), 5)

    def _end(self, code: int, reason: str) -> None:
        """The one place a wire reports its end to the protocol (once)."""
        if self._ended is None:
            self._ended = Refused(code, reason)
            if self.protocol.state in (ClientState.CONNECTING, ClientState.ATTACHED):
                self.protocol.connection_lost(code, reason)


def session_id() -> str:
    """A fresh current-format session id (docs/protocol.md, section 1)."""
    random_part = "".join(secrets.choice(LETTERS) for _ in range(20))
    return f"session_{int(time.time() * 1000)}_{random_part}"


def client_id() -> str:
    return "load_" + secrets.token_hex(10)


# ------------------------------------------------------------------------ the verified user
class UserFailed(Exception):
    """The user cannot go on (a stop code, a session that is gone, a timeout)."""


class StreamCheck:
    """A verified user's stream (module docstring): the whole stream from position 0, and what
    must follow the marker given what was typed, compared as output arrives."""

    def __init__(self) -> None:
        self.transcript = bytearray()  # the whole stream from position 0
        self.expected = bytearray()  # what must follow the marker
        self.marker_end: int | None = None
        self.verified = 0  # bytes after the marker checked against ``expected``
        self._line = bytearray()

    def _expect_typed(self, data: bytes) -> None:
        # The terminal echoes each key (Enter as \r\n); cat then prints the whole line.
        for char in data:
            if char == 13:
                self.expected += b"\r\n" + self._line + b"\r\n"
                self._line.clear()
            else:
                self.expected.append(char)
                self._line.append(char)

    def _check_output(self, data: bytes) -> str | None:
        """Output arrived: append it, compare what follows the marker; what differs, if any."""
        start = len(self.transcript)
        self.transcript += data
        if self.marker_end is None:
            found = self.transcript.find(MARKER, max(0, start - len(MARKER)))
            if found < 0:
                return None
            self.marker_end = found + len(MARKER)
        received = self.transcript[self.marker_end + self.verified :]
        wanted = self.expected[self.verified : self.verified + len(received)]
        if received != wanted:
            where = self.marker_end + self.verified
            got, want = bytes(received)[:40], bytes(wanted)[:40]
            return f"stream differs at {where}: got {got!r}, expected {want!r}"
        self.verified += len(received)
        return None


class TypingUser(StreamCheck):
    """A user typing into ``cat`` in its own session; see the module docstring.

    Its :class:`ClientProtocol` keeps the position and the input ledger across connections; its
    :class:`ReconnectPolicy` decides when to resume. :meth:`cut` drops the connection on purpose
    and resumes at once (a user's "reconnect now"); a connection lost otherwise is resumed on the
    policy's schedule, and the user fails when the policy stops or its breaker opens.
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
        time_scale: float = 1.0,
        urls: Sequence[str] = (),
    ) -> None:
        self.http, self.url, self.project, self.recorder = (
            http,
            websocket_url(url),
            project,
            recorder,
        )
        # Several nodes of one cluster: every (re)connection goes to a random one of them.
        self.urls = [websocket_url(other) for other in urls] or [self.url]
        self.rng = rng or random.Random()
        self.session = session or session_id()
        self.client = client_id()
        self.protocol = ClientProtocol(ClientOptions(project, self.session, self.client))
        self.policy = ReconnectPolicy(time_scale=time_scale)
        StreamCheck.__init__(self)
        self.sent = 0  # bytes typed
        self.failed: str | None = None
        self.exit_code: int | None = None
        self.wire: Wire | None = None
        self.reconnecting = False
        self._progress = asyncio.Event()
        self._echoes: deque[tuple[int, float]] = deque()
        self._reader: asyncio.Task[None] | None = None
        self._finishing = False
        self._resumer: asyncio.Task[None] | None = None

    @property
    def position(self) -> int:
        return len(self.transcript)

    @property
    def acked(self) -> int:
        """Typed bytes the server acknowledged."""
        return self.protocol.input_acked

    @property
    def pending(self) -> int:
        """Typed bytes not yet acknowledged."""
        return self.protocol.unacknowledged

    @property
    def is_connected(self) -> bool:
        return self.wire is not None and not self.reconnecting

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    # -- connecting ------------------------------------------------------------------------
    async def start(self) -> None:
        """Create the session; record its connect and first output (:mod:`.figures`); start
        ``cat``."""
        started = time.perf_counter()
        result = await Wire.open(self.http, self.rng.choice(self.urls), self.protocol)
        if isinstance(result, Refused):
            self.recorder.close_codes[result.code] += 1
            self.policy.stop(self._now(), result.code, result.reason)
            raise UserFailed(f"connect refused: {result.code} {result.reason}")
        hello_at = time.perf_counter()
        self.recorder.latency(figures.CONNECT, hello_at - started)
        self.policy.on_connected(self._now())
        self.recorder.count("sessions_created" if result.hello.created else "sessions_joined")
        self._attach(result)
        await self.wait_for(lambda: self.position > 0, 10, "the first byte")
        self.recorder.latency(figures.FIRST_OUTPUT, time.perf_counter() - hello_at)
        await self.send(SETUP_COMMAND, track=False)
        await self.wait_for(lambda: self.marker_end is not None, 15, "the ready marker")

    def _attach(self, wire: Wire) -> None:
        self.wire = wire
        self._reader = asyncio.create_task(self._read(wire))

    async def resume(self) -> None:
        """Reconnect by offset when the policy says so, until a hello; or fail."""
        while True:
            state = self.policy.state
            if state is State.STOPPED:
                raise UserFailed("resume stopped by a stop code")
            if state is State.OPEN:
                raise UserFailed(f"resume failed {self.policy.failures} times: breaker open")
            if state is State.WAITING:
                await asyncio.sleep(max(0.0, (self.policy.retry_at or 0.0) - self._now()))
                self.policy.on_timer(self._now())
                continue
            if state is State.CONNECTED:
                raise UserFailed("resume while connected")  # a bug of the caller
            await self._attempt_resume()
            if self.policy.state is State.CONNECTED:
                return

    async def _attempt_resume(self) -> None:
        self.recorder.count("reconnect_attempts")
        started = time.perf_counter()
        result = await Wire.open(self.http, self.rng.choice(self.urls), self.protocol)
        if isinstance(result, Refused):
            self.recorder.close_codes[result.code] += 1
            self.policy.on_attempt_failed(self._now(), result.code, result.reason)
            return
        self.policy.on_connected(self._now())
        self.recorder.latency(figures.REATTACH, time.perf_counter() - started)
        self.recorder.count("reconnect_successes")
        await self._receive_hello(result)

    async def _receive_hello(self, wire: Wire) -> None:
        hello, attached = wire.hello, wire.attached
        if hello.replay_from != self.position or hello.gap:
            self._fail(f"resume at {self.position} got replay_from={hello.replay_from} gap")
        if attached.rebased:
            self._fail(f"input_acked {hello.input_acked} is below what was acknowledged")
        self._attach(wire)
        self.reconnecting = False
        await wire.flush()  # the input the hello did not count

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
            await wire.close(CloseCode.GOING_AWAY, "cut by the load tool")
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        self.policy.on_lost(self._now(), CloseCode.ABNORMAL, "cut by the load tool")
        self.policy.reconnect_now(self._now())
        await self.resume()

    # -- receiving -------------------------------------------------------------------------
    async def _read(self, wire: Wire) -> None:
        while True:
            item = await wire.receive()
            if isinstance(item, bytes):
                self._receive_output(item)
            elif isinstance(item, Refused):
                self._receive_close(item)
                return
            else:
                self._receive_message(item)

    def _receive_output(self, data: bytes) -> None:
        problem = self._check_output(data)
        if problem:
            self._fail(problem)
        now = time.perf_counter()
        while self._echoes and self._echoes[0][0] < self.verified:
            self.recorder.latency(figures.ECHO, now - self._echoes.popleft()[1])
        self._progress.set()

    def _receive_message(self, message: Ack | Resize | Pong | Exit | Rejected) -> None:
        if isinstance(message, Ack):
            self._progress.set()  # the protocol dropped what it acknowledges
        elif isinstance(message, Exit):
            self.exit_code = message.code
        elif isinstance(message, Rejected):
            self.recorder.error(f"{self.session}: server error message {message}")

    def _receive_close(self, closed: Refused) -> None:
        self.wire = None
        if self.reconnecting:
            return  # our own cut
        if self.policy.state is State.CONNECTED:
            self.policy.on_lost(self._now(), closed.code, closed.reason)
        if self._finishing and closed.code == CloseCode.EXITED:
            self.recorder.count("clean_exits")
            self._progress.set()
            return
        self.recorder.close_codes[closed.code] += 1
        self.recorder.count("unexpected_closes")
        if self.policy.state is State.STOPPED:
            self._fail(f"closed with stop code {closed.code} {closed.reason}")
            return
        self.reconnecting = True
        self._resumer = asyncio.get_running_loop().create_task(self._resume_after_loss())

    async def _resume_after_loss(self) -> None:
        try:
            await self.resume()
        except UserFailed as exc:
            self._fail(str(exc))

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
        self.sent += len(data)
        wire = self.wire
        if self.is_connected and wire is not None:
            if track:
                self._echoes.append((echo_at, time.perf_counter()))
            await wire.send(data)
        elif self.protocol.state is not ClientState.ENDED:
            self.protocol.send_input(data)  # held: sent after the next hello

    async def type_line(self, length: int, pace: tuple[float, float], timeout: float = 30) -> None:
        """Type ``length`` random characters at ``pace`` seconds apart, Enter, await the output."""
        line = "".join(self.rng.choice(LETTERS) for _ in range(length)).encode()
        for char in line:
            await self.send(bytes((char,)))
            await asyncio.sleep(self.rng.uniform(*pace))
        await self.send(b"\r")
        await self.wait_for(lambda: self.verified >= len(self.expected), timeout, "a line's output")
        self.recorder.count("lines")

    async def wait_for(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
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
        replayer = ClientProtocol(ClientOptions(self.project, self.session, offset=0, create=False))
        result = await Wire.open(self.http, self.rng.choice(self.urls), replayer)
        if isinstance(result, Refused):
            self._fail(f"replay check refused: {result.code} {result.reason}")
            return False
        replay, start, head = bytearray(), result.hello.replay_from, result.hello.head
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
        self.protocol.close()
        self.policy.stop(self._now())


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
