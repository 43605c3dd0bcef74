"""Restart survival inside a cluster: a node's process upgrades in place (1012), keeps its
sessions and its node id at once (``SUCCEED``), and its clients resume through another node."""

from __future__ import annotations

import json
import time
from pathlib import Path

import aiohttp
import pytest

from tests.cluster.conftest import running_cluster
from tests.cluster.test_cluster import connect, read_until

pytestmark = pytest.mark.timeout(60)


async def test_a_restarted_node_keeps_its_sessions_for_the_whole_cluster() -> None:
    with running_cluster(2) as cluster:
        async with aiohttp.ClientSession() as http:
            ws, hello = await connect(http, cluster.ws_url(0), client="client-restart-0001")
            await ws.send_bytes(b"echo before-$((1+1))\r")
            position = len(await read_until(ws, b"before-2"))
            async with http.post(f"{cluster.base_url(0)}/api/restart", json={}) as answer:
                assert answer.status == 202, await answer.text()
            async for message in ws:
                if message.type is aiohttp.WSMsgType.BINARY:
                    position += len(message.data)
            assert ws.close_code == 1012
            restarted = time.monotonic()
            again = None
            while again is None:  # through the other node, as soon as the owner answers
                try:
                    ws, again = await connect(
                        http,
                        cluster.ws_url(1),
                        client="client-restart-0001",
                        session=hello["session"],
                        offset=position,
                        create=0,
                    )
                except AssertionError as refused:
                    assert "1013" in str(refused) or "1012" in str(refused), refused
                    assert time.monotonic() - restarted < 10
            assert (again["created"], again["gap"], again["replay_from"]) == (False, 0, position)
            await ws.send_bytes(b"echo after-$((2+2))\r")
            await read_until(ws, b"after-4")
            await ws.close()
        log = Path(cluster.nodes[0].log_file).read_text(encoding="utf-8")
        succeeded = [json.loads(line) for line in log.splitlines() if "cluster_succeed" in line]
        assert succeeded and succeeded[-1]["kept"] == 1
        assert "cluster_lease_lost" not in log
