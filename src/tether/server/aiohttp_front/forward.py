"""Forwarding to the owner node: a byte relay between a client and the node that owns its
session (``docs/scaling.md``, "Forwarding").

A node that does not own a key opens a TCP (or TLS) connection to the owner and sends it the
client's WebSocket upgrade: the client's query, ``Sec-WebSocket-Key``, credential, Host, Origin
and offered subprotocols, plus the cluster secret and the client's address (so the owner's
per-address rules see the real client). Once the owner's answer has come, the relay takes the
client's connection over from aiohttp, writes the owner's answer to it unchanged (its ``101``
carries the accept value of the client's own key, and the subprotocol the owner chose) and from
then on copies bytes both ways without reading them: the WebSocket frames of the owner (hello,
output, acks, pings, close code) reach the client as the owner wrote them, and the client's
(masked) frames reach the owner as the client wrote them. Nothing is parsed or framed again.

The one thing the relay reads is where each of the owner's frames ends (:class:`FrameBoundaries`,
two to fourteen header bytes a frame), so that a drain can close the client with 1001 between
two frames.

:class:`Relay` is a :class:`~tether.server.front.Front` for the core's bookkeeping only (drain
closes it with 1001); it holds no session.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
from typing import TYPE_CHECKING, cast
from urllib.parse import urlencode, urlsplit

import aiohttp
from aiohttp import web

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
_MAX_HEAD = 64 * 1024  # the owner's answer to the upgrade, up to its empty line
_WRITE_BUFFER = 256 * 1024


def owner_ws_url(url: str, query: dict[str, str]) -> str:
    """The owner's ``/ws/terminal`` for an advertised ``http(s)://`` URL."""
    base = "ws" + url.removeprefix("http") if url.startswith("http") else url
    return f"{base.rstrip('/')}/ws/terminal?{urlencode(query)}"


