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
"""

from __future__ import annotations

import asyncio
import contextlib
import random as _random
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

_CHUNK = 65536


@dataclass(frozen=True)
class ProxyStatistics:
    """Counters of a proxy since it started."""

    accepted: int
    active: int
    aborted: int
    bytes_up: int
    bytes_down: int
    is_cut: bool


class _Link:
    """One proxied connection: the client side and the target side."""

    def __init__(self, client: asyncio.StreamWriter, target: asyncio.StreamWriter) -> None:
        self.client = client
        self.target = target

    def abort(self) -> None:
        for writer in (self.client, self.target):
            writer.transport.abort()


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
        self._tasks: set[asyncio.Task[None]] = set()
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
            self._server = await asyncio.start_server(self._accept, self.host, self.port)
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
        """Stop listening, abort everything and wait for the forwarding tasks to end."""
        self.cut()
        tasks = list(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=5)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def statistics(self) -> ProxyStatistics:
        """A snapshot of the counters."""
        return ProxyStatistics(
            self._accepted, len(self._links), self._aborted, self._up, self._down, self.is_cut
        )

    # -- forwarding --------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._forward(reader, writer)
        except asyncio.CancelledError:
            writer.transport.abort()  # close() gave up waiting: end quietly, asyncio logs otherwise
        finally:
            self._tasks.discard(task)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._accepted += 1
        try:
            target_reader, target_writer = await asyncio.open_connection(
                self.target_host, self.target_port
            )
        except OSError:
            writer.transport.abort()
            return
        link = _Link(writer, target_writer)
        self._links.add(link)
        try:
            await asyncio.gather(
                self._pump(reader, target_writer, link, upstream=True),
                self._pump(target_reader, writer, link, upstream=False),
            )
        finally:
            self._links.discard(link)
            link.abort()

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        link: _Link,
        *,
        upstream: bool,
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(_CHUNK):
                if self.abort_probability and self._random() < self.abort_probability:
                    self._abort(link)
                    return
                writer.write(data)
                await writer.drain()
                self._count(len(data), upstream=upstream)
            if writer.can_write_eof():
                writer.write_eof()

    def _count(self, size: int, *, upstream: bool) -> None:
        if upstream:
            self._up += size
        else:
            self._down += size

    def _abort(self, link: _Link) -> None:
        if link in self._links:
            self._links.discard(link)
            self._aborted += 1
        link.abort()
