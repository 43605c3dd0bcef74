"""Forwarding to the owner node: a WebSocket relay between a client and the node that owns its
session (``docs/scaling.md``, "Forwarding").

A node that does not own a key opens a WebSocket to the owner's ``/ws/terminal`` with the
client's query, credential, Host, Origin and offered subprotocols, plus the cluster secret and
the client's address (so the owner's per-address rules see the real client). It answers the
client's upgrade only once the owner answered, then copies frames both ways unchanged: the
owner's hello, output, acks and close code reach the client as the owner sent them; input,
resizes and the client's close code reach the owner. Pings and pongs are copied too, so the
owner's heartbeat measures the client itself, through the hop.

:class:`Relay` is a :class:`~tether.server.front.Front` for the core's bookkeeping only (drain
closes it with 1001); it holds no session.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING
from urllib.parse import urlencode

import aiohttp
from aiohttp import WSMsgType, web

from tether.errors import Refusal
from tether.protocol.codes import CloseCode, clip_reason
from tether.server.aiohttp_front.context import server_of, upgrade_of

if TYPE_CHECKING:  # redis is imported only by a server that joins a cluster
    from tether.server.cluster.node import ClusterNode

SESSION_KEY = web.AppKey("relay_session", aiohttp.ClientSession)
# The owner answers an upgrade in milliseconds (a new shell included); one that does not
# answer within its lease is being declared lost, and the placement is asked again.
CONNECT_MARGIN = 0.5
# Request headers the owner needs to decide as this node would (the credential among them).
_PASSED_HEADERS = ("Host", "Origin", "Authorization", "Cookie", "User-Agent")


def owner_ws_url(url: str, query: dict[str, str]) -> str:
    """The owner's ``/ws/terminal`` for an advertised ``http(s)://`` URL."""
    base = "ws" + url.removeprefix("http") if url.startswith("http") else url
    return f"{base.rstrip('/')}/ws/terminal?{urlencode(query)}"


