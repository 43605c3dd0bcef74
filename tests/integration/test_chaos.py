"""Hundreds of abrupt connection cuts through a loopback proxy while a shell prints a paced
sequence and keys are typed: the output stream and the typed bytes are exact."""

from __future__ import annotations

import aiohttp
import pytest

from tests.support.chaos import chaos_client, print_and_type_through_cuts
from tests.support.server import inprocess_server
from tether.tools.proxy import TcpProxy

pytestmark = pytest.mark.timeout(120)

LINES = 2500


async def test_random_cuts_lose_and_double_nothing() -> None:
    async with inprocess_server(storm_threshold=100000) as srv:
        proxy = TcpProxy("127.0.0.1", srv.port)
        await proxy.start()
        client = chaos_client(proxy.url())
        async with aiohttp.ClientSession() as http:
            await client.connect(http)
            run = await print_and_type_through_cuts(
                client, proxy, http, lines=LINES, keys=400, line_delay=0.003,
                cut_every=(0.01, 0.05), seed=7, timeout=90,
            )  # fmt: skip
        await proxy.close()
        assert run.numbers == list(range(1, LINES + 1))
        assert run.cuts >= 100 and client.connects >= 100, (run.cuts, client.connects)
        assert (srv.workdir / "project" / "typed.txt").read_bytes() == run.typed
