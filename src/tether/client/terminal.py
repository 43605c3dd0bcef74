"""The asyncio client: one logical terminal that survives any number of disconnects.

::

    async with tether.connect("ws://127.0.0.1:4001", project="web") as term:
        await term.send("ls\\r")
        async for chunk in term.output():
            ...

:class:`Terminal` resumes by ``offset`` after every lost connection (with ``create=0``, so a
session that is gone raises :class:`~tether.errors.SessionEnded` instead of being silently
replaced), keeps unacknowledged input and re-sends exactly what the server has not written
(docs/protocol.md, section 4), honours every close code (section 6) and follows the reconnection
policy of
:mod:`tether.protocol.policy` (section 7). The protocol itself (position, input ledger, queries,
checks of what the server sends) is :class:`tether.protocol.client.ClientProtocol`; this module is
its asyncio I/O. A server that breaks the protocol (a malformed frame) gets its connection closed
with 1002, and the terminal resumes as after any lost connection. The first connect is not
retried: its failure raises :class:`~tether.errors.ConnectFailed` (or ``SessionEnded`` for a stop
code) from ``open()``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import secrets
from collections.abc import AsyncIterator, Callable, Generator
from types import TracebackType
from typing import Any

import aiohttp

from tether.client.events import (
    ClientEvent,
    Connected,
    Disconnected,
    EventListener,
    Exited,
    Gap,
    Latency,
    Resized,
    ServerError,
)
from tether.client.problems import unreachable
from tether.client.urls import (
    auth_headers,
    describe_error,
    fetch_json,
    fetch_projects,
    http_url,
    websocket_url,
)
from tether.errors import ClientError, ConnectFailed, RemoteProtocolError, SessionEnded
from tether.protocol.client import (
    PROTOCOL_ERROR,
    Attached,
    ClientOptions,
    ClientProtocol,
    ClientState,
)
from tether.protocol.codes import CloseCode, is_stop_code
from tether.protocol.messages import MAX_COLS, MAX_ROWS, SUBPROTOCOL, Exit, Pong, Rejected, Resize
from tether.protocol.policy import PolicyEvent, ReconnectPolicy, State

__all__ = [
    "ClientEvent",
    "Connected",
    "Disconnected",
    "Exited",
    "Gap",
    "Latency",
    "Resized",
    "ServerError",
    "Terminal",
    "connect",
    "fetch_json",
    "fetch_projects",
    "http_url",
    "websocket_url",
]

CONNECT_TIMEOUT = 10.0
PING_INTERVAL = 25.0
SCREEN_RESET = b"\x1bc"
_ENDED = (aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)


class _OutputBuffer:
    """Output chunks between the connection and ``output()``: bounded, closable, never lossy."""

    def __init__(self, limit: int) -> None:
        self._items: collections.deque[tuple[bool, bytes]] = collections.deque()
        self._limit = limit
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self.is_closed = False

    async def put(self, is_stream: bool, data: bytes) -> None:
        """Queue a chunk, waiting while the buffer is full (so the server slows down)."""
        await self._writable.wait()
        self._items.append((is_stream, data))
        self._readable.set()
        if len(self._items) >= self._limit:
            self._writable.clear()

    async def get(self) -> tuple[bool, bytes] | None:
        """The next chunk; None once closed and drained."""
        while not self._items:
            if self.is_closed:
                return None
            self._readable.clear()
            await self._readable.wait()
        self._writable.set()
        return self._items.popleft()

    def close(self) -> None:
        """No more chunks will come; wake every waiter."""
        self.is_closed = True
        self._readable.set()
        self._writable.set()


def new_client_id() -> str:
    """A random client id (docs/protocol.md, section 1)."""
    return "py_" + secrets.token_hex(12)


# --------------------------------------------------------------------------------- terminal
class Terminal:
    """One logical terminal session; create it with :func:`connect`.

    ``output()`` yields the session's output stream exactly (no loss, no repetition) across
    reconnects, unless the server reports a :class:`Gap`. Input given to :meth:`send` is written
    exactly once. Use as ``async with connect(...) as term`` or ``term = await connect(...)``.
    A terminal that stops on its own (the shell exited, a stop code) releases its connection
    and HTTP session; otherwise :meth:`close` does.
    """

    def __init__(
        self,
        url: str,
        *,
        project: str,
        session: str | None = None,
        client_id: str | None = None,
        cols: int = 80,
        rows: int = 24,
        token: str | None = None,
        create: bool = True,
        offset: int | None = None,
        time_scale: float = 1.0,
        jitter: float = 0.0,
        connect_timeout: float = CONNECT_TIMEOUT,
        ping_interval: float | None = PING_INTERVAL,
        output_chunks: int = 1024,
        policy: ReconnectPolicy | None = None,
    ) -> None:
        self.url = websocket_url(url)
        self.project = project
        self.client_id = client_id or new_client_id()
        self.protocol = ClientProtocol(
            ClientOptions(project, session, self.client_id, (cols, rows), create, offset, token)
        )
        self.policy = policy or ReconnectPolicy(time_scale=time_scale, jitter=jitter)
        self.hello: dict[str, Any] = {}
        self.latency: float | None = None
        self.exit_status: Exited | None = None
        self.ended: SessionEnded | None = None
        self._token = token
        self._connect_timeout, self._ping_interval = connect_timeout, ping_interval
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._runner: asyncio.Task[None] | None = None
        self._send_lock = asyncio.Lock()
        self._output = _OutputBuffer(output_chunks)
        self._listeners: list[EventListener] = []
        self._pongs: dict[float, asyncio.Future[float]] = {}
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()  # set (and replaced) on every event
        self._closing = False
        self.policy.add_listener(self._emit)

    # -- what the protocol knows -----------------------------------------------------------------

    @property
    def session_id(self) -> str | None:
        """The canonical session id (from the last hello), or the one asked for before."""
        return self.protocol.session_id

    @property
    def key(self) -> str | None:
        """The composite key ``session:project`` once a hello came."""
        return self.protocol.key

    @property
    def position(self) -> int:
        """Output bytes of the session's stream received so far (the resume offset)."""
        return self.protocol.position

    @property
    def cols(self) -> int:
        return (self.protocol.size or (80, 24))[0]

    @property
    def rows(self) -> int:
        return (self.protocol.size or (80, 24))[1]

    @property
    def unacknowledged(self) -> int:
        """Input bytes sent but not yet acknowledged by the server."""
        return self.protocol.unacknowledged

    @property
    def input_acked(self) -> int:
        """Input bytes of this client id the server has written to the terminal."""
        return self.protocol.input_acked

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> Terminal:
        """Make the first connection (not retried) and start keeping the terminal alive."""
        self._http = aiohttp.ClientSession()
        try:
            ws = await self._attempt()
        except ClientError as exc:
            self.policy.stop(self._now(), getattr(exc, "code", None), getattr(exc, "reason", ""))
            self.protocol.close()
            await self._http.close()
            raise
        self.policy.on_connected(self._now())
        self._runner = asyncio.create_task(self._run(ws), name=f"tether-client-{self.client_id}")
        return self

    def __await__(self) -> Generator[Any, None, Terminal]:
        return self.open().__await__()

    async def __aenter__(self) -> Terminal:
        return await self.open() if self._http is None else self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self, code: int = CloseCode.NORMAL, reason: str = "client closed") -> None:
        """Close the connection (1000) and stop reconnecting.

        The session itself stays on the server, detached, until its idle timeout: the protocol
        has no client message that ends a session (end the shell with ``exit`` to end it).
        """
        self._closing = True
        self.protocol.close()
        self.policy.stop(self._now(), code, reason)
        ws = self._ws
        if ws is not None and not ws.closed:
            with contextlib.suppress(Exception):
                await ws.close(code=code, message=reason.encode())
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        self._finish()
        await self._release()

    async def _release(self) -> None:
        """Close the HTTP session (idempotent), so nothing is left for the garbage collector."""
        if self._http is not None:
            await self._http.close()

    async def detach(self) -> tuple[str | None, int]:
        """Leave the session running on the server; returns (session id, position) to resume."""
        await self.close(reason="client detached")
        return self.session_id, self.position

    async def wait_closed(self) -> SessionEnded | None:
        """Wait until the terminal stops for good; the SessionEnded that stopped it, if any."""
        if self._runner is not None:
            await asyncio.gather(self._runner, return_exceptions=True)
        return self.ended

    @property
    def state(self) -> State:
        """The reconnection state (see :class:`tether.protocol.policy.State`)."""
        return self.policy.state

    @property
    def is_connected(self) -> bool:
        """True while a connection with a hello is up."""
        return self.policy.state is State.CONNECTED

    def reconnect_now(self) -> bool:
        """A user action: attempt now (a half-open trial while the breaker is open)."""
        started = self.policy.reconnect_now(self._now())
        self._wake.set()
        return started

    # -- input -------------------------------------------------------------------------------

    async def send(self, data: str | bytes) -> None:
        """Type ``data`` (str is UTF-8 encoded); kept until acknowledged, written exactly once.

        After :meth:`close` input goes nowhere (it is dropped)."""
        payload = data.encode() if isinstance(data, str) else bytes(data)
        self._raise_if_ended()
        if self.protocol.state is ClientState.ENDED:
            return
        self.protocol.send_input(payload)
        await self._flush()

    async def resize(self, cols: int, rows: int) -> None:
        """Resize the terminal (also applied on every reconnect); clamped to 1000×500."""
        if self.protocol.state is ClientState.ENDED:
            return
        self.protocol.send_resize(min(max(cols, 1), MAX_COLS), min(max(rows, 1), MAX_ROWS))
        await self._flush()

    async def ping(self, timeout: float = 10.0) -> float:
        """Measure the round trip of an application ``ping`` (seconds)."""
        if self._ws is None or self.protocol.state is not ClientState.ATTACHED:
            raise ConnectFailed("not connected")
        stamp = self._now()
        while stamp in self._pongs:
            stamp += 1e-6
        future = self._pongs[stamp] = asyncio.get_running_loop().create_future()
        try:
            self.protocol.send_ping(stamp)
            await self._flush()
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pongs.pop(stamp, None)

    # -- output and events ---------------------------------------------------------------------

    async def output(self, *, screen: bool = False) -> AsyncIterator[bytes]:
        """The output stream, chunk by chunk, until the terminal stops.

        Raises SessionEnded at the end when a stop code ended the session. With ``screen=True``
        the screen-restore bytes are interleaved where they belong (a reset on a gap, then the
        hello's ``restore``), ready to write to a real terminal; they are not stream bytes.
        One consumer at a time.
        """
        while (item := await self._output.get()) is not None:
            is_stream, data = item
            if is_stream or screen:
                yield data
        self._raise_if_ended()

    async def read_until(self, needle: bytes, timeout: float = 10.0) -> bytes:
        """Read output until ``needle`` appears; returns everything read (stream bytes)."""
        seen = bytearray()
        async with asyncio.timeout(timeout):
            async for chunk in self.output():
                seen += chunk
                if needle in seen:
                    return bytes(seen)
        raise ConnectFailed(f"output ended before {needle!r}")

    def add_listener(self, listener: EventListener) -> Callable[[], None]:
        """Call ``listener`` on every event; returns a function that removes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    async def events(self) -> AsyncIterator[ClientEvent]:
        """Every event from now on (policy state changes, hellos, gaps, …) until the end."""
        if self.policy.state is State.STOPPED:
            return
        queue: asyncio.Queue[ClientEvent] = asyncio.Queue()
        remove = self.add_listener(queue.put_nowait)
        try:
            while True:
                event = await queue.get()
                yield event
                if isinstance(event, PolicyEvent) and event.state is State.STOPPED:
                    return
        finally:
            remove()

    async def wait_connected(self, timeout: float = 30.0) -> None:
        """Wait until a connection is up (raises SessionEnded if the terminal stopped)."""
        async with asyncio.timeout(timeout):
            while not self.is_connected:
                self._raise_if_ended()
                if self.state is State.STOPPED:
                    raise ConnectFailed("terminal closed")
                await self._changed.wait()

    # -- connecting --------------------------------------------------------------------------

    async def _attempt(self) -> aiohttp.ClientWebSocketResponse:
        """One connect attempt up to its hello; raises ConnectFailed or SessionEnded."""
        assert self._http is not None
        query = self.protocol.start_connect()
        deadline = self._now() + self._connect_timeout
        try:
            async with asyncio.timeout_at(deadline):
                ws = await self._http.ws_connect(
                    self.url,
                    params=query,
                    protocols=(SUBPROTOCOL,),
                    headers=auth_headers(self._token),
                    heartbeat=self._ping_interval,
                    timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
                    max_msg_size=0,
                )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self.protocol.connection_lost(CloseCode.ABNORMAL, describe_error(exc))
            raise ConnectFailed(unreachable(self.url, describe_error(exc))) from exc
        try:
            attached = await self._receive_hello(ws, deadline)
        except ClientError:
            with contextlib.suppress(Exception):
                await ws.close()
            raise
        await self._accept(ws, attached)
        return ws

    async def _receive_hello(
        self, ws: aiohttp.ClientWebSocketResponse, deadline: float
    ) -> Attached:
        """The first frame must be a valid hello; anything else fails the attempt."""
        try:
            async with asyncio.timeout_at(deadline):
                message = await ws.receive()
        except TimeoutError:
            self.protocol.connection_lost(CloseCode.ABNORMAL, "no hello in time")
            raise ConnectFailed(f"no hello from {self.url} in time", CloseCode.ABNORMAL) from None
        if message.type is aiohttp.WSMsgType.CLOSE:
            code, reason = int(message.data), str(message.extra or "")
            self.protocol.connection_lost(code, reason)
            if is_stop_code(code):
                raise SessionEnded(code, reason)
            raise ConnectFailed(f"refused by {self.url}: {code} {reason}", code, reason)
        if self._closing:
            self.protocol.connection_lost(CloseCode.NORMAL, "client closed")
            raise ConnectFailed("the terminal was closed", CloseCode.NORMAL)
        try:
            if message.type is aiohttp.WSMsgType.TEXT:
                received = self.protocol.receive_text(message.data)
                assert isinstance(received, Attached)  # the protocol accepts only a hello here
                return received
            if message.type is aiohttp.WSMsgType.BINARY:
                self.protocol.receive_output(message.data)  # raises: output before the hello
        except RemoteProtocolError as exc:
            self.protocol.connection_lost(PROTOCOL_ERROR, exc.reason)
            with contextlib.suppress(Exception):
                await ws.close(code=PROTOCOL_ERROR, message=exc.reason.encode())
            raise ConnectFailed(
                f"bad hello from {self.url}: {exc.reason}", PROTOCOL_ERROR, exc.reason
            ) from exc
        self.protocol.connection_lost(CloseCode.ABNORMAL, "connection lost")
        raise ConnectFailed(f"no hello from {self.url}", CloseCode.ABNORMAL)

    async def _accept(self, ws: aiohttp.ClientWebSocketResponse, attached: Attached) -> None:
        """Surface a hello: gap, screen restore; then re-send the input still unacknowledged."""
        self.hello = attached.hello.to_wire()
        if attached.gap is not None:
            await self._output.put(False, SCREEN_RESET)
            self._emit(Gap(*attached.gap))
        if attached.hello.restore:
            await self._output.put(False, attached.hello.restore.encode())
        self._ws = ws
        await self._flush()
        self._emit(Connected(self.hello, attached.resumed))

    # -- the connection loop -----------------------------------------------------------------

    async def _run(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Serve connections until a stop code, a give-up, or close()."""
        current: aiohttp.ClientWebSocketResponse | None = ws
        try:
            while current is not None:
                code, reason = await self._serve(current)
                self._ws = None
                if self._closing:
                    break
                self.protocol.connection_lost(code, reason)
                self._emit(Disconnected(code, reason))
                self.policy.on_lost(self._now(), code, reason)
                if self.policy.state is State.STOPPED:
                    self.ended = SessionEnded(code, reason)
                    break
                current = await self._reconnect()
        finally:
            self._ws = None
            self._finish()
            if not self._closing:  # it stopped on its own (the shell exited, …): release it all
                await self._release()

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse) -> tuple[int, str]:
        """Read one connection until it ends; its close code (1006 without a close frame).

        A frame that breaks the protocol closes the connection with 1002 (then resume)."""
        pinger = asyncio.create_task(self._ping_loop())
        try:
            while True:
                message = await ws.receive()
                if self._closing:  # close() ended the protocol: what still arrives is not ours
                    return CloseCode.NORMAL, "client closed"
                if message.type is aiohttp.WSMsgType.BINARY:
                    self.protocol.receive_output(message.data)
                    await self._output.put(True, message.data)
                elif message.type is aiohttp.WSMsgType.TEXT:
                    self._receive_text(message.data)
                elif message.type is aiohttp.WSMsgType.CLOSE:
                    return int(message.data), str(message.extra or "")
                elif message.type in _ENDED:
                    return CloseCode.ABNORMAL, "connection lost"
        except RemoteProtocolError as exc:
            with contextlib.suppress(Exception):
                await ws.close(code=PROTOCOL_ERROR, message=exc.reason.encode())
            return PROTOCOL_ERROR, exc.reason
        finally:
            pinger.cancel()
            with contextlib.suppress(Exception):
                await ws.close()

    async def _reconnect(self) -> aiohttp.ClientWebSocketResponse | None:
        """Follow the policy until a connection is up (None when reconnection stopped)."""
        while not self._closing:
            state = self.policy.state
            if state is State.STOPPED:
                return None
            if state in (State.WAITING, State.OPEN):
                await self._sleep_until(self.policy.retry_at)
                self.policy.on_timer(self._now())
                continue
            try:
                ws = await self._attempt()
            except (SessionEnded, ConnectFailed) as exc:
                if self._closing:
                    return None
                if isinstance(exc, SessionEnded):
                    self.ended = exc
                self.policy.on_attempt_failed(self._now(), exc.code, exc.reason)
                continue  # a stop code left the policy STOPPED: the loop ends
            if self._closing:
                await ws.close()
                return None
            self.policy.on_connected(self._now())
            return ws
        return None

    async def _sleep_until(self, deadline: float | None) -> None:
        self._wake.clear()
        delay = 0.0 if deadline is None else max(0.0, deadline - self._now())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), delay)

    async def _ping_loop(self) -> None:
        while self._ping_interval:
            await asyncio.sleep(self._ping_interval)
            with contextlib.suppress(ClientError, TimeoutError):
                self.latency = await self.ping(timeout=self._ping_interval)
                self._emit(Latency(self.latency))

    # -- receiving -----------------------------------------------------------------------------

    def _receive_text(self, text: str) -> None:
        received = self.protocol.receive_text(text)  # the ledger and size are updated there
        if isinstance(received, Pong):
            self._receive_pong(received.t)
        elif isinstance(received, Resize):
            self._emit(Resized(received.cols, received.rows))
        elif isinstance(received, Exit):
            self.exit_status = Exited(received.code, received.signal)
            self._emit(self.exit_status)
        elif isinstance(received, Rejected):
            self._emit(ServerError(received.code, received.message))

    def _receive_pong(self, stamp: float | int) -> None:
        future = self._pongs.get(stamp)
        if future is not None and not future.done():
            future.set_result(self._now() - float(stamp))

    # -- helpers -------------------------------------------------------------------------------

    async def _flush(self) -> None:
        """Write what the protocol queued, in order, on the current connection.

        Without a connection the frames stay queued until the protocol drops them. A failed
        write is harmless: input stays held and is re-sent after the next hello.
        """
        async with self._send_lock:
            ws = self._ws
            if ws is None:
                return
            with contextlib.suppress(aiohttp.ClientError, OSError, RuntimeError):
                for frame in self.protocol.frames_to_send():
                    if isinstance(frame, bytes):
                        await ws.send_bytes(frame)
                    else:
                        await ws.send_str(frame)

    def _emit(self, event: ClientEvent) -> None:
        for listener in list(self._listeners):
            listener(event)
        self._changed.set()
        self._changed = asyncio.Event()

    def _finish(self) -> None:
        self._output.close()

    def _raise_if_ended(self) -> None:
        if self.ended is not None:
            raise self.ended

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()


def connect(url: str, *, project: str, **options: Any) -> Terminal:
    """A :class:`Terminal` for ``project`` at ``url``; see Terminal for the options.

    Use ``async with connect(url, project=...) as term`` or ``term = await connect(...)``.
    """
    return Terminal(url, project=project, **options)