def upgrade_request(url: str, query: dict[str, str], headers: dict[str, str]) -> bytes:
    """The HTTP/1.1 upgrade the relay sends the owner at advertised ``url``."""
    target = urlsplit(owner_ws_url(url, query))
    lines = [f"GET {target.path}?{target.query} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class FrameBoundaries:
    """Follows a WebSocket byte stream by its frame headers only: where each frame ends."""

    def __init__(self) -> None:
        self._left = 0  # payload bytes of the current frame still to come
        self._header = bytearray()  # a header read so far (frames are cut anywhere)
        self.closed = False  # a close frame has started

    @property
    def at_boundary(self) -> bool:
        """True when everything fed so far ends with a whole frame."""
        return self._left == 0 and not self._header

    def feed(self, data: bytes) -> int:
        """Follow ``data``; returns the offset in it just after the first frame that ends in
        it (0 when it starts at a boundary), or -1 when none does."""
        first = 0 if self.at_boundary else -1
        position, size = 0, len(data)
        while position < size:
            if self._left:
                step = min(self._left, size - position)
                self._left -= step
                position += step
            else:
                self._header.append(data[position])
                position += 1
                length = _frame_payload(self._header)
                if length is None:
                    continue
                self.closed = self.closed or self._header[0] & 0x0F == 0x8
                self._header.clear()
                self._left = length
            if first < 0 and self.at_boundary:
                first = position
        return first


def _frame_payload(header: bytearray) -> int | None:
    """The payload length of a complete frame ``header``; None while it is incomplete."""
    if len(header) < 2:
        return None
    code, masked = header[1] & 0x7F, header[1] & 0x80
    extended = 2 if code == 126 else 8 if code == 127 else 0
    if len(header) < 2 + extended + (4 if masked else 0):
        return None
    if extended == 2:
        return int(struct.unpack_from(">H", header, 2)[0])
    if extended == 8:
        return int(struct.unpack_from(">Q", header, 2)[0])
    return code


def close_frame(code: int, reason: str) -> bytes:
    """A server's (unmasked) close frame."""
    payload = struct.pack(">H", code) + clip_reason(reason).encode()
    return bytes((0x88, len(payload))) + payload


class _End(asyncio.Protocol):
    """One connection of the relay: what it receives goes to ``received``; its write buffer
    filling up pauses reading from the other connection (``peer``)."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.transport: asyncio.Transport | None = None
        self.peer: _End | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        # Room for a few of the owner's largest reads before reading the other side pauses.
        self.transport.set_write_buffer_limits(high=_WRITE_BUFFER)

    def data_received(self, data: bytes) -> None:
        self.relay.received(self, data)

    def eof_received(self) -> bool | None:
        self.relay.ended(self)
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.ended(self)

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()  # what was written still goes out first


class Relay:
    """One client connection relayed to its session's owner node."""

    def __init__(self, request: web.Request, ws: web.WebSocketResponse, address: str) -> None:
        self.request, self.ws, self.address = request, ws, address
        self.upstream = _End(self)
        self.client: _End | None = None  # once the client's connection is taken over
        self._taken_from: asyncio.BaseProtocol | None = None  # aiohttp's, until then
        self.frames = FrameBoundaries()  # of the owner's stream
        self._upgraded = False  # the owner answered 101 (else its answer is plain HTTP)
        self._answer = bytearray()  # the owner's bytes until the client's connection is ours
        self._answered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._closing: tuple[int, str] | None = None
        self._done = asyncio.Event()

    # ---------------------------------------------------------------- Front
    def wake(self) -> None:
        """Nothing to do: the relay holds no session."""

    def send_message(self, message: dict[str, object]) -> None:
        """Nothing to do: the owner sends every message."""

    @property
    def close_sent(self) -> bool:
        return False  # its close waits for a frame boundary: an upgrade waits until it ends

    def close(self, code: int, reason: str) -> None:
        """Close the client with ``code`` between two of the owner's frames (drain: the client
        reconnects elsewhere), and the connection to the owner."""
        if self._closing is not None:
            return
        self._closing = (code, reason)
        if self.client is None:
            self._done.set()  # not relaying yet: run() refuses the client with it
        elif self.frames.at_boundary:
            self._close_client_now()
        # else: the next bytes from the owner complete the frame (received() closes then)

    def heartbeat_tick(self) -> None:
        """Nothing to do: the owner's heartbeat crosses the relay."""

    # ---------------------------------------------------------------- relaying
    async def run(self, cluster: ClusterNode, owner_url: str) -> None:
        timeout = cluster.settings.cluster_lease + CONNECT_MARGIN
        try:
            await asyncio.wait_for(self._ask_owner(cluster, owner_url), timeout)
        except (OSError, TimeoutError, ValueError):
            self.upstream.close()
            await self._refuse_unreachable(cluster)
            return
        if self._closing is not None:  # drained meanwhile
            self.upstream.close()
            await self._refuse(Refusal(*self._closing))
            return
        if self.request.transport is None or self.request.transport.is_closing():
            self.upstream.close()  # the client went meanwhile
            return
        self._take_client()
        try:
            await self._done.wait()
        finally:
            self.upstream.close()
            if self.client is not None:
                self.client.close()
            if self._taken_from is not None:  # aiohttp's end of it: the connection is over
                self._taken_from.connection_lost(None)

    async def _ask_owner(self, cluster: ClusterNode, owner_url: str) -> None:
        target = urlsplit(owner_url)
        secure = target.scheme == "https"
        loop = asyncio.get_running_loop()
        await loop.create_connection(
            lambda: self.upstream,
            target.hostname or "",
            target.port or (443 if secure else 80),
            ssl=ssl.create_default_context() if secure else None,
        )
        request = self.request
        headers = {n: request.headers[n] for n in _PASSED_HEADERS if n in request.headers}
        headers.setdefault("Host", target.netloc)
        headers |= {
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": request.headers["Sec-WebSocket-Key"],
        }
        offered = request.headers.get("Sec-WebSocket-Protocol")
        if offered:
            headers["Sec-WebSocket-Protocol"] = offered
        headers |= cluster.relay_headers(self.address)
        self.upstream.write(upgrade_request(owner_url, dict(request.query), headers))
        await self._answered

    def _take_client(self) -> None:
        """From aiohttp: the client's connection is the relay's from now on."""
        transport = cast(asyncio.Transport, self.request.transport)
        client = self.client = _End(self)
        client.peer, self.upstream.peer = self.upstream, client
        self._taken_from = transport.get_protocol()
        transport.set_protocol(client)
        client.connection_made(transport)
        if not transport.is_reading():
            transport.resume_reading()
        answer, self._answer = bytes(self._answer), bytearray()
        self._upgraded = answer.startswith(b"HTTP/1.1 101 ")
        head_end = answer.index(b"\r\n\r\n") + 4
        client.write(answer[:head_end])
        self._to_client(answer[head_end:])

    def received(self, end: _End, data: bytes) -> None:
        if self.client is not None and self._done.is_set():
            return  # closing: nothing more crosses (not after a close frame of ours)
        if end is self.client:
            self.upstream.write(data)
        elif self.client is not None:
            self._to_client(data)
        else:  # the owner's answer, before the client's connection is ours
            self._answer += data
            if len(self._answer) > _MAX_HEAD and b"\r\n\r\n" not in self._answer:
                self._answer_failed(ValueError("the owner's answer is too long"))
            elif not self._answered.done() and b"\r\n\r\n" in self._answer:
                self._answered.set_result(None)

    def _to_client(self, data: bytes) -> None:
        assert self.client is not None
        cut = self.frames.feed(data)
        if self._closing is None or cut < 0:
            self.client.write(data)
            return
        self.client.write(data[:cut])  # a drain waited for this frame's end
        self._close_client_now()

    def _close_client_now(self) -> None:
        assert self.client is not None and self._closing is not None
        if self._upgraded and not self.frames.closed:  # else the owner's own close went first
            self.client.write(close_frame(*self._closing))
        self._done.set()

    def ended(self, end: _End) -> None:
        if not self._answered.done():
            self._answer_failed(ConnectionResetError("the owner closed the connection"))
        if self._done.is_set():
            return
        if end is self.upstream and self.client is not None and self.frames.at_boundary:
            # The owner went without a close frame (its process died, the network between the
            # nodes failed): say so, as the owner's own close would (the client resumes).
            self._closing = (CloseCode.GOING_AWAY, "owner node connection lost")
            self._close_client_now()
        self._done.set()

    def _answer_failed(self, error: Exception) -> None:
        if not self._answered.done():
            self._answered.set_exception(error)

    async def _refuse_unreachable(self, cluster: ClusterNode) -> None:
        """The owner did not answer: 4004 if it is lost by now, else 1013 (retry)."""
        server = server_of(self.request)
        placed = await server.place(self.address, upgrade_of(self.request), relayed=True)
        refusal = placed.refusal
        if refusal is None or refusal.code == CloseCode.TRY_AGAIN_LATER:
            refusal = Refusal(CloseCode.TRY_AGAIN_LATER, "owner node unreachable")
        server.on_refused(refusal, self.address)
        await self._refuse(refusal)

    async def _refuse(self, refusal: Refusal) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.prepare(self.request)
            await self.ws.close(code=refusal.code, message=clip_reason(refusal.reason).encode())


async def relay(request: web.Request, ws: web.WebSocketResponse, address: str, url: str) -> None:
    """Serve one ``/ws/terminal`` connection through the owner node at ``url``."""
    server = server_of(request)
    assert server.cluster is not None
    connection = Relay(request, ws, address)
    with server.serving(connection):
        await connection.run(server.cluster, url)


async def open_session(app: web.Application) -> None:
    """The client session of this app's outgoing HTTP calls to other nodes."""
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    app[SESSION_KEY] = aiohttp.ClientSession(connector=connector, auto_decompress=False)


async def close_session(app: web.Application) -> None:
    if SESSION_KEY in app:
        await app[SESSION_KEY].close()
