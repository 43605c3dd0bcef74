"""The chaos check through a non-owner node: the client's connections to node1 are cut at
random while node0 owns the session; output and typed input stay exact across the hop."""

from __future__ import annotations

import asyncio
import random
import re

import aiohttp
import pytest

from tests.cluster.conftest import running_cluster
from tests.integration.test_chaos import ResumingClient
from tests.support.wsclient import strip_ansi
from tether.tools.proxy import TcpProxy

pytestmark = pytest.mark.timeout(90)

LINES = 1000


async def test_random_cuts_through_a_forwarding_node_lose_and_double_nothing() -> None:
    with running_cluster(2, "--storm-threshold", "100000") as cluster:
        owner = ResumingClient(cluster.ws_url(0))
        async with aiohttp.ClientSession() as http:
            await owner.connect(http)  # the session is node0's
            assert owner.ws is not None
            await owner.ws.close()
            proxy = TcpProxy("127.0.0.1", cluster.nodes[1].port)
            await proxy.start()
            client = ResumingClient(proxy.url())
            client.session, client.connects = owner.session, 0
            rng = random.Random(11)
            typed = bytearray()
            await client.connect(http)
            await client.type(b"stty -echo; PS1=''\r")
            await client.type(
                f"(for i in $(seq 1 {LINES}); do echo n$i; sleep 0.004; done; echo END-OF-$((6*7)))"
                " & cat > typed.txt\r".encode()
            )
            stop = asyncio.Event()

            async def chaos() -> int:
                cuts = 0
                while not stop.is_set():
                    await asyncio.sleep(rng.uniform(0.02, 0.06))
                    cuts += proxy.abort_all()
                return cuts

            async def typist() -> None:
                for i in range(200):
                    token = f"k{i}\n".encode()
                    typed.extend(token)
                    await client.type(token)
                    await asyncio.sleep(0.01)

            chaos_task = asyncio.create_task(chaos())
            typing_task = asyncio.create_task(typist())
            loop = asyncio.get_running_loop()
            await client.run_until(b"END-OF-42", http, loop.time() + 60)
            await typing_task
            stop.set()
            cuts = await chaos_task
            await client.type(b"\x04")
            await client.run_until(b"\x00never", http, loop.time() + 1.5)
            if client.ws is not None:
                await client.ws.close()
            await proxy.close()
        text = strip_ansi(bytes(client.output)).replace("\r", "")
        numbers = [int(n) for n in re.findall(r"^n(\d+)$", text, flags=re.MULTILINE)]
        assert numbers == list(range(1, LINES + 1))
        assert cuts >= 30 and client.connects >= 30, (cuts, client.connects)
        typed_file = cluster.nodes[0].project_dir / "typed.txt"
        assert typed_file.read_bytes() == bytes(typed)
