"""A worker crash is not a node loss (issue 14): while a supervised node's worker is down for
longer than the lease, its supervisor renews the node's lease, so that the other nodes keep it
``up``, and a client of its sessions resumes through another node once the worker is back."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from typing import Any

import aiohttp
import pytest

from tests.cluster.conftest import CLUSTER_ENV, LEASE, running_cluster
from tests.cluster.test_cluster import connect, read_until
from tests.support.server import ServerProcess, wait_generation
from tether.server.supervisor import RESTART_DELAY_ENV

pytestmark = pytest.mark.timeout(90)

DOWN = 2.5 * LEASE  # the crashed worker is restarted only after this many seconds
CLIENT = "client-supervised-0001"


async def _json(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as answer:
        assert answer.status == 200, await answer.text()
        return await answer.json()


async def _state_of(http: aiohttp.ClientSession, base_url: str, node: str) -> str:
    view = await _json(http, f"{base_url}/stats/cluster")
    return str(next(entry["state"] for entry in view["nodes"] if entry["node"] == node))


async def test_a_crashed_worker_keeps_its_node_up_through_the_supervisor() -> None:
    with running_cluster(1) as cluster:
        args = ("--redis-url", cluster.redis.url, "--node-id", "node1", "--idle-timeout", "60")
        env = {**CLUSTER_ENV, RESTART_DELAY_ENV: str(DOWN)}
        supervised = ServerProcess(args=args, env=env, supervise=True)
        cluster.nodes.append(supervised)  # stopped (by its supervisor's PID) with the cluster
        supervised.start()
        async with aiohttp.ClientSession() as http:
            ws, hello = await connect(http, cluster.ws_url(1), client=CLIENT)
            await ws.send_bytes(b"echo before-$((1+1))\r")
            position = len(await read_until(ws, b"before-2"))
            before = await _json(http, f"{cluster.base_url(1)}/stats/sessions")
            worker = before["server"]["pid"]
            assert worker != supervised.pid  # the supervisor started it
            assert await _state_of(http, cluster.base_url(0), "node1") == "up"

            os.kill(worker, signal.SIGKILL)
            killed = time.monotonic()
            async for message in ws:
                if message.type is aiohttp.WSMsgType.BINARY:
                    position += len(message.data)
            # Longer than the lease with no worker: node0 still sees node1 up throughout.
            while time.monotonic() - killed < LEASE + 1.0:
                assert await _state_of(http, cluster.base_url(0), "node1") == "up"
                await asyncio.sleep(0.1)
            assert time.monotonic() - killed < DOWN  # the window was inside the downtime

            facts = await wait_generation(cluster.base_url(1), 2, DOWN + 20)  # the worker back
            assert facts["server"]["pid"] not in (worker, supervised.pid)

            ws, again = await connect(  # through node0: forwarded, not 4004
                http,
                cluster.ws_url(0),
                client=CLIENT,
                session=hello["session"],
                offset=position,
                create=0,
            )
            assert (again["created"], again["gap"], again["replay_from"]) == (False, 0, position)
            await ws.send_bytes(b"echo after-$((2+2))\r")
            await read_until(ws, b"after-4")
            await ws.close()
            assert await _state_of(http, cluster.base_url(0), "node1") == "up"

        output = "".join(supervised.output)
        assert "keeping the cluster lease of node node1" in output
        log = supervised.log_file.read_text(encoding="utf-8")
        succeeded = [json.loads(line) for line in log.splitlines() if "cluster_succeed" in line]
        assert succeeded and succeeded[-1]["kept"] == 1
        assert "cluster_lease_lost" not in log