class Relay:
    """One client connection relayed to its session's owner node."""

    def __init__(self, request: web.Request, ws: web.WebSocketResponse, address: str) -> None:
        self.request, self.ws, self.address = request, ws, address
        self.upstream: aiohttp.ClientWebSocketResponse | None = None
        self._closing: tuple[int, str] | None = None
        self._closed = asyncio.Event()

    # ---------------------------------------------------------------- Front
    def wake(self) -> None:
        """Nothing to do: the relay holds no session."""

    def send_message(self, message: dict[str, object]) -> None:
        """Nothing to do: the owner sends every message."""

    def close(self, code: int, reason: str) -> None:
        """Close both sides (drain: the client reconnects elsewhere)."""
        if self._closing is None:
            self._closing = (code, reason)
            self._closed.set()

    def heartbeat_tick(self) -> None:
        """Nothing to do: the owner's heartbeat crosses the relay."""

    # ---------------------------------------------------------------- relaying
    async def run(
        self, cluster: ClusterNode, owner_url: str, session: aiohttp.ClientSession
    ) -> None:
        request = self.request
        headers = {
            name: request.headers[name] for name in _PASSED_HEADERS if name in request.headers
        }
        headers.update(cluster.relay_headers(self.address))
        offered = request.headers.get("Sec-WebSocket-Protocol", "")
        protocols = tuple(item.strip() for item in offered.split(",") if item.strip())
        try:
            self.upstream = await asyncio.wait_for(
                session.ws_connect(
                    owner_ws_url(owner_url, dict(request.query)),
                    headers=headers,
                    protocols=protocols,
                    autoping=False,
                    autoclose=False,
                    max_msg_size=0,
                    compress=0,
                ),
                cluster.settings.cluster_lease + CONNECT_MARGIN,
            )
        except (aiohttp.ClientError, OSError, TimeoutError):
            await self._refuse_unreachable(cluster)
            return
        try:
            await self.ws.prepare(request)
        except BaseException:
            await self.upstream.close()
            raise
        await self._copy_both_ways(self.upstream)

    async def _refuse_unreachable(self, cluster: ClusterNode) -> None:
        """The owner did not answer: 4004 if it is lost by now, else 1013 (retry)."""
        server = server_of(self.request)
        placed = await server.place(self.address, upgrade_of(self.request), relayed=True)
        refusal = placed.refusal
        if refusal is None or refusal.code == CloseCode.TRY_AGAIN_LATER:
            refusal = Refusal(CloseCode.TRY_AGAIN_LATER, "owner node unreachable")
        server.on_refused(refusal, self.address)
        await self.ws.prepare(self.request)
        await self.ws.close(code=refusal.code, message=refusal.reason.encode())

    async def _copy_both_ways(self, upstream: aiohttp.ClientWebSocketResponse) -> None:
        down = asyncio.create_task(self._copy_down(upstream))
        up = asyncio.create_task(self._copy_up(upstream))
        closed = asyncio.create_task(self._closed.wait())
        try:
            await asyncio.wait({down, up, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (down, up, closed):
                task.cancel()
            await asyncio.gather(down, up, closed, return_exceptions=True)
        code, reason = self._closing or (CloseCode.NORMAL, "")
        with contextlib.suppress(ConnectionError, RuntimeError):
            if not self.ws.closed:
                await self.ws.close(code=code, message=clip_reason(reason).encode())
        with contextlib.suppress(ConnectionError, RuntimeError, aiohttp.ClientError):
            if not upstream.closed:
                await upstream.close(code=code, message=clip_reason(reason).encode())

    async def _copy_down(self, upstream: aiohttp.ClientWebSocketResponse) -> None:
        """Owner → client, until the owner closes (its code and reason go to the client)."""
        ws = self.ws
        while True:
            message = await upstream.receive()
            kind = message.type
            if kind is WSMsgType.TEXT:
                await ws.send_str(message.data)
            elif kind is WSMsgType.BINARY:
                await ws.send_bytes(message.data)
            elif kind is WSMsgType.PING:
                await ws.ping(message.data)
            elif kind is WSMsgType.PONG:
                await ws.pong(message.data)
            elif kind is WSMsgType.CLOSE:
                self.close(_sendable(message.data), str(message.extra or ""))
                return
            else:  # CLOSED, ERROR: the owner vanished; the client reconnects
                self.close(CloseCode.GOING_AWAY, "owner node connection lost")
                return

    async def _copy_up(self, upstream: aiohttp.ClientWebSocketResponse) -> None:
        """Client → owner, until the client closes (its code goes to the owner)."""
        ws = self.ws
        while True:
            message = await ws.receive()
            kind = message.type
            if kind is WSMsgType.BINARY:
                await upstream.send_bytes(message.data)
            elif kind is WSMsgType.TEXT:
                await upstream.send_str(message.data)
            elif kind is WSMsgType.PING:
                await upstream.ping(message.data)
            elif kind is WSMsgType.PONG:
                await upstream.pong(message.data)
            elif kind is WSMsgType.CLOSE:
                self.close(_sendable(message.data), str(message.extra or ""))
                return
            else:  # the client vanished or sent what the relay cannot take (1009)
                code = ws.close_code or CloseCode.GOING_AWAY
                self.close(code, "client connection lost")
                return


_SENDABLE = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013})


def _sendable(code: object) -> int:
    """A received close code as one that may be sent on (1005 "no status", 1006: 1000)."""
    number = code if isinstance(code, int) else 0
    return number if number in _SENDABLE or 3000 <= number < 5000 else 1000


async def relay(request: web.Request, ws: web.WebSocketResponse, address: str, url: str) -> None:
    """Serve one ``/ws/terminal`` connection through the owner node at ``url``."""
    server = server_of(request)
    assert server.cluster is not None
    connection = Relay(request, ws, address)
    with server.serving(connection):
        await connection.run(server.cluster, url, request.app[SESSION_KEY])


async def open_session(app: web.Application) -> None:
    """The client session relays use (one per app: its connection pool)."""
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    app[SESSION_KEY] = aiohttp.ClientSession(connector=connector, auto_decompress=False)


async def close_session(app: web.Application) -> None:
    if SESSION_KEY in app:
        await app[SESSION_KEY].close()
