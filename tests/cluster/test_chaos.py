"""The chaos check through a non-owner node: the client's connections to node1 are cut at
random while node0 owns the session; output and typed input stay exact across the hop."""

from __future__ import annotations

import aiohttp
import pytest

from tests.cluster.conftest import running_cluster
from tests.support.chaos import chaos_client, print_and_type_through_cuts
from tether.tools.proxy import TcpProxy

pytestmark = pytest.mark.timeout(90)

LINES = 1000


async def test_random_cuts_through_a_forwarding_node_lose_and_double_nothing() -> None:
    with running_cluster(2, "--storm-threshold", "100000") as cluster:
        owner = chaos_client(cluster.ws_url(0))
        async with aiohttp.ClientSession() as http:
            await owner.connect(http)  # the session is node0's
            assert owner.ws is not None
            await owner.ws.close()
            proxy = TcpProxy("127.0.0.1", cluster.nodes[1].port)
            await proxy.start()
            client = chaos_client(proxy.url())
            client.session, client.connects = owner.session, 0
            await client.connect(http)
            run = await print_and_type_through_cuts(
                client, proxy, http, lines=LINES, keys=200, line_delay=0.004,
                cut_every=(0.02, 0.06), seed=11, timeout=60,
            )  # fmt: skip
            await proxy.close()
        assert run.numbers == list(range(1, LINES + 1))
        assert run.cuts >= 30 and client.connects >= 30, (run.cuts, client.connects)
        typed_file = cluster.nodes[0].project_dir / "typed.txt"
        assert typed_file.read_bytes() == run.typed
