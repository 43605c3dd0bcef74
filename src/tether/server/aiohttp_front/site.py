"""The listening socket: aiohttp's TCP site, with each connection counted until its request
headers are complete (the per-address cap of :mod:`tether.server.pending`), and the
``/ws/terminal`` upgrades given to the direct front (:mod:`tether.server.direct_front`).

aiohttp gives a connection's request handler (its ``asyncio.Protocol``) no hook for "accepted";
:class:`GuardedSite` puts a thin protocol in front of each one that asks the server's
:class:`~tether.server.pending.PendingConnections` whether the peer may hold one more pending
connection, and tells it when the connection ends. The request middleware marks a connection
settled once a whole request arrived. The deadline for the headers themselves is aiohttp's
``keepalive_timeout`` (which, since aiohttp 3.14, runs from the moment a connection is accepted
and is not reset by partial data), set by :func:`~tether.server.aiohttp_front.app.create_app`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from typing import Any, cast

from aiohttp import web

from tether.errors import Refusal
from tether.protocol.codes import CloseCode
from tether.server import logs
from tether.server.core import Server
from tether.server.direct_front import handshake
from tether.server.direct_front.connection import DirectTerminal
from tether.server.pending import PendingConnections


class _CountedConnection(asyncio.Protocol):
    """One accepted connection, counted while pending, then served by aiohttp's request handler
    or — a ``/ws/terminal`` upgrade of a server with no cluster — by the direct front.

    The first bytes decide: a request that cannot be ``GET /ws/terminal`` goes to aiohttp at
    once; one that can is read up to the end of its head (within the handshake timeout) and
    taken by :class:`~tether.server.direct_front.connection.DirectTerminal` when it is a
    well-formed upgrade, else handed to aiohttp with the bytes read so far.
    """

    def __init__(
        self,
        make_handler: Callable[[], asyncio.Protocol],
        pending: PendingConnections,
        terminals: Server | None,
        direct: set[_CountedConnection],
    ) -> None:
        self._make_handler = make_handler
        self._pending = pending
        self._terminals = terminals
        self._direct = direct
        self._handler: asyncio.Protocol | DirectTerminal | None = None
        self._transport: asyncio.Transport | None = None
        self._peer = ""  # the peer's address, as the pending cap counts it
        self._buffered = b""
        self._deadline: asyncio.TimerHandle | None = None
        self._started = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        transport = cast(asyncio.Transport, transport)
        if not self._pending.open(transport, address):
            logs.log_at(logging.DEBUG, "refuse", addr=address, reason="too many pending")
            transport.abort()
            return
        self._transport = transport
        self._peer = address
        server = self._terminals
        if server is None or server.cluster is not None:
            self._to_aiohttp(b"")
            return
        self._direct.add(self)  # aborted if the site stops before it is decided
        timeout = server.settings.handshake_timeout  # what aiohttp gives a request's head
        self._deadline = asyncio.get_running_loop().call_later(timeout, transport.abort)

    def data_received(self, data: bytes) -> None:
        if self._handler is not None:
            self._handler.data_received(data)
            return
        if not self._buffered:
            self._started = time.perf_counter()
        buffered = self._buffered + data if self._buffered else data
        prefix = handshake.REQUEST_PREFIX
        if buffered[: len(prefix)] != prefix[: len(buffered)]:
            self._to_aiohttp(buffered)  # not /ws/terminal: aiohttp's from the first byte
            return
        end = handshake.head_end(buffered)
        if end < 0:
            if len(buffered) > handshake.MAX_HEAD:
                self._to_aiohttp(buffered)
            else:
                self._buffered = buffered
            return
        head = handshake.read_head(buffered[:end])
        upgrade = handshake.terminal_upgrade(head) if head is not None else None
        if upgrade is None:
            self._to_aiohttp(buffered)
            return
        self._to_direct(upgrade, buffered[end:])

    def _to_aiohttp(self, buffered: bytes) -> None:
        self._stop_deadline()
        self._direct.discard(self)  # aiohttp's runner closes its own connections
        self._buffered = b""
        handler = self._handler = self._make_handler()
        # Later data goes to aiohttp's handler directly, with no call through this object.
        self.data_received = handler.data_received  # type: ignore[method-assign]
        handler.connection_made(cast(asyncio.Transport, self._transport))
        if buffered:
            handler.data_received(buffered)

    def _to_direct(self, upgrade: handshake.TerminalUpgrade, rest: bytes) -> None:
        self._stop_deadline()
        self._buffered = b""
        server, transport = self._terminals, self._transport
        assert server is not None and transport is not None
        self._pending.settle(transport)  # a whole request: no longer a slowloris suspect
        address = server.client_address(self._peer, upgrade.forwarded_for)
        terminal = self._handler = DirectTerminal(server, transport, address)
        self.data_received = terminal.data_received  # type: ignore[method-assign]
        refusal = None
        if not server.host_allowed(upgrade.upgrade.headers):
            refusal = Refusal(CloseCode.FORBIDDEN, "host not allowed")
        terminal.start(upgrade, self._started, rest, refusal)

    def _stop_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def abort(self) -> None:
        """Cut a connection still open when the site stops."""
        if self._transport is not None:
            self._transport.abort()

    def eof_received(self) -> bool | None:
        if self._handler is None:
            return False  # ended before its head: close
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
        self._stop_deadline()
        self._pending.close(self._transport)
        self._transport = None
        self._direct.discard(self)
        if self._handler is not None:
            self._handler.connection_lost(exc)


class GuardedSite(web.TCPSite):
    """A :class:`aiohttp.web.TCPSite` whose connections are counted while pending."""

    __slots__ = ("_direct", "_pending_connections", "_sock", "_terminals")

    def __init__(
        self,
        runner: web.BaseRunner,
        *args: Any,
        pending: PendingConnections,
        terminals: Server | None = None,
        sock: socket.socket | None = None,
        **kw: Any,
    ):
        super().__init__(runner, *args, **kw)
        self._pending_connections = pending
        self._terminals = terminals  # the server whose /ws/terminal the direct front serves
        self._direct: set[_CountedConnection] = set()
        self._sock = sock  # a listening socket handed over by a previous process (survive.py)

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site (TCPSite.start would listen too)
        server, pending = self._runner.server, self._pending_connections
        assert server is not None
        where: dict[str, Any] = {"host": self._host, "port": self._port}
        if self._sock is not None:
            where = {"sock": self._sock}
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _CountedConnection(server, pending, self._terminals, self._direct),
            **where,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=self._reuse_address if self._sock is None else None,
            reuse_port=self._reuse_port if self._sock is None else None,
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port

    async def stop(self) -> None:
        await super().stop()
        for connection in list(self._direct):  # their sessions ended: no close to wait for
            connection.abort()
