"""The listening socket: aiohttp's TCP site, with each connection counted until its request
headers are complete (the per-address cap of :mod:`tether.server.pending`).

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
from typing import Any, cast

from aiohttp import web

from tether.server import logs
from tether.server.pending import PendingConnections


class _CountedConnection(asyncio.Protocol):
    """aiohttp's request handler for one connection, counted while it is pending."""

    def __init__(self, handler: asyncio.Protocol, pending: PendingConnections) -> None:
        self._handler = handler
        self._pending = pending
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if not self._pending.open(transport, address):
            logs.log_at(logging.DEBUG, "refuse", addr=address, reason="too many pending")
            cast(asyncio.Transport, transport).abort()
            return
        self._transport = transport
        # Later data goes to aiohttp's handler directly, with no call through this object.
        self.data_received = self._handler.data_received  # type: ignore[method-assign]
        self._handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self._handler.eof_received() if self._transport is not None else None

    def pause_writing(self) -> None:
        self._handler.pause_writing()

    def resume_writing(self) -> None:
        self._handler.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is None:
            return  # refused: aiohttp's handler never saw it
        self._pending.close(self._transport)
        self._transport = None
        self._handler.connection_lost(exc)


class GuardedSite(web.TCPSite):
    """A :class:`aiohttp.web.TCPSite` whose connections are counted while pending."""

    __slots__ = ("_pending_connections", "_sock")

    def __init__(
        self,
        runner: web.BaseRunner,
        *args: Any,
        pending: PendingConnections,
        sock: socket.socket | None = None,
        **kw: Any,
    ):
        super().__init__(runner, *args, **kw)
        self._pending_connections = pending
        self._sock = sock  # a listening socket handed over by a previous process (survive.py)

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site (TCPSite.start would listen too)
        server, pending = self._runner.server, self._pending_connections
        assert server is not None
        where: dict[str, Any] = {"host": self._host, "port": self._port}
        if self._sock is not None:
            where = {"sock": self._sock}
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _CountedConnection(server(), pending),
            **where,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=self._reuse_address if self._sock is None else None,
            reuse_port=self._reuse_port if self._sock is None else None,
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port
