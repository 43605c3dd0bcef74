"""The listening socket before its fallback front is there (a new worker's first moments after an
upgrade or a crash, while aiohttp is still to be imported): requests for the fallback wait,
with every byte they sent, and reach it in order once it comes; real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from tests.support.server import eventually, inprocess_server
from tether.server.direct_front.listener import Fallback, Listener
from tether.server.pending import PendingConnections


class _Recorder(asyncio.Protocol):
    """A fallback front that answers each connection's bytes once it saw a blank line."""

    def __init__(self, seen: list[bytes]) -> None:
        self.seen = seen
        self.received = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received += data
        if self.received.endswith(b"\r\n\r\n") and self.transport is not None:
            self.seen.append(self.received)
            self.transport.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
            self.transport.close()


@contextlib.asynccontextmanager
async def _listening() -> AsyncIterator[tuple[Listener, PendingConnections, int]]:
    """A listener with no fallback yet (and no direct front: every connection is for it)."""
    pending = PendingConnections(8, lambda _address: False)
    listener = Listener(pending, None, Fallback())
    server = await listener.listen(host="127.0.0.1", port=0)
    try:
        yield listener, pending, server.sockets[0].getsockname()[1]
    finally:
        server.close()
        listener.abort_direct()
        await server.wait_closed()


async def test_requests_wait_for_the_fallback_and_reach_it_whole() -> None:
    seen: list[bytes] = []
    async with _listening() as (listener, _pending, port):
        first = await asyncio.open_connection("127.0.0.1", port)
        first[1].write(b"GET /healthz HTTP/1.1\r\nHost: a\r\n")
        second = await asyncio.open_connection("127.0.0.1", port)
        second[1].write(b"GET /api/sessions HTTP/1.1\r\nHost: b\r\n\r\n")
        await eventually(lambda: len(listener.fallback.parked) == 2)
        first[1].write(b"X-More: 1\r\n\r\n")  # sent while parked: waits in the kernel
        await first[1].drain()
        assert seen == []  # nothing is answered before the fallback is there

        listener.fallback.open(lambda: _Recorder(seen))
        answers = [await asyncio.wait_for(r.read(), 10) for r, _ in (first, second)]
        assert answers == [b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"] * 2
        assert sorted(seen) == [  # each connection's bytes whole and in order
            b"GET /api/sessions HTTP/1.1\r\nHost: b\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nHost: a\r\nX-More: 1\r\n\r\n",
        ]
        for _, writer in (first, second):
            writer.close()


async def test_a_connection_that_leaves_while_parked_is_forgotten() -> None:
    seen: list[bytes] = []
    async with _listening() as (listener, pending, port):
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\n")
        await eventually(lambda: len(listener.fallback.parked) == 1)
        writer.close()
        await eventually(lambda: not listener.fallback.parked)
        await eventually(lambda: pending.count("127.0.0.1") == 0)  # no longer counted
        listener.fallback.open(lambda: _Recorder(seen))
        assert seen == []


async def test_settle_waits_while_a_terminal_head_is_coming_and_no_longer_than_its_bound() -> None:
    async with inprocess_server() as srv:
        server = srv.server
        listener = Listener(server.pending, server, Fallback())
        asyncio_server = await listener.listen(host="127.0.0.1", port=0)
        port = asyncio_server.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        try:
            started = loop.time()
            await listener.settle(quiet=0.05, longest=5.0)  # nothing under way: quiet at once
            assert loop.time() - started < 2.0

            # An HTTP request (the fallback's) does not hold it up ...
            _, http = await asyncio.open_connection("127.0.0.1", port)
            http.write(b"GET /api/sessions HTTP/1.1\r\nHost: x\r\n\r\n")
            await eventually(lambda: len(listener.fallback.parked) == 1)
            started = loop.time()
            await listener.settle(quiet=0.05, longest=5.0)
            assert loop.time() - started < 2.0

            # ... a terminal's head still coming does, until the bound.
            _, slow = await asyncio.open_connection("127.0.0.1", port)
            slow.write(b"GET /ws/terminal?project=default HTTP/1.1\r\n")
            await eventually(lambda: listener.undecided == 1)
            started = loop.time()
            await listener.settle(quiet=0.05, longest=0.6)
            assert 0.5 <= loop.time() - started < 3.0
            slow.close()
            await eventually(lambda: listener.undecided == 0)  # it left: quiet again
            http.close()
        finally:
            asyncio_server.close()
            listener.abort_direct()
            await asyncio_server.wait_closed()
