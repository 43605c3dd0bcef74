"""A loopback TCP proxy that can make a server unreachable on demand.

Tests and ``tether check`` put it between a client and a server::

    async with TcpProxy("127.0.0.1", server_port) as proxy:
        url = f"ws://127.0.0.1:{proxy.port}/ws/terminal"
        ...
        proxy.cut()            # every connection aborted, new ones refused: server unreachable
        await proxy.restore()  # listening again on the same port
        proxy.abort_all()      # drop the current connections only (a network blip)

``cut`` closes the listening socket, so a connect attempt fails at once with "connection
refused" (no timeout to wait for). With ``abort_probability`` every forwarded chunk has that
chance (drawn from the injected ``random``) of aborting its connection, to simulate a flaky network.

Each connection is a pair of :class:`asyncio.Protocol` objects that write what one receives to
the other's transport: no task and no stream buffer per connection once it is up (a task exists
only while the target is being connected), so that thousands of connections cost the process
little (``bench/capacity.py``'s herd cuts 4,000 at once). A side whose peer's write buffer is
full stops reading until it drains; an end of file is passed on (half close); a side lost
otherwise aborts both.
"""

from __future__ import annotations

import asyncio
import random as _random
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

_CLOSE_TIMEOUT = 5.0


@dataclass(frozen=True)
class ProxyStatistics:
    """Counters of a proxy since it started."""

    accepted: int
    active: int
    aborted: int
    bytes_up: int
    bytes_down: int
    is_cut: bool


class _Side(asyncio.Protocol):
    """One end of a proxied connection: what it receives goes to the other end's transport."""

    def __init__(self, link: _Link, *, upstream: bool) -> None:
        self.link = link
        self.upstream = upstream  # True: the client's end (its bytes go up to the target)
        self.transport: asyncio.Transport | None = None
        self.saw_eof = False

    @property
    def peer(self) -> _Side | None:
        return self.link.target if self.upstream else self.link.client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a TCP transport
        self.link.proxy._opened(self)

    def data_received(self, data: bytes) -> None:
        self.link.forward(self, data)

    def eof_received(self) -> bool:
        self.saw_eof = True
        if self.link.early is not None:
            return True  # passed on once the target is connected
        peer = self.peer
        if peer is not None and peer.transport is not None and peer.transport.can_write_eof():
            peer.transport.write_eof()
        if peer is None or peer.saw_eof:
            self.link.proxy._end(self.link, graceful=True)
            return False
        return True  # keep the other direction open

    def connection_lost(self, exc: Exception | None) -> None:
        self.link.proxy._closed(self)
        # A clean close lets the peer flush what it still has to write; a reset does not.
        self.link.proxy._end(self.link, graceful=exc is None)

    # The *peer's* reading follows this side's write buffer.
    def pause_writing(self) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.pause_reading()

    def resume_writing(self) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.transport.is_closing():
            peer.transport.resume_reading()


class _Link:
    """One proxied connection: the client's side and, once connected, the target's side."""

    def __init__(self, proxy: TcpProxy) -> None:
        self.proxy = proxy
        self.client = _Side(self, upstream=True)
        self.target: _Side | None = None
        # What the client sent while the target was being connected (None once it is).
        self.early: list[bytes] | None = []
        self.ended = False

    def forward(self, side: _Side, data: bytes) -> None:
        if self.early is not None:
            self.early.append(data)  # the target is being connected: forwarded once it is
            return
        proxy, peer = self.proxy, side.peer
        if proxy.abort_probability and proxy._random() < proxy.abort_probability:
            proxy._abort(self)
            return
        if peer is None or peer.transport is None or peer.transport.is_closing():
            return
        peer.transport.write(data)
        proxy._count(len(data), upstream=side.upstream)

    def abort(self, *, graceful: bool = False) -> None:
        """Close both ends: at once, or after each has written what it holds."""
        self.ended = True
        for side in (self.client, self.target):
            if side is not None and side.transport is not None:
                if graceful:
                    side.transport.close()
                else:
                    side.transport.abort()


