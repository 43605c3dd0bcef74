"""The listening socket: each accepted connection is counted until its request head is complete
(the per-address cap of :mod:`tether.server.pending`), ``/ws/terminal`` upgrades go to the direct
front, and everything else to a *fallback* front — aiohttp's request handler in ``tether serve``.

The fallback may come later than the socket. After an upgrade in place or a crash, the new
worker listens with the direct front alone, so that the clients that were cut off resume while
the rest of the server (aiohttp: ~0.13 s of imports) is still to come; connections for the
fallback wait meanwhile, parked with what they sent, and go to it once it is there
(:meth:`Fallback.open`). :meth:`Listener.settle` tells when that burst of resumes has passed
(docs/architecture.md, "Surviving the server process").
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any, cast

from tether.errors import Refusal
from tether.protocol.codes import CloseCode
from tether.server import logs
from tether.server.core import Server
from tether.server.direct_front import handshake
from tether.server.direct_front.connection import DirectTerminal
from tether.server.pending import PendingConnections

SETTLE_QUIET = 0.02  # seconds with no terminal head coming and none resumed: the burst passed
SETTLE_LONGEST = 1.0  # seconds at most that connections for the fallback wait for it
MAX_PARKED = 64 * 1024  # bytes read from a connection waiting for the fallback, then paused

HandlerFactory = Callable[[], asyncio.Protocol]


class Fallback:
    """The front for what the direct front does not take; until it is there, those connections
    wait here, in the order they came, with what they sent."""

    def __init__(self, factory: HandlerFactory | None = None) -> None:
        self.factory = factory
        self.parked: list[SniffingConnection] = []

    def take(self, connection: SniffingConnection, buffered: bytes) -> None:
        if self.factory is None:
            connection.park(buffered)
            self.parked.append(connection)
        else:
            connection.hand_to(self.factory(), buffered)

    def open(self, factory: HandlerFactory) -> None:
        """The fallback is there: every parked connection goes to it now."""
        self.factory = factory
        parked, self.parked = self.parked, []
        for connection in parked:
            connection.unpark(factory())

    def forget(self, connection: SniffingConnection) -> None:
        if connection in self.parked:
            self.parked.remove(connection)


class SniffingConnection(asyncio.Protocol):
    """One accepted connection, counted while pending, then served by the fallback or — a
    ``/ws/terminal`` upgrade of a server with no cluster — by the direct front.

    The first bytes decide: a request that cannot be ``GET /ws/terminal`` goes to the fallback
    at once; one that can is read up to the end of its head (within the handshake timeout) and
    taken by :class:`~tether.server.direct_front.connection.DirectTerminal` when it is a
    well-formed upgrade, else given to the fallback with the bytes read so far.
    """

    def __init__(self, listener: Listener) -> None:
        self._listener = listener
        self._handler: asyncio.Protocol | DirectTerminal | None = None
        self._transport: asyncio.Transport | None = None
        self._peer = ""  # the peer's address, as the pending cap counts it
        self._buffered = b""
        self._deadline: asyncio.TimerHandle | None = None
        self._started = 0.0
        self._parked = False  # waiting for the fallback, what came meanwhile in _buffered
        self._undecided = False  # counted in the listener's undecided until it is decided

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        listener = self._listener
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        transport = cast(asyncio.Transport, transport)
        if not listener.pending.open(transport, address):
            logs.log_at(logging.DEBUG, "refuse", addr=address, reason="too many pending")
            transport.abort()
            return
        self._transport = transport
        self._peer = address
        server = listener.terminals
        if server is None or server.cluster is not None:
            listener.fallback.take(self, b"")
            return
        listener.direct.add(self)  # aborted when the listener stops (the fallback's are its own)
        listener.undecided += 1
        self._undecided = True
        timeout = server.settings.handshake_timeout  # what aiohttp gives a request's head
        self._deadline = asyncio.get_running_loop().call_later(timeout, transport.abort)

    def data_received(self, data: bytes) -> None:
        if self._handler is not None:
            self._handler.data_received(data)
            return
        if self._parked:
            self._buffered += data
            if len(self._buffered) > MAX_PARKED and self._transport is not None:
                self._transport.pause_reading()  # the rest waits in the kernel
            return
        if not self._buffered:
            self._started = time.perf_counter()
        buffered = self._buffered + data if self._buffered else data
        prefix = handshake.REQUEST_PREFIX
        if buffered[: len(prefix)] != prefix[: len(buffered)]:
            self._to_fallback(buffered)  # not /ws/terminal: the fallback's from the first byte
            return
        end = handshake.head_end(buffered)
        if end < 0:
            if len(buffered) > handshake.MAX_HEAD:
                self._to_fallback(buffered)
            else:
                self._buffered = buffered
            return
        head = handshake.read_head(buffered[:end])
        upgrade = handshake.terminal_upgrade(head) if head is not None else None
        if upgrade is None:
            self._to_fallback(buffered)
            return
        self._to_direct(upgrade, buffered[end:])

    def _to_fallback(self, buffered: bytes) -> None:
        self._decided()
        self._listener.direct.discard(self)  # the fallback closes its own connections
        self._buffered = b""
        self._listener.fallback.take(self, buffered)

    def park(self, buffered: bytes) -> None:
        """Wait for the fallback, keeping what the peer sends (and seeing it leave)."""
        self._parked, self._buffered = True, buffered

    def unpark(self, handler: asyncio.Protocol) -> None:
        buffered, self._parked, self._buffered = self._buffered, False, b""
        transport = self._transport
        if transport is None:
            return  # gone meanwhile
        self.hand_to(handler, buffered)
        if not transport.is_reading() and not transport.is_closing():
            transport.resume_reading()  # paused at MAX_PARKED (the handler may pause it again)

    def hand_to(self, handler: asyncio.Protocol, buffered: bytes) -> None:
        transport = self._transport
        assert transport is not None
        self._handler = handler
        # Later data goes to the handler directly, with no call through this object.
        self.data_received = handler.data_received  # type: ignore[method-assign]
        handler.connection_made(transport)
        if buffered:
            handler.data_received(buffered)

    def _to_direct(self, upgrade: handshake.TerminalUpgrade, rest: bytes) -> None:
        self._decided()
        self._buffered = b""
        listener, transport = self._listener, self._transport
        server = listener.terminals
        assert server is not None and transport is not None
        listener.last_resume = time.monotonic()
        listener.pending.settle(transport)  # a whole request: no longer a slowloris suspect
        address = server.client_address(self._peer, upgrade.forwarded_for)
        terminal = self._handler = DirectTerminal(server, transport, address)
        self.data_received = terminal.data_received  # type: ignore[method-assign]
        refusal = None
        if not server.host_allowed(upgrade.upgrade.headers):
            refusal = Refusal(CloseCode.FORBIDDEN, "host not allowed")
        terminal.start(upgrade, self._started, rest, refusal)

    def _decided(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self._undecided:
            self._undecided = False
            self._listener.undecided -= 1

    def abort(self) -> None:
        """Cut a connection still open when the listener stops."""
        if self._transport is not None:
            self._transport.abort()

    def eof_received(self) -> bool | None:
        if self._handler is None:
            return False  # ended before its head, or before the fallback came: close
        return self._handler.eof_received()

    def pause_writing(self) -> None:
        if self._handler is not None:
            self._handler.pause_writing()

    def resume_writing(self) -> None:
        if self._handler is not None:
            self._handler.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is None:
            return  # refused: no handler saw it
        self._decided()
        listener = self._listener
        listener.pending.close(self._transport)
        self._transport = None
        listener.direct.discard(self)
        if self._handler is not None:
            self._handler.connection_lost(exc)
        else:
            listener.fallback.forget(self)


class Listener:
    """An asyncio server whose connections are :class:`SniffingConnection`\\ s."""

    def __init__(
        self, pending: PendingConnections, terminals: Server | None, fallback: Fallback
    ) -> None:
        self.pending = pending
        self.terminals = terminals  # the server whose /ws/terminal the direct front serves
        self.fallback = fallback
        # Connections the fallback does not own: undecided, or served by the direct front.
        self.direct: set[SniffingConnection] = set()
        self.undecided = 0  # connections whose head is still coming
        self.last_resume = time.monotonic()  # when the direct front last took a terminal
        self.server: asyncio.Server | None = None

    async def listen(
        self,
        *,
        sock: socket.socket | None = None,
        host: str | None = None,
        port: int | None = None,
        ssl_context: ssl.SSLContext | None = None,
        backlog: int = 128,
        reuse_address: bool | None = None,
        reuse_port: bool | None = None,
    ) -> asyncio.Server:
        where: dict[str, Any] = {"sock": sock} if sock is not None else {"host": host, "port": port}
        self.server = await asyncio.get_running_loop().create_server(
            lambda: SniffingConnection(self),
            **where,
            ssl=ssl_context,
            backlog=backlog,
            reuse_address=reuse_address if sock is None else None,
            reuse_port=reuse_port if sock is None else None,
        )
        return self.server

    async def settle(self, quiet: float = SETTLE_QUIET, longest: float = SETTLE_LONGEST) -> None:
        """Return once the burst of resumes has passed — no connection's head still coming and
        no terminal taken for ``quiet`` seconds — or after ``longest`` seconds at most.
        Connections for the fallback do not count (an HTTP poller does not hold it up)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        while loop.time() - started < longest:
            if not self.undecided and time.monotonic() - self.last_resume >= quiet:
                return
            await asyncio.sleep(quiet)

    def abort_direct(self) -> None:
        """Cut the connections the fallback does not own, once the server stopped (their
        sessions ended: no close to wait for), and those waiting for a fallback."""
        for connection in list(self.direct):
            connection.abort()
        for connection in list(self.fallback.parked):
            connection.abort()

    def close(self) -> None:
        """Stop listening and cut every connection of ours (a start that failed)."""
        if self.server is not None:
            self.server.close()
        self.abort_direct()
