"""A re-attach's upgrade answer, hello and replay reach the client together: one read gets all
three (the client wakes once, not three times; docs/benchmarks.md, issue 17)."""

from __future__ import annotations

import asyncio
import base64
import os

import pytest

from tests.support.server import start_server
from tests.support.wsclient import must_connect

pytestmark = pytest.mark.timeout(60)


async def _first_read(port: int, query: str) -> bytes:
    """Open a WebSocket by hand and return the first bytes the server's answer brings."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET /ws/terminal?{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Protocol: tether.v1\r\n\r\n"
            ).encode()
        )
        return await asyncio.wait_for(reader.read(1 << 20), timeout=10)
    finally:
        writer.close()
        await writer.wait_closed()


async def test_a_reattach_answer_hello_and_replay_arrive_in_one_read() -> None:
    with start_server() as server:
        conn = await must_connect(server.ws_url, session="segment", project="default")
        await conn.send("echo one-segment-$((6*7))\r")
        await conn.read_until("one-segment-42")
        await conn.close()
        query = "session=segment&project=default&create=0&offset=0"
        for _ in range(3):  # below the per-key storm threshold
            first = await _first_read(server.port, query)
            head, _, frames = first.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101"), head
            assert b'"type": "hello"' in frames, first
            assert b"one-segment-42" in frames, first