class TcpProxy:
    """Forward ``host:port`` (127.0.0.1, a free port by default) to ``target_host:target_port``."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        abort_probability: float = 0.0,
        random: Callable[[], float] = _random.random,
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.host = host
        self.port = port
        self.abort_probability = abort_probability
        self._random = random
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._sides: set[_Side] = set()  # every end whose socket is open
        self._connecting: set[asyncio.Task[None]] = set()
        self._all_closed: asyncio.Future[None] | None = None
        self._accepted = self._aborted = self._up = self._down = 0

    async def __aenter__(self) -> TcpProxy:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def is_cut(self) -> bool:
        """True while the proxy refuses connections."""
        return self._server is None

    def url(self, scheme: str = "ws", path: str = "/ws/terminal") -> str:
        """The proxy's address as a URL, by default the WebSocket endpoint."""
        return f"{scheme}://{self.host}:{self.port}{path}"

    async def start(self) -> None:
        """Listen (again, on the same port once one was chosen)."""
        if self._server is None:
            loop = asyncio.get_running_loop()
            self._server = await loop.create_server(self._accept, self.host, self.port)
            self.port = self._server.sockets[0].getsockname()[1]

    async def restore(self) -> None:
        """Accept connections again after :meth:`cut`."""
        await self.start()

    def cut(self) -> None:
        """Make the target unreachable: stop listening and abort every connection."""
        if self._server is not None:
            self._server.close()
            self._server = None
        self.abort_all()

    def abort_all(self) -> int:
        """Abort every current connection (new ones are still accepted); returns how many."""
        links = list(self._links)
        for link in links:
            self._abort(link)
        return len(links)

    async def close(self) -> None:
        """Stop listening, abort everything and wait until every socket is closed."""
        self.cut()
        for task in list(self._connecting):
            task.cancel()
        await asyncio.gather(*self._connecting, return_exceptions=True)
        if self._sides:
            self._all_closed = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self._all_closed, _CLOSE_TIMEOUT)
            except TimeoutError:
                pass
            finally:
                self._all_closed = None

    def statistics(self) -> ProxyStatistics:
        """A snapshot of the counters."""
        return ProxyStatistics(
            self._accepted, len(self._links), self._aborted, self._up, self._down, self.is_cut
        )

    # -- forwarding --------------------------------------------------------------------------

    def _accept(self) -> _Side:
        self._accepted += 1
        return _Link(self).client

    def _opened(self, side: _Side) -> None:
        self._sides.add(side)
        if side.upstream:
            task = asyncio.get_running_loop().create_task(self._connect(side.link))
            self._connecting.add(task)
            task.add_done_callback(self._connecting.discard)

    async def _connect(self, link: _Link) -> None:
        loop = asyncio.get_running_loop()
        target = _Side(link, upstream=False)
        link.target = target
        try:
            await loop.create_connection(lambda: target, self.target_host, self.target_port)
        except OSError:
            link.abort()
            return
        except asyncio.CancelledError:
            link.abort()
            raise
        client = link.client.transport
        if link.ended or client is None or client.is_closing():
            link.abort()
            return
        self._links.add(link)
        early, link.early = link.early or [], None
        for data in early:
            link.forward(link.client, data)
        if link.client.saw_eof:
            link.client.eof_received()

    def _closed(self, side: _Side) -> None:
        self._sides.discard(side)
        if not self._sides and self._all_closed is not None and not self._all_closed.done():
            self._all_closed.set_result(None)

    def _end(self, link: _Link, *, graceful: bool) -> None:
        self._links.discard(link)
        link.abort(graceful=graceful)

    def _count(self, size: int, *, upstream: bool) -> None:
        if upstream:
            self._up += size
        else:
            self._down += size

    def _abort(self, link: _Link) -> None:
        if link in self._links:
            self._aborted += 1
        self._end(link, graceful=False)
