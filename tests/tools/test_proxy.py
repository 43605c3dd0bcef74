"""The loopback TCP proxy: forwarding, cut, restore, abort."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tether.tools.proxy import TcpProxy


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def roundtrip(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(len(payload)), 5)
    finally:
        writer.close()


async def test_forwards_both_ways(echo_port: int) -> None:
    async with TcpProxy("127.0.0.1", echo_port) as proxy:
        payload = bytes(range(256)) * 1000
        assert await roundtrip(proxy.port, payload) == payload
        stats = proxy.statistics()
        assert stats.accepted == 1
        assert stats.bytes_up == len(payload)
        assert stats.bytes_down == len(payload)
        assert proxy.url() == f"ws://127.0.0.1:{proxy.port}/ws/terminal"


async def test_cut_aborts_and_refuses_then_restore_on_same_port(echo_port: int) -> None:
    async with TcpProxy("127.0.0.1", echo_port) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"x")
        assert await reader.readexactly(1) == b"x"
        port = proxy.port
        proxy.cut()
        assert proxy.is_cut
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            data = await asyncio.wait_for(reader.read(1), 5)
            if not data:
                raise ConnectionResetError
        writer.close()
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)
        await proxy.restore()
        assert proxy.port == port and not proxy.is_cut
        assert await roundtrip(port, b"again") == b"again"


async def test_abort_all_keeps_listening(echo_port: int) -> None:
    async with TcpProxy("127.0.0.1", echo_port) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"1")
        await reader.readexactly(1)
        assert proxy.abort_all() == 1
        assert await asyncio.wait_for(reader.read(1), 5) == b""
        writer.close()
        assert await roundtrip(proxy.port, b"2") == b"2"
        assert proxy.statistics().aborted == 1


async def test_random_aborts_use_injected_random(echo_port: int) -> None:
    async with TcpProxy("127.0.0.1", echo_port, abort_probability=0.5, random=lambda: 0.1) as p:
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        writer.write(b"doomed")
        assert await asyncio.wait_for(reader.read(10), 5) == b""
        writer.close()
        p.abort_probability = 0.0
        assert await roundtrip(p.port, b"fine") == b"fine"


async def test_unreachable_target_closes_client() -> None:
    probe = await asyncio.start_server(_echo, "127.0.0.1", 0)
    dead_port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    async with TcpProxy("127.0.0.1", dead_port) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        with pytest.raises(ConnectionError):
            if not await asyncio.wait_for(reader.read(1), 5):
                raise ConnectionResetError
        writer.close()


async def test_half_close_passes_through_and_late_bytes_arrive(echo_port: int) -> None:
    async with TcpProxy("127.0.0.1", echo_port) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        payload = b"last words" * 10000
        writer.write(payload)
        writer.write_eof()  # the echo server sees the end, echoes everything, then closes
        assert await asyncio.wait_for(reader.read(), 5) == payload
        writer.close()
        await writer.wait_closed()


async def test_connections_hold_no_task_once_up(echo_port: int) -> None:
    async with TcpProxy("127.0.0.1", echo_port) as proxy:
        before = len(asyncio.all_tasks())
        streams = [await asyncio.open_connection("127.0.0.1", proxy.port) for _ in range(50)]
        for reader, writer in streams:
            writer.write(b"ping")
            assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"
        # The echo server's handlers are tasks of their own: one per connection, no more.
        assert len(asyncio.all_tasks()) <= before + 50
        assert proxy.statistics().active == 50
        assert proxy.abort_all() == 50
        for _, writer in streams:
            writer.close()


def test_forwards_on_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> bytes:
        server = await asyncio.start_server(_echo, "127.0.0.1", 0)
        try:
            async with TcpProxy("127.0.0.1", server.sockets[0].getsockname()[1]) as proxy:
                reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
                # Sent at once, while the proxy is still connecting to the target.
                writer.write(bytes(range(256)) * 400)
                writer.write_eof()
                echoed = await asyncio.wait_for(reader.read(), 5)
                writer.close()
                await writer.wait_closed()
                return echoed
        finally:
            server.close()
            await server.wait_closed()

    assert uvloop.run(scenario()) == bytes(range(256)) * 400
