"""One ``/ws/terminal`` client served on its socket: :class:`DirectTerminal`.

It implements the core's :class:`~tether.server.front.Front` (and so the session's
:class:`~tether.server.session.ClientSink`) with no task, no coroutine and no framework object
per connection: the transport calls it (data, pause and resume, loss), ``websockets``' sans-I/O
:class:`~websockets.protocol.Protocol` reads and writes the frames, and what is due goes out
synchronously while the transport takes it:

- output streams from the client's position in the ring while the transport's write buffer is
  under its high-water mark; ``pause_writing`` stops the stream (a client that lags slows a
  fast program through the ring, as before) and ``resume_writing`` goes on;
- input is written to the PTY as frames arrive; when the PTY does not take it all, reading the
  socket pauses until it has (TCP pushes back on the client), and frames already read wait;
- the upgrade answer, the hello and the first replayed bytes leave in one write (one segment);
- pings of the server's heartbeat and pongs to the client's pings are written at once; a client
  that sends pings and never reads finds its socket unread once our write buffer holds
  :data:`MAX_WRITE_BUFFER` (its pongs stay bounded);
- every close is the WebSocket close handshake (RFC 6455, 7.1.2): the close frame, then the TCP
  close once the peer answered, or after :data:`CLOSE_TIMEOUT`.

Bounded per connection, as in the aiohttp front: control messages queued for a client that does
not read (:data:`MAX_QUEUED_MESSAGES`, then 1008), a fragmented message (the message limit, then
1009), input waiting for the PTY (the session's backlog).
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
from typing import cast

from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol, Side, State

from tether.errors import Refusal
from tether.protocol.codes import clip_reason
from tether.protocol.messages import Input
from tether.server.acks import PingedFront
from tether.server.core import Server
from tether.server.direct_front.handshake import TerminalUpgrade, switching_protocols
from tether.server.manager import Connection
from tether.server.session import Client, Session

CLOSE_TIMEOUT = 5.0  # seconds a peer has to answer our close frame (socket-layer time)
MAX_WRITE_BUFFER = 4 * 1024 * 1024  # unsent bytes past which the socket is not read
_SEND_EOF = b""  # what websockets' protocol asks for when the TCP connection should close

# websockets logs each connection's end at INFO: tether logs its own events (detach).
_QUIET = logging.getLogger("tether.direct_front.frames")
_QUIET.disabled = True
_QUIET.propagate = False


class DirectTerminal(PingedFront):
    """One client socket attached to one session (or being refused), driven by its transport."""

    __slots__ = (
        "_closing",
        "_connection",
        "_corked",
        "_dropped",
        "_fragments",
        "_held_events",
        "_input_wait",
        "_lost",
        "_read_paused",
        "_ready",
        "_replaying",
        "_sending",
        "_timer",
        "_write_paused",
        "address",
        "client",
        "server",
        "session",
        "transport",
        "ws",
    )

    def __init__(self, server: Server, transport: asyncio.Transport, address: str) -> None:
        self.server = server
        self.transport = transport
        self.address = address
        self.ws = Protocol(Side.SERVER, max_size=server.settings.max_message_size, logger=_QUIET)
        self.session: Session | None = None
        self.client: Client | None = None
        self._connection: Connection | None = None
        self._closing: tuple[int, str] | None = None
        self._ready = False  # the hello is on its way: output may follow
        self._replaying = False
        self._sending = False  # inside _send_due: a wake meanwhile is seen by its loop
        self._write_paused = False
        self._read_paused = False
        self._corked: list[bytes] | None = None  # writes held to leave as one
        self._fragments: tuple[Opcode, bytearray] | None = None
        self._held_events: collections.deque[Frame] | None = None  # read while input waited
        self._input_wait: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None  # the close handshake's deadline
        self._lost = False
        self._dropped: int | None = None  # the code of a connection this side cut
        self._init_acks()
        self._init_pings()

    # ---------------------------------------------------------------- the upgrade
    def start(
        self,
        upgrade: TerminalUpgrade,
        started: float,
        rest: bytes,
        refusal: Refusal | None = None,
    ) -> None:
        """Admit (the shell starts first), then answer: 101, hello and replay in one write;
        or 101 and a close frame with the code of a refusal (``refusal``: one found before).
        ``rest``: bytes that came after the head."""
        server = self.server
        self._corked = [switching_protocols(upgrade.key, upgrade.upgrade.subprotocols)]
        try:
            if refusal is not None:
                server.on_refused(refusal, self.address)
                raise refusal
            connection = server.admit(self, upgrade.upgrade)
        except Refusal as refused:
            self._send_close(refused.code, refused.reason)
            self._release_cork()
            return
        self._connection = connection
        self.session, self.client = connection.session, connection.attach.client
        server.connections.add(self)
        client = self.client
        self.ws.send_text(json.dumps(connection.attach.hello).encode())
        self._take_writes()
        server.on_admitted(self, upgrade.upgrade, connection, time.perf_counter() - started)
        connection.attach.hello.clear()  # logged: an idle connection need not keep it
        self._replaying = client.position < client.replay_end or client.nudge_after_replay
        self._ready = True
        self._send_due()
        self._release_cork()
        if rest:
            self.data_received(rest)

    # ---------------------------------------------------------------- Front (ClientSink)
    def wake(self) -> None:
        if self._ready and not self._sending:
            self._send_due()

    def close(self, code: int, reason: str) -> None:
        if self._closing is None:
            self._closing = (code, reason)
        if self._ready:
            self.wake()
        else:
            self._send_close(code, reason)
        self._start_close_timer()  # also when the close frame waits behind unread output

    def heartbeat_tick(self) -> None:
        """Drop a peer that left two pings unanswered (the session stays), else ping it."""
        if self.session is None or self._closing is not None:
            return
        payload = self._next_ping()
        if payload is not None:
            self.ws.send_ping(payload)
            self._take_writes()

    @property
    def close_sent(self) -> bool:
        if self._lost:
            return True
        return self.ws.close_sent is not None and self.transport.get_write_buffer_size() == 0

    # ---------------------------------------------------------------- sending
    def _send_due(self) -> None:
        """Send what is due while the transport takes it: control messages, output from the
        client's position, the final message, the close."""
        self._sending = True
        try:
            while not self._write_paused and self._send_next():
                pass
        finally:
            self._sending = False

    def _send_next(self) -> bool:
        """Send the next thing due; False once there is nothing (or the connection closes)."""
        if self._closing is not None:
            self._send_close(*self._closing)
            return False
        if self.ws.state is not State.OPEN:
            return False
        if self._messages:
            self.ws.send_text(self._messages.popleft().encode())
            self._take_writes()
            return True
        session, client = self.session, self.client
        if session is None or client is None:
            return False
        chunk = session.read_for(client)
        if chunk:
            self.ws.send_binary(chunk)
            self._take_writes(output=True)
            self.server.output_sent(session, client, len(chunk))
            return True
        if self._replaying:
            self._replaying = False
            session.replay_done(client)
            return True  # the nudge may have queued a message
        if client.final is not None:
            final, code, reason = client.final
            if final is not None:
                self.ws.send_text(json.dumps(final).encode())
                self._take_writes()
            self._closing = self._closing or (code, reason)
            return True
        return False

    def _send_close(self, code: int, reason: str) -> None:
        if self.ws.state is not State.OPEN:
            return
        self.ws.send_close(code, clip_reason(reason))
        self._detach()  # no more output for it: the session may run on without this client
        self._take_writes()
        self._start_close_timer()

    def _start_close_timer(self) -> None:
        """Cut the connection if the close handshake is not done within :data:`CLOSE_TIMEOUT`."""
        if not self._lost and self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(CLOSE_TIMEOUT, self.transport.abort)

    def _take_writes(self, output: bool = False) -> None:
        """Write what the protocol has for the peer; while corked (the upgrade's answer and the
        hello), held until the first output joins them (one chunk: at most MAX_READ bytes)."""
        writes = self.ws.data_to_send()
        if self._corked is None:
            self._write(writes)
            return
        self._corked.extend(writes)
        if output:
            self._release_cork()

    def _release_cork(self) -> None:
        corked, self._corked = self._corked, None
        if corked:
            self._write(corked)

    def _write(self, writes: list[bytes]) -> None:
        if self._lost or not writes:
            return
        if writes[-1] == _SEND_EOF:  # the close handshake is done (or failed): close TCP
            self.transport.writelines(writes[:-1])
            self.transport.close()
            return
        self.transport.writelines(writes)

    # ---------------------------------------------------------------- transport callbacks
    def data_received(self, data: bytes) -> None:
        ws = self.ws
        ws.receive_data(data)
        events = cast(list[Frame], ws.events_received())  # frames only: no handshake here
        self._take_writes()  # pongs, the echo of a close, a failure's close frame
        if self._held_events is not None:
            self._held_events.extend(events)
            return
        self._take_events(events)
        if not self._read_paused and self.transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            self._pause_reading()  # it sends and does not read: its pongs must not pile up

    def eof_received(self) -> bool:
        self.ws.receive_eof()
        self._take_writes()
        return False  # the transport closes; connection_lost follows

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._read_paused and self._input_wait is None:
            self._resume_reading()
        self.wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._ready = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._input_wait is not None:
            self._input_wait.remove_done_callback(self._input_written)
            self._input_wait = None
        self._cancel_ack()
        self._detach()
        connection, self._connection = self._connection, None
        if connection is not None:
            self.server.connections.discard(self)
            self.server.on_detached(self, connection, self._peer_code())
        # The client refers back to this front: break the cycle now (its ring, our buffers).
        self.session = self.client = None
        self._messages = self._held_events = None

    # ---------------------------------------------------------------- receiving
    def _take_events(self, events: list[Frame] | collections.deque[Frame]) -> None:
        for index, frame in enumerate(events):
            if self._input_wait is not None:  # the PTY is full: the rest waits for it
                self._held_events = collections.deque(list(events)[index:])
                return
            self._on_frame(frame)

    def _on_frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.PONG:
            self._pong_received(bytes(frame.data))
            return
        if opcode in (Opcode.PING, Opcode.CLOSE):
            return  # answered by the protocol
        if opcode is Opcode.CONT:
            if self._fragments is None:
                return  # the protocol refuses it (1002)
            first, collected = self._fragments
            collected += frame.data
            if not frame.fin:
                return
            self._fragments = None
            opcode, data = first, bytes(collected)
        elif not frame.fin:
            self._fragments = (opcode, bytearray(frame.data))
            return
        else:
            data = bytes(frame.data)
        session, client = self.session, self.client
        if session is None or client is None or not client.active or self._closing is not None:
            return  # replaced, ended or closing: frames still arriving are ignored
        if opcode is Opcode.BINARY:
            self._write_input(data)
            return
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            self.ws.fail(1007, "invalid UTF-8 in a text frame")
            self._take_writes()
            return
        message = self.server.take_text(self, session, client, text)
        if isinstance(message, Input):
            self._write_input(message.data.encode("utf-8"))

    def _write_input(self, data: bytes) -> None:
        assert self.session is not None and self.client is not None
        try:
            waiting = self.session.offer_input(self.client.input_key, data)
        except OSError:  # the shell is gone: its session ends and says so
            return
        self.server.metrics.input_bytes.inc(len(data))
        if waiting is None:
            self._schedule_ack()
            return
        self._input_wait = waiting
        self._pause_reading()
        waiting.add_done_callback(self._input_written)

    def _input_written(self, _done: asyncio.Future[None]) -> None:
        self._input_wait = None
        if self._lost:
            return
        self._schedule_ack()
        held, self._held_events = self._held_events, None
        if held:
            self._take_events(held)
        if self._input_wait is None and not self._write_paused:
            self._resume_reading()

    def _pause_reading(self) -> None:
        if not self._read_paused and not self._lost:
            self._read_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._read_paused and not self._lost:
            self._read_paused = False
            self.transport.resume_reading()

    # ---------------------------------------------------------------- ending
    def _acked_party(self) -> tuple[Session, Client] | None:
        if self.session is None or self.client is None:
            return None
        return self.session, self.client

    def _detach(self) -> None:
        if self.session is not None and self.client is not None:
            self.session.detach(self.client)

    def _drop(self, code: int, reason: str) -> None:
        """Cut the connection now (a close frame would wait behind what the peer does not
        read); the session stays, detached, and the log and metrics get ``code``."""
        if self.session is None or self._lost:
            return
        self.server.log("drop", key=self.session.info.key, addr=self.address, reason=reason)
        self._closing = self._closing or (code, reason)
        self._dropped = code
        self.transport.abort()

    def _peer_code(self) -> int | None:
        if self._dropped is not None:
            return self._dropped
        closed = self.ws.close_rcvd or self.ws.close_sent  # the peer's code, else ours
        return None if closed is None else int(closed.code)
