"""The listening socket as aiohttp's TCP site: the direct front's
:class:`~tether.server.direct_front.listener.Listener`, with aiohttp's request handler as its
fallback (everything but the ``/ws/terminal`` upgrades the direct front takes).

aiohttp gives a connection's request handler (its ``asyncio.Protocol``) no hook for "accepted";
the listener puts a thin protocol in front of each one that asks the server's
:class:`~tether.server.pending.PendingConnections` whether the peer may hold one more pending
connection, and tells it when the connection ends. The request middleware marks a connection
settled once a whole request arrived. The deadline for the headers themselves is aiohttp's
``keepalive_timeout`` (which, since aiohttp 3.14, runs from the moment a connection is accepted
and is not reset by partial data), set by :func:`~tether.server.aiohttp_front.app.create_app`.
"""

from __future__ import annotations

import socket
from typing import Any

from aiohttp import web

from tether.server.core import Server
from tether.server.direct_front.listener import Fallback, Listener
from tether.server.pending import PendingConnections


class GuardedSite(web.TCPSite):
    """A :class:`aiohttp.web.TCPSite` whose connections are counted while pending, and whose
    ``/ws/terminal`` upgrades the direct front serves. ``listener``: one already listening
    (a new worker's, since before aiohttp was imported), which the site takes on."""

    __slots__ = ("_early", "_listener", "_pending_connections", "_sock", "_terminals")

    def __init__(
        self,
        runner: web.BaseRunner,
        *args: Any,
        pending: PendingConnections,
        terminals: Server | None = None,
        sock: socket.socket | None = None,
        listener: Listener | None = None,
        **kw: Any,
    ):
        super().__init__(runner, *args, **kw)
        self._pending_connections = pending
        self._terminals = terminals  # the server whose /ws/terminal the direct front serves
        self._sock = sock  # a listening socket handed over by a previous process (survive.py)
        self._early = listener  # taken on by the first start() only
        self._listener: Listener | None = None

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site (TCPSite.start would listen too)
        handler = self._runner.server
        assert handler is not None
        listener, self._early = self._early, None
        if listener is None:
            listener = Listener(self._pending_connections, self._terminals, Fallback())
            await listener.listen(
                sock=self._sock,
                host=self._host,
                port=self._port,
                ssl_context=self._ssl_context,
                backlog=self._backlog,
                reuse_address=self._reuse_address,
                reuse_port=self._reuse_port,
            )
        self._listener = listener
        listener.fallback.open(handler)
        self._server = listener.server
        sockets = listener.server.sockets if listener.server else ()
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port

    async def stop(self) -> None:
        await super().stop()
        if self._listener is not None:
            self._listener.abort_direct()
