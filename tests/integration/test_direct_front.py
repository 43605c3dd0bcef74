"""The direct front: ``/ws/terminal`` served on the socket, every other request by aiohttp.

Byte-level behaviour a client meets: how the head may arrive, fragmented messages, pings,
invalid text, a client that pings and never reads, a head that never completes — and that
what is not a terminal upgrade is answered exactly as before.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct

import aiohttp

from tests.support.rawws import frame, raw_upgrade, read_until_closed
from tests.support.server import eventually, inprocess_server
from tests.support.wsclient import must_connect, strip_ansi
from tether.server.direct_front.connection import MAX_WRITE_BUFFER, DirectTerminal


def _frames(data: bytes) -> list[tuple[int, bytes]]:
    """The (opcode, payload) of each whole unmasked server frame in ``data``."""
    found, at = [], 0
    while at + 2 <= len(data):
        opcode, length = data[at] & 0x0F, data[at + 1] & 0x7F
        at += 2
        if length == 126:
            (length,) = struct.unpack("!H", data[at : at + 2])
            at += 2
        elif length == 127:
            (length,) = struct.unpack("!Q", data[at : at + 8])
            at += 8
        if at + length > len(data):
            break
        found.append((opcode, data[at : at + length]))
        at += length
    return found


def _read_until(sock: socket.socket, wanted: bytes, timeout: float = 10) -> bytes:
    sock.settimeout(timeout)
    received = b""
    while wanted not in received:
        chunk = sock.recv(65536)
        assert chunk, f"closed before {wanted!r}: {received[-300:]!r}"
        received += chunk
    return received


async def test_terminals_are_served_directly_and_other_requests_by_aiohttp() -> None:
    async with inprocess_server() as srv:
        conn = await must_connect(srv.ws_url, project="default")
        assert [type(front) for front in srv.server.connections] == [DirectTerminal]
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{srv.base_url}/api/sessions") as response:
                assert response.status == 200  # aiohttp's, as before
            # Not an upgrade: aiohttp answers it (an HTTP error), as before.
            async with http.get(f"{srv.base_url}/ws/terminal?project=default") as response:
                assert 400 <= response.status < 500
        await conn.send("echo DIRECT-$((40+2))\r")
        await conn.read_until("DIRECT-42")
        await conn.close()


async def test_a_head_sent_a_byte_at_a_time_with_a_frame_behind_it_is_served() -> None:
    async with inprocess_server() as srv:

        def dribble() -> bytes:
            with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
                head = (
                    f"GET /ws/terminal?project=default HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\n"
                    "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                    "Sec-WebSocket-Protocol: tether.v1\r\n\r\n"
                ).encode()
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                for byte in head[:-1]:
                    sock.sendall(bytes([byte]))
                # The head's last byte and the first input frame in one segment.
                sock.sendall(head[-1:] + frame(0x2, b"echo DRIBBLED-$((40+2))\r"))
                return _read_until(sock, b"DRIBBLED-42")

        received = await asyncio.to_thread(dribble)
        assert received.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
        assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in received


async def test_fragmented_messages_are_whole_input_and_pings_are_answered() -> None:
    async with inprocess_server() as srv:

        def talk() -> list[tuple[int, bytes]]:
            sock = raw_upgrade(srv.port)
            try:
                message = json.dumps({"type": "input", "data": "echo FRAG-$((40+2))\r"}).encode()
                sock.sendall(
                    frame(0x1, message[:5], fin=False)
                    + frame(0x9, b"are you there")  # a ping between the fragments
                    + frame(0x0, message[5:12], fin=False)
                    + frame(0x0, message[12:])
                    + frame(0x2, b"echo BIN-", fin=False)
                    + frame(0x0, b"$((40+3))\r")
                )
                received = _read_until(sock, b"BIN-43")
                return _frames(received)  # raw_upgrade read the 101
            finally:
                sock.close()

        frames = await asyncio.to_thread(talk)
        assert (0xA, b"are you there") in frames
        output = strip_ansi(b"".join(data for opcode, data in frames if opcode == 0x2))
        assert "FRAG-42" in output and "BIN-43" in output


async def test_invalid_text_closes_with_1007_and_the_session_stays() -> None:
    async with inprocess_server() as srv:
        conn = await must_connect(srv.ws_url, project="default", session="kept")

        def send_invalid() -> bytes:
            sock = raw_upgrade(srv.port, "project=default&session=other")
            try:
                sock.sendall(frame(0x1, b"\xff\xfe not utf-8"))
                return read_until_closed(sock, 10)
            finally:
                sock.close()

        received = await asyncio.to_thread(send_invalid)
        closes = [data for opcode, data in _frames(received) if opcode == 8]
        assert closes and struct.unpack("!H", closes[0][:2])[0] == 1007
        await conn.send("echo STILL-$((40+2))\r")
        await conn.read_until("STILL-42")
        await conn.close()


async def test_a_client_that_pings_and_never_reads_is_not_read_either() -> None:
    """Its pongs cannot pile up: past a bound of unsent bytes the server stops reading it."""
    async with inprocess_server() as srv:
        sock = await asyncio.to_thread(raw_upgrade, srv.port, "project=default", rcvbuf=4096)
        front = next(iter(srv.server.connections))
        assert isinstance(front, DirectTerminal)

        def flood() -> int:
            pings, sent = frame(0x9, b"p" * 125) * 2000, 0
            sock.settimeout(2)
            while sent < 200 * 1024 * 1024:  # far more than the bound, unless TCP stops us
                try:
                    sock.sendall(pings)
                except TimeoutError:
                    return sent  # the server stopped reading: TCP pushed back
                sent += len(pings)
            return sent

        try:
            sent = await asyncio.to_thread(flood)
            unsent = front.transport.get_write_buffer_size()
            assert unsent <= MAX_WRITE_BUFFER + 512 * 1024, unsent
            assert sent < 200 * 1024 * 1024, "the server kept reading"
        finally:
            sock.close()
        await eventually(lambda: not srv.server.connections, 10, "the connection ends")


async def test_a_head_that_never_completes_is_closed_at_the_handshake_timeout() -> None:
    async with inprocess_server(handshake_timeout=0.5) as srv:

        def stall() -> bytes:
            with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
                sock.sendall(b"GET /ws/terminal?project=default HTTP/1.1\r\nHost: x\r\n")
                return read_until_closed(sock, 10)  # fails if it is not closed in 10 s

        assert await asyncio.to_thread(stall) == b""
        assert len(srv.server.pending) == 0
