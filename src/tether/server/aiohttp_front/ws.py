"""The aiohttp WebSocket front of ``/ws/terminal``: one :class:`TerminalConnection` per socket.

It implements the core's :class:`~tether.server.front.Front` (and so the session's
:class:`~tether.server.session.ClientSink`): a send task streams the ring from the client's
position (awaiting the socket's drain, which is what slows a fast program while this client
lags) and ends once the client has been caught up for :data:`SEND_LINGER` — an idle connection
holds no task, no event and no queue; a receive loop writes input and answers control messages;
and the server's heartbeat calls :meth:`TerminalConnection.heartbeat_tick`, which drops a peer
that leaves two pings unanswered (only a pong that answers one of our pings counts).

Every per-connection queue is bounded: control messages waiting for a client that does not read
(at most :data:`MAX_QUEUED_MESSAGES`, then the connection is dropped with 1008), input waiting
for the PTY (the session's backlog), and pongs to the client's pings (aiohttp's writer waits for
the socket, so the receive loop stops reading and TCP pushes back).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import socket
import time

from aiohttp import WSMsgType, web

from tether.errors import Refusal
from tether.protocol.codes import CloseCode, clip_reason
from tether.protocol.messages import SUBPROTOCOL, Input
from tether.server.acks import PingedFront
from tether.server.aiohttp_front import forward
from tether.server.aiohttp_front.context import client_address, server_of, upgrade_of
from tether.server.aiohttp_front.masking import require_masked_frames
from tether.server.cluster.placement import LOCAL, Route
from tether.server.core import Server
from tether.server.front import Upgrade
from tether.server.manager import Connection
from tether.server.session import Client, Session

# A send task that caught up waits this long for more before it ends (socket-layer time, on the
# loop's timer): a typing user keeps one task, an idle connection holds none.
SEND_LINGER = 0.5
_INPUT_BACKLOG = 256 * 1024


class TerminalConnection(PingedFront):
    """One client socket attached to one session.

    Slotted, and with its queue and send task made only when needed: thousands of these sit
    idle on a node (docs/benchmarks.md, "One node at its limits").
    """

    __slots__ = (
        "_close_sent",
        "_closing",
        "_corked",
        "_dropped",
        "_idle",
        "_ping_task",
        "_ready",
        "_replaying",
        "_sending",
        "address",
        "client",
        "request",
        "server",
        "session",
        "ws",
    )

    def __init__(
        self, server: Server, request: web.Request, ws: web.WebSocketResponse, address: str
    ) -> None:
        self.server = server
        self.request = request
        self.ws = ws
        self.address = address
        self.session: Session | None = None
        self.client: Client | None = None
        self._sending: asyncio.Task[None] | None = None  # runs while there is something to send
        self._idle: asyncio.Future[bool] | None = None  # what a caught-up send task waits on
        self._ready = False  # the hello went out: output may follow
        self._replaying = False
        self._closing: tuple[int, str] | None = None
        self._close_sent = False
        self._init_pings()
        self._dropped: int | None = None  # the code of a connection this side cut
        self._corked = False  # the upgrade response, hello and replay wait to go out as one
        self._init_acks()
        self._ping_task: asyncio.Future[None] | None = None

    # ---------------------------------------------------------------- Front (ClientSink)
    def wake(self) -> None:
        idle, self._idle = self._idle, None
        if idle is not None:  # a send task lingers: it goes on (even if its linger just ended)
            if not idle.done():
                idle.set_result(True)
        elif self._sending is None and self._ready and not self._close_sent:
            self._sending = asyncio.get_running_loop().create_task(self._send_pending())

    def close(self, code: int, reason: str) -> None:
        if self._closing is None:
            self._closing = (code, reason)
        self.wake()

    # ---------------------------------------------------------------- lifecycle
    async def run(self, upgrade: Upgrade | None = None, claimed: str | None = None) -> None:
        # Admit (and start the shell) before answering the upgrade: the shell then starts up on
        # the other core while the upgrade response and the hello are written.
        # perf_counter, not the server's clock: this is a latency of the socket layer.
        started = time.perf_counter()
        transport = self.request.transport
        if transport is None or transport.is_closing():
            # The client gave up on this attempt while it waited (a herd on a busy node) and has
            # likely tried again: attaching it now would replace its newer connection (4009).
            return
        upgrade = upgrade or upgrade_of(self.request)
        try:
            connection = self.server.admit(self, upgrade, claimed=claimed)
        except Refusal as refusal:
            await self.ws.prepare(self.request)
            await self.ws.close(code=refusal.code, message=refusal.reason.encode())
            return
        self.session, self.client = connection.session, connection.attach.client
        # Corked, the upgrade response, the hello and the replay leave in one segment: the
        # client wakes once, not three times (docs/benchmarks.md); uncorked once caught up.
        self._corked = _set_cork(transport, True)
        try:
            await self.ws.prepare(self.request)
        except BaseException:
            self._uncork()
            self.session.detach(self.client)
            self.session = self.client = None
            raise
        require_masked_frames(self.request, self._on_unmasked_frame)
        self.server.on_admitted(self, upgrade, connection, time.perf_counter() - started)
        del upgrade  # its headers and query are not needed while the connection lasts
        await self._serve(connection)

    async def _serve(self, connection: Connection) -> None:
        assert self.session is not None and self.client is not None
        try:
            # The hello first, then at once (the same send task, the same loop iteration) the
            # replay and whatever came while the upgrade was answered.
            if self._messages is None:
                self._messages = collections.deque()
            self._messages.appendleft(json.dumps(connection.attach.hello))
            connection.attach.hello.clear()  # logged already: an idle connection need not keep it
            client = self.client
            self._replaying = client.position < client.replay_end or client.nudge_after_replay
            self._ready = True
            self.wake()
            await self._receive_loop()
        finally:
            self._uncork()
            self._cancel_ack()
            self.session.detach(self.client)
            self.close(CloseCode.NORMAL, "")
            if self._sending is not None and self._dropped is not None:
                self._sending.cancel()  # the transport is gone: nothing more can be sent
            elif self._sending is not None:
                with contextlib.suppress(asyncio.CancelledError, ConnectionError, TimeoutError):
                    await asyncio.wait_for(self._sending, timeout=5)  # a socket-layer bound
            peer_code = self._dropped or self.ws.close_code
            self.server.on_detached(self, connection, peer_code)
            # The client refers back to this front: break the cycle, so that the session
            # (its ring) and this connection's buffers are freed now, not at the next collection.
            self.session = self.client = None

    # ---------------------------------------------------------------- sending
    async def _send_pending(self) -> None:
        """Send what is due — control messages, output from the client's position, the final
        message and the close — and end once caught up and quiet for :data:`SEND_LINGER`
        (:meth:`wake` starts it again)."""
        loop = asyncio.get_running_loop()
        try:
            while not self._close_sent:
                if await self._send_next():
                    continue
                self._uncork()  # caught up: what is queued goes out now
                if self._close_sent:
                    break
                idle = self._idle = loop.create_future()
                timer = loop.call_later(SEND_LINGER, _retire, idle)
                woken = await idle
                timer.cancel()
                if not woken and self._idle is idle:  # quiet all along: no wake since
                    break
        except (ConnectionError, RuntimeError):
            self._close_sent = True  # the peer went away; the receive loop ends too
        finally:
            self._uncork()
            self._sending = self._idle = None

    async def _send_next(self) -> bool:
        """Send the next thing due; False once there is nothing (no ``await`` after the last
        check, so a :meth:`wake` that comes later is never missed)."""
        session, client, ws = self.session, self.client, self.ws
        if self._closing is not None:
            await self._send_close(*self._closing)
            return False
        if self._messages:
            await ws.send_str(self._messages.popleft())
            return True
        if session is None or client is None:
            return False
        chunk = session.read_for(client)
        if chunk:
            await ws.send_bytes(chunk)
            self.server.output_sent(session, client, len(chunk))
            return True
        if self._replaying:
            self._replaying = False
            session.replay_done(client)
        if client.final is not None:
            final, code, reason = client.final
            if final is not None:
                await ws.send_str(json.dumps(final))
            self._closing = self._closing or (code, reason)
            return True
        return False

    async def _send_close(self, code: int, reason: str) -> None:
        if self._close_sent:
            return
        self._close_sent = True
        if self._dropped is None:  # else the transport is gone: no close handshake
            await self.ws.close(code=code, message=clip_reason(reason).encode())

    def _uncork(self) -> None:
        if self._corked:
            self._corked = False
            _set_cork(self.request.transport, False)

    def _on_unmasked_frame(self) -> None:
        """RFC 6455, 5.1: a client frame without a mask closes the connection with 1002."""
        self.close(CloseCode.PROTOCOL_ERROR, "unmasked frame")

    def _acked_party(self) -> tuple[Session, Client] | None:
        if self.session is None or self.client is None:
            return None
        return self.session, self.client

    # ---------------------------------------------------------------- receiving
    async def _receive_loop(self) -> None:
        assert self.client is not None
        client = self.client
        async for message in self.ws:
            if not client.active:
                continue  # replaced or ended: frames still arriving are ignored
            if message.type is WSMsgType.BINARY:
                await self._write_input(message.data)
            elif message.type is WSMsgType.TEXT:
                await self._handle_text(message.data)
            elif message.type is WSMsgType.PING:
                await self.ws.pong(message.data)
            elif message.type is WSMsgType.PONG:
                self._pong_received(bytes(message.data))
            if self._closing is not None:
                break

    async def _write_input(self, data: bytes) -> None:
        assert self.session is not None and self.client is not None
        await self.session.write_input(self.client.input_key, data)
        self.server.metrics.input_bytes.inc(len(data))
        self._schedule_ack()

    async def _handle_text(self, text: str) -> None:
        assert self.session is not None and self.client is not None
        message = self.server.take_text(self, self.session, self.client, text)
        if isinstance(message, Input):
            await self._write_input(message.data.encode("utf-8"))

    def heartbeat_tick(self) -> None:
        """Called by the server every heartbeat: drop a peer that left two pings unanswered
        (the session stays, detached), else send the next ping."""
        if self.session is None or self._closing is not None:
            return
        payload = self._next_ping()
        if payload is not None:
            self._ping_task = asyncio.ensure_future(self._ping(payload))

    @property
    def close_sent(self) -> bool:
        transport = self.request.transport
        if transport is None:  # the connection is gone: nothing left to send
            return True
        sent = self.ws.closed or transport.is_closing()
        return sent and transport.get_write_buffer_size() == 0

    async def _ping(self, payload: bytes) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.ping(payload)
        if self._ping_task is asyncio.current_task():
            self._ping_task = None  # held only while it runs

    def _drop(self, code: int, reason: str) -> None:
        """Cut the connection now (a close frame would wait behind what the peer does not
        read); the session stays, detached, and the log and metrics get ``code``."""
        if self.session is None or self._dropped is not None:
            return
        self._dropped = code
        self.server.log("drop", key=self.session.info.key, addr=self.address, reason=reason)
        self.close(code, reason)
        transport = self.request.transport
        if transport is not None:
            transport.abort()


def _set_cork(transport: asyncio.BaseTransport | None, on: bool) -> bool:
    """Hold (or release) partial TCP segments; False where that is not possible (no TCP)."""
    if transport is None:
        return False
    try:
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, int(on))
    except (AttributeError, OSError, ValueError):  # a Unix socket, or already closed
        return False
    return True


def _retire(idle: asyncio.Future[bool]) -> None:
    if not idle.done():
        idle.set_result(False)


async def handle_terminal(request: web.Request) -> web.WebSocketResponse:
    """``GET /ws/terminal``: admit or refuse, upgrade, then serve or close with the code."""
    server = server_of(request)
    ws = web.WebSocketResponse(
        protocols=(SUBPROTOCOL,),
        autoping=False,
        # aiohttp refuses a frame of exactly its limit; the documented limit is the largest
        # frame accepted (docs/protocol.md: "over" it closes with 1009).
        max_msg_size=server.settings.max_message_size + 1,
        compress=False,
    )
    if not ws.can_prepare(request).ok:
        await ws.prepare(request)  # not a WebSocket upgrade: aiohttp answers with an HTTP error
    address = client_address(request)
    placed, upgrade = LOCAL, None  # without a cluster, run() reads the upgrade itself
    if server.cluster is not None:  # another node may own the key (docs/scaling.md)
        upgrade = upgrade_of(request)
        relayed = server.is_relay(request.headers, request.remote or "")
        placed = await server.place(address, upgrade, relayed=relayed)
        if placed.route is Route.FORWARD:
            await forward.relay(request, ws, address, placed.url)
            return ws
        if placed.refusal is not None:
            server.on_refused(placed.refusal, address)
            await ws.prepare(request)
            await ws.close(code=placed.refusal.code, message=placed.refusal.reason.encode())
            return ws
        if placed.query is not None:
            upgrade = dataclasses.replace(upgrade, query=placed.query)
    connection = TerminalConnection(server, request, ws, address)
    with server.serving(connection):
        await connection.run(upgrade, placed.claimed)
    return ws
