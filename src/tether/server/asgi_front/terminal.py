"""``/ws/terminal`` under an ASGI server: one :class:`AsgiTerminal` per socket.

It implements the core's :class:`~tether.server.front.Front` as the aiohttp front does
(:mod:`tether.server.aiohttp_front.ws`): admit before accepting, a sender task that streams the
ring from the client's position (each ``websocket.send`` waits while the ASGI server's write
buffer is full, which is what slows a fast program while this client lags), a receive loop that
writes input and answers control messages. What ASGI cannot do is done another way
(docs/embedding.md): there are no ping frames to send, so liveness is the ASGI server's own
keepalive plus the application-level rule of :meth:`AsgiTerminal.heartbeat_tick`; there is no
transport to abort, so a dropped connection's tasks end and the ASGI server closes the socket.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tether.errors import Refusal
from tether.protocol.codes import CloseCode, clip_reason
from tether.protocol.messages import SUBPROTOCOL, Input, Ping
from tether.server.acks import MAX_QUEUED_MESSAGES, InputAcks
from tether.server.core import HostIdentity, Server
from tether.server.front import Upgrade
from tether.server.manager import Connection
from tether.server.session import Client, Session

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# A client that sends application pings (the page) is dropped after this many heartbeats with
# nothing from it; several, because a browser throttles a hidden tab's timers to once a minute.
SILENT_HEARTBEATS = 4


def accept_message(upgrade: Upgrade) -> Message:
    """``websocket.accept``, choosing ``tether.v1`` when the client offered it."""
    accept: Message = {"type": "websocket.accept"}
    if SUBPROTOCOL in upgrade.subprotocols:
        accept["subprotocol"] = SUBPROTOCOL
    return accept


class AsgiTerminal(InputAcks):
    """One client socket attached to one session, under an ASGI server."""

    def __init__(self, server: Server, send: Send, address: str) -> None:
        self.server = server
        self.address = address
        self._send = send
        self._connection: Connection | None = None
        self._wake = asyncio.Event()
        self._messages: collections.deque[Message] = collections.deque()
        self._closing: tuple[int, str] | None = None
        self._dropped: int | None = None  # the code of a connection this side cut
        self._peer_code: int | None = None
        self._pinging = False  # the client sends application pings: silence means it is gone
        self._silent_ticks = 0
        self._init_acks()
        self._receiving = False
        self._sender: asyncio.Task[None] | None = None

    # ---------------------------------------------------------------- Front (ClientSink)
    def wake(self) -> None:
        self._wake.set()

    def send_message(self, message: dict[str, Any]) -> None:
        if len(self._messages) >= MAX_QUEUED_MESSAGES:
            self._drop(CloseCode.POLICY_VIOLATION, "client stopped reading")
            return
        self._messages.append(message)
        self._wake.set()

    def close(self, code: int, reason: str) -> None:
        if self._closing is None:
            self._closing = (code, reason)
        self._wake.set()

    @property
    def close_sent(self) -> bool:
        return False  # the ASGI server holds the socket: an upgrade waits until this ends

    def heartbeat_tick(self) -> None:
        """Called every heartbeat: drop a client that pings but fell silent (the session stays)."""
        if self._connection is None or self._closing is not None:
            return
        self._silent_ticks += 1
        if self._pinging and self._silent_ticks >= SILENT_HEARTBEATS:
            self._drop(CloseCode.ABNORMAL, "heartbeats unanswered")

    # ---------------------------------------------------------------- lifecycle
    async def run(self, receive: Receive, upgrade: Upgrade, host: HostIdentity | None) -> None:
        """Admit or refuse, accept, then serve until either side closes."""
        started = time.perf_counter()  # a latency of the socket layer, not the server's clock
        accept = accept_message(upgrade)
        try:
            connection = self.server.admit(self, upgrade, host_identity=host)
        except Refusal as refusal:
            # Accept, then close with the code: a browser cannot read a refused handshake.
            with contextlib.suppress(OSError):
                await self._send(accept)
                await self._send_close(refusal.code, refusal.reason)
            return
        self._connection = connection
        try:
            await self._send(accept)
        except BaseException:
            connection.session.detach(connection.attach.client)
            self._connection = None
            raise
        self.server.on_admitted(self, upgrade, connection, time.perf_counter() - started)
        await self._serve(connection, receive)

    async def _serve(self, connection: Connection, receive: Receive) -> None:
        session, client = connection.session, connection.attach.client
        self._sender = sender = asyncio.create_task(self._send_loop(connection))
        receiver = asyncio.create_task(self._receive_loop(connection, receive))
        try:
            await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
            if not receiver.done() and self._receiving:
                receiver.cancel()  # waiting for a frame: nothing half-written to lose
            await asyncio.wait({receiver})
        finally:
            self._cancel_ack()
            session.detach(client)
            self.close(CloseCode.NORMAL, "")
            with contextlib.suppress(asyncio.CancelledError, OSError, TimeoutError):
                await asyncio.wait_for(sender, timeout=5)  # a socket-layer bound
            self.server.on_detached(self, connection, self._dropped or self._peer_code)
            # The client refers back to this front: break the cycle, so that the session's ring
            # and this connection's buffers are freed now, not at the next collection.
            self._connection = self._sender = None

    # ---------------------------------------------------------------- sending
    async def _send_loop(self, connection: Connection) -> None:
        session, client, send = connection.session, connection.attach.client, self._send
        try:
            await send({"type": "websocket.send", "text": json.dumps(connection.attach.hello)})
            replaying = client.position < client.replay_end or client.nudge_after_replay
            while self._closing is None:
                while self._messages:
                    text = json.dumps(self._messages.popleft())
                    await send({"type": "websocket.send", "text": text})
                chunk = session.read_for(client)
                if chunk:
                    await send({"type": "websocket.send", "bytes": bytes(chunk)})
                    self.server.output_sent(session, client, len(chunk))
                    continue
                if replaying:
                    replaying = False
                    session.replay_done(client)
                if client.final is not None:
                    message, code, reason = client.final
                    if message is not None:
                        await send({"type": "websocket.send", "text": json.dumps(message)})
                    self.close(code, reason)
                    break
                self._wake.clear()
                await self._wake.wait()
            code, reason = self._closing or (CloseCode.NORMAL, "")
            if self._peer_code is None:
                await self._send_close(code, reason)
        except (OSError, RuntimeError):
            pass  # the peer went away (uvicorn's ClientDisconnected is an OSError)

    async def _send_close(self, code: int, reason: str) -> None:
        await self._send({"type": "websocket.close", "code": code, "reason": clip_reason(reason)})

    def _acked_party(self) -> tuple[Session, Client] | None:
        connection = self._connection
        if connection is None:
            return None
        return connection.session, connection.attach.client

    # ---------------------------------------------------------------- receiving
    async def _receive_loop(self, connection: Connection, receive: Receive) -> None:
        client, limit = connection.attach.client, self.server.settings.max_message_size
        while self._closing is None:
            self._receiving = True
            message = await receive()
            self._receiving = False
            if message["type"] == "websocket.disconnect":
                self._peer_code = int(message.get("code") or CloseCode.ABNORMAL)
                self.wake()  # the sender stops: no close frame to send any more
                return
            self._silent_ticks = 0
            data, text = message.get("bytes"), message.get("text")
            size = len(data) if data is not None else len(str(text or "").encode())
            if size > limit:
                self.close(CloseCode.MESSAGE_TOO_BIG, "message too big")
                return
            if not client.active:
                continue  # replaced or ended: frames still arriving are ignored
            if data is not None:
                await self._write_input(connection, bytes(data))
            elif text is not None:
                await self._handle_text(connection, str(text))

    async def _write_input(self, connection: Connection, data: bytes) -> None:
        await connection.session.write_input(connection.attach.client.input_key, data)
        self.server.metrics.input_bytes.inc(len(data))
        self._schedule_ack()

    async def _handle_text(self, connection: Connection, text: str) -> None:
        session, client = connection.session, connection.attach.client
        message = self.server.take_text(self, session, client, text)
        if isinstance(message, Input):
            await self._write_input(connection, message.data.encode("utf-8"))
        elif isinstance(message, Ping):
            self._pinging = True  # it keeps itself alive with pings: silence now means gone

    def _drop(self, code: int, reason: str) -> None:
        """Stop serving now (a close frame would wait behind what the peer does not read): the
        sender is cancelled and the ASGI server closes the socket; the session stays."""
        connection = self._connection
        if connection is None or self._dropped is not None:
            return
        self._dropped = code
        self.server.log("drop", key=connection.session.info.key, addr=self.address, reason=reason)
        self.close(code, reason)
        if self._sender is not None:
            self._sender.cancel()
