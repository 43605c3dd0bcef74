"""Flow control (docs/protocol.md, section 5): a stalled client slows the program and bounds memory;
a detached program never blocks; every byte arrives in order."""

from __future__ import annotations

import asyncio
import json
import re

import aiohttp
import psutil
import pytest

from tests.support.server import inprocess_server, start_server
from tests.support.wsclient import must_connect, strip_ansi

pytestmark = pytest.mark.timeout(180)

MiB = 1024 * 1024


def _check_sequence(text: str, last: int) -> None:
    numbers = [int(n) for n in re.findall(r"^(\d+)$", text, flags=re.MULTILINE)]
    assert numbers == list(range(1, last + 1)), "every line once, in order"


async def test_stalled_client_slows_the_program_and_bounds_server_memory() -> None:
    last = 6_500_000  # seq 1..6.5M prints about 52 MB
    with start_server("--buffer-size", str(MiB)) as server:
        process = psutil.Process(server.pid)
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(f"{server.ws_url}?project=default", max_msg_size=0)
            hello = json.loads((await ws.receive()).data)
            await ws.send_bytes(b"stty -echo; PS1=''; clear\r")
            await asyncio.sleep(0.5)
            rss_before = process.memory_info().rss
            await ws.send_bytes(f"seq 1 {last}; echo FLOOD-DONE\r".encode())
            peak = rss_before
            for _ in range(40):  # stall: read nothing for 20 s
                await asyncio.sleep(0.5)
                peak = max(peak, process.memory_info().rss)
            async with http.get(f"{server.base_url}/stats/sessions") as response:
                stats = (await response.json())["sessions"][0]
            assert stats["key"] == hello["key"]
            assert stats["output_position"] < 40 * MiB, "the program was slowed"
            assert peak - rss_before < 2 * MiB + 16 * MiB, (peak - rss_before) / MiB
            received = bytearray()
            while b"FLOOD-DONE" not in received[-200:]:
                message = await asyncio.wait_for(ws.receive(), 60)
                if message.type == aiohttp.WSMsgType.BINARY:
                    received += message.data
                elif message.type != aiohttp.WSMsgType.TEXT:
                    raise AssertionError(f"connection ended: {message}")
            await ws.close()
    text = strip_ansi(bytes(received)).replace("\r", "")
    text = text[: text.index("FLOOD-DONE")]
    _check_sequence(text, last)


async def test_detached_program_never_blocks_and_gap_is_reported() -> None:
    async with inprocess_server(buffer_size=64 * 1024) as srv:
        conn = await must_connect(srv.ws_url, project="default", client="detach-test-1")
        await conn.send("seq 1 200000; echo DONE-$((1+1))\r")
        await conn.read_until(b"seq 1 200000")
        position = conn.position
        await conn.close()
        session = srv.server.manager.sessions[conn.hello["key"]]
        for _ in range(200):
            if b"DONE-2" in session.ring.read(session.ring.tail, session.ring.size):
                break
            await asyncio.sleep(0.05)
        assert session.ring.head > 1_000_000, "the program ran to its end while detached"
        again = await must_connect(
            srv.ws_url,
            project="default",
            session=conn.hello["session"],
            offset=position,
            create=0,
            client="detach-test-1",
        )
        hello = again.hello
        assert hello["gap"] == hello["replay_from"] - position > 0
        assert hello["replay_from"] >= session.ring.head - 64 * 1024
        await again.read_until("DONE-2")
        await again.close()


async def test_two_clients_receive_identical_streams() -> None:
    async with inprocess_server(buffer_size=64 * 1024) as srv:
        one = await must_connect(srv.ws_url, project="default")
        two = await must_connect(
            srv.ws_url, project="default", session=one.hello["session"], offset=0
        )
        await one.send("seq 1 30000; echo END-$((2+2))\r")
        await one.read_until("END-4", 30)
        await two.read_until("END-4", 30)
        tail = min(len(one.output), len(two.output))
        assert bytes(one.output)[:tail] == bytes(two.output)[:tail]
        await one.close()
        await two.close()
