"""Three nodes, one Redis: any node serves any session, through its owner, exactly."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from typing import Any

import aiohttp
import pytest

from tests.cluster.conftest import LEASE, Cluster, reap, running_cluster
from tests.support.server import eventually
from tether.protocol.messages import SUBPROTOCOL

pytestmark = pytest.mark.timeout(60)

CLIENT = "client-cluster-0001"


async def connect(
    http: aiohttp.ClientSession, url: str, **query: Any
) -> tuple[aiohttp.ClientWebSocketResponse, dict[str, Any]]:
    params = {"project": "default", **{k: str(v) for k, v in query.items()}}
    ws = await http.ws_connect(url, params=params, protocols=(SUBPROTOCOL,), max_msg_size=0)
    first = await ws.receive(timeout=10)
    assert first.type is aiohttp.WSMsgType.TEXT, (first, ws.close_code)
    return ws, json.loads(first.data)


async def refused(http: aiohttp.ClientSession, url: str, **query: Any) -> tuple[int, str]:
    params = {"project": "default", **{k: str(v) for k, v in query.items()}}
    async with http.ws_connect(url, params=params, protocols=(SUBPROTOCOL,)) as ws:
        message = await ws.receive(timeout=10)
        assert message.type is aiohttp.WSMsgType.CLOSE, message
        return int(message.data), str(message.extra)


async def read_until(ws: aiohttp.ClientWebSocketResponse, needle: bytes) -> bytes:
    output = b""
    while needle not in output:
        message = await ws.receive(timeout=10)
        if message.type is aiohttp.WSMsgType.BINARY:
            output += message.data
        else:
            assert message.type is aiohttp.WSMsgType.TEXT, message
    return output


async def read_bytes(ws: aiohttp.ClientWebSocketResponse, count: int) -> bytes:
    output = b""
    while len(output) < count:
        message = await ws.receive(timeout=10)
        if message.type is aiohttp.WSMsgType.BINARY:
            output += message.data
    return output


async def test_cross_node_attach_and_resume_are_byte_exact(cluster: Cluster) -> None:
    async with aiohttp.ClientSession() as http:
        ws, hello = await connect(http, cluster.ws_url(1), client=CLIENT)
        assert hello["created"]
        key, session = hello["key"], hello["session"]
        await ws.send_bytes(b"for i in 1 2 3; do echo line-$i-$((i*7)); done\n")
        seen = await read_until(ws, b"line-3-21")
        await ws.close()

        # A resume through another node: the same hello fields the owner gives, byte-exact.
        ws, again = await connect(
            http, cluster.ws_url(0), client=CLIENT, session=session, offset=0, create=0
        )
        assert (again["key"], again["created"], again["replay_from"]) == (key, False, 0)
        assert again["input_acked"] == len(b"for i in 1 2 3; do echo line-$i-$((i*7)); done\n")
        replay = await read_bytes(ws, again["head"])
        assert replay[: len(seen)] == seen

        # Input through one node, output seen through a third one at the same time.
        other, third = await connect(
            http, cluster.ws_url(2), session=session, offset=again["head"], create=0
        )
        assert third["replay_from"] == again["head"] and third["gap"] == 0
        await ws.send_bytes(b"echo cross-$((40+2))\n")
        assert b"cross-42" in await read_until(other, b"cross-42")
        assert b"cross-42" in await read_until(ws, b"cross-42")
        await other.close()
        await ws.close()

        # Every node lists it, on the node that owns it.
        for index in range(3):
            async with http.get(f"{cluster.base_url(index)}/api/sessions") as answer:
                listed = (await answer.json())["sessions"]
            assert [(s["key"], s["node"], s["node_state"]) for s in listed] == [
                (key, "node1", "up")
            ]
        assert len(cluster.shells()) == 1


async def connect_retrying(
    http: aiohttp.ClientSession, url: str, **query: Any
) -> tuple[aiohttp.ClientWebSocketResponse, dict[str, Any]]:
    """``connect``, retrying a 1013 (a client's reconnection policy does), a few times."""
    for _ in range(20):
        try:
            return await connect(http, url, **query)
        except AssertionError as error:
            if "1013" not in str(error):
                raise
        await asyncio.sleep(0.05)
    raise AssertionError("still 1013 after 20 attempts")


async def test_racing_creates_from_every_node_start_one_shell(cluster: Cluster) -> None:
    session = "racing-session-0001"
    async with aiohttp.ClientSession() as http:
        attempts = [
            connect_retrying(
                http, cluster.ws_url(index % 3), client=f"client-race-{index:04d}", session=session
            )
            for index in range(9)  # the storm rule allows 10 per key and window
        ]
        opened = await asyncio.gather(*attempts)
        hellos = [hello for _, hello in opened]
        assert len({hello["key"] for hello in hellos}) == 1
        assert sum(hello["created"] for hello in hellos) == 1
        assert len(cluster.shells()) == 1
        for ws, _ in opened:
            await ws.close()


async def test_kill_removes_it_from_any_node(cluster: Cluster) -> None:
    async with aiohttp.ClientSession() as http:
        ws, hello = await connect(http, cluster.ws_url(2), client=CLIENT)
        key = hello["key"]
        async with http.delete(f"{cluster.base_url(0)}/api/sessions/{key}") as answer:
            assert answer.status == 200, await answer.text()
        message = await ws.receive(timeout=10)
        while message.type is not aiohttp.WSMsgType.CLOSE:
            message = await ws.receive(timeout=10)
        assert message.data == 4013
        code, _ = await refused(http, cluster.ws_url(1), session=hello["session"], create=0)
        assert code == 4013  # the tombstone, from the shared store


async def test_node_killed_answers_4004_from_the_others() -> None:
    with running_cluster(env={"TETHER_CLUSTER_SWEEP_AFTER": "1"}) as cluster:
        await _node_killed(cluster)


async def _node_killed(cluster: Cluster) -> None:
    async with aiohttp.ClientSession() as http:
        ws, hello = await connect(http, cluster.ws_url(1), client=CLIENT)
        await ws.close()
        shells = cluster.kill(1)
        killed_at = time.monotonic()
        while True:  # never a hang, never a new shell: retry codes until the node is lost
            started = time.monotonic()
            code, reason = await refused(
                http, cluster.ws_url(0), session=hello["session"], create=0
            )
            assert time.monotonic() - started < 5
            if code == 4004:
                break
            assert code == 1013, (code, reason)
            assert time.monotonic() - killed_at < 10
            await asyncio.sleep(0.1)
        assert reason == "node lost"
        assert time.monotonic() - killed_at < LEASE + 3
        code, reason = await refused(http, cluster.ws_url(2), session=hello["session"], create=0)
        assert (code, reason) == (4004, "node lost")
        assert cluster.shells() == []

        async def swept() -> bool:  # its claim is gone; its tombstone still says why
            async with http.get(f"{cluster.base_url(0)}/api/sessions") as answer:
                listed: list[object] = (await answer.json())["sessions"]
                return listed == []

        await eventually(swept, timeout=10.0)
        code, reason = await refused(http, cluster.ws_url(2), session=hello["session"], create=0)
        assert (code, reason) == (4004, "node lost")
    reap(shells)


async def ready(http: aiohttp.ClientSession, base_url: str) -> bool:
    async with http.get(f"{base_url}/readyz") as answer:
        return answer.status == 200


async def test_redis_down_keeps_owned_sessions_and_refuses_the_rest(cluster: Cluster) -> None:
    async with aiohttp.ClientSession() as http:
        ws, hello = await connect(http, cluster.ws_url(0), client=CLIENT)
        session = hello["session"]
        await ws.send_bytes(b"echo before-$((1+1))\n")
        await read_until(ws, b"before-2")
        cluster.redis.stop()
        await eventually(lambda: _not(ready(http, cluster.base_url(0))), timeout=10.0)

        # Attached and reconnecting clients of the owner node keep working.
        await ws.send_bytes(b"echo during-$((2+2))\n")
        await read_until(ws, b"during-4")
        await ws.close()
        ws, again = await connect(http, cluster.ws_url(0), client=CLIENT, session=session, create=0)
        assert again["created"] is False
        await ws.close()
        # What needs the registry is refused with a retry code and a reason.
        code, reason = await refused(http, cluster.ws_url(1), session="new-during-outage")
        assert (code, reason) == (1013, "cluster registry unavailable")
        code, _ = await refused(http, cluster.ws_url(2), session=session, create=0)
        assert code == 1013

        # Redis comes back (empty: no persistence): the nodes register again, keep their keys.
        cluster.redis.start()
        for index in range(3):
            await eventually(lambda index=index: ready(http, cluster.base_url(index)), timeout=10.0)
        ws, back = await connect(http, cluster.ws_url(2), client=CLIENT, session=session, create=0)
        assert back["created"] is False and back["input_acked"] > 0
        await ws.close()
        ws, fresh = await connect(http, cluster.ws_url(1), session="new-after-outage")
        assert fresh["created"] is True
        await ws.close()


async def _not(check: Any) -> bool:
    return not await check


async def test_paused_node_is_lost_then_fenced_or_readopted(cluster: Cluster) -> None:
    """SIGSTOP past the lease: the others answer 4004 for its sessions, and one that is created
    again meanwhile is taken over; after SIGCONT the node keeps the untouched session and ends
    (fences) the one taken from it."""
    async with aiohttp.ClientSession() as http:
        kept_ws, kept = await connect(http, cluster.ws_url(1), client=CLIENT)
        taken_ws, _ = await connect(http, cluster.ws_url(1), session="taken-while-paused")
        await kept_ws.close()
        cluster.nodes[1].process.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
        try:
            paused_at = time.monotonic()

            async def lost() -> bool:
                code, reason = await refused(
                    http, cluster.ws_url(0), session=kept["session"], create=0
                )
                assert code in (1013, 4004), (code, reason)
                return code == 4004 and reason == "node lost"

            await eventually(lost, timeout=10)
            assert time.monotonic() - paused_at < 10
            ws, again = await connect(http, cluster.ws_url(2), session="taken-while-paused")
            assert again["created"] is True  # taken over on node2
            await ws.close()
        finally:
            cluster.nodes[1].process.send_signal(signal.SIGCONT)  # type: ignore[union-attr]

        # The fenced session's client hears 4004 from its node; the other one is served again.
        message = await taken_ws.receive(timeout=10)
        while message.type is not aiohttp.WSMsgType.CLOSE:
            message = await taken_ws.receive(timeout=10)
        assert message.data == 4004

        async def served() -> bool:
            params = {"session": kept["session"], "create": "0", "client": CLIENT}
            try:
                ws, hello = await connect(http, cluster.ws_url(0), **params)
            except AssertionError:
                return False
            await ws.close()
            return hello["key"] == kept["key"] and hello["created"] is False

        await eventually(served, timeout=10)
        ws, moved = await connect(http, cluster.ws_url(1), session="taken-while-paused", create=0)
        assert moved["created"] is False  # node1 now forwards it to node2's shell
        await ws.close()


async def test_the_storm_rule_counts_attaches_through_every_node(cluster: Cluster) -> None:
    """The owner sees every attach of its key, whichever node it reached (threshold 10)."""
    async with aiohttp.ClientSession() as http:
        ws, hello = await connect(http, cluster.ws_url(0))
        await ws.close()
        for attempt in range(9):
            ws, _ = await connect(
                http, cluster.ws_url(1 + attempt % 2), session=hello["session"], create=0
            )
            await ws.close()
        code, reason = await refused(http, cluster.ws_url(2), session=hello["session"], create=0)
        assert code == 4129 and reason.startswith("retry-after=")


async def test_a_draining_relay_closes_its_client_with_1001_between_frames() -> None:
    # The relay copies the owner's bytes without reading them: a drain must still end the
    # client's stream with a whole frame, then its close frame, while output is flowing.
    with running_cluster(2) as cluster:
        async with aiohttp.ClientSession() as http:
            owner, hello = await connect(http, cluster.ws_url(0), client=CLIENT)
            await owner.send_bytes(b"stty -echo; PS1=''\r")
            await owner.close()
            ws, relayed = await connect(
                http, cluster.ws_url(1), client=CLIENT, session=hello["session"], create=0
            )
            await ws.send_bytes(b"for i in $(seq 1 400000); do echo line-$i; done\r")
            received = len(await read_until(ws, b"line-2000\r\n"))
            async with http.post(f"{cluster.base_url(1)}/api/drain", json={}) as answer:
                assert answer.status == 202, await answer.text()
            kinds = set()
            async for message in ws:  # a frame cut short would arrive as an ERROR here
                kinds.add(message.type)
                if message.type is aiohttp.WSMsgType.BINARY:
                    received += len(message.data)
            assert ws.close_code == 1001 and kinds <= {aiohttp.WSMsgType.BINARY}, kinds
            again, resumed = await connect(
                http,
                cluster.ws_url(0),
                client=CLIENT,
                session=hello["session"],
                offset=relayed["replay_from"] + received,
                create=0,
            )
            assert (resumed["gap"], resumed["replay_from"]) == (
                0,
                relayed["replay_from"] + received,
            )
            await again.close()
        log = "".join(cluster.nodes[1].output)
        assert "Traceback" not in log and "Error handling request" not in log, log[-2000:]


async def test_an_owner_gone_mid_relay_closes_the_client_with_1001() -> None:
    # The owner's process dies between two frames: the relay says so with a close frame, as
    # the WebSocket relay did, rather than just dropping the client's connection.
    with running_cluster(2) as cluster:
        async with aiohttp.ClientSession() as http:
            owner, hello = await connect(http, cluster.ws_url(0), client=CLIENT)
            await owner.close()
            ws, _ = await connect(
                http, cluster.ws_url(1), client=CLIENT, session=hello["session"], create=0
            )
            await ws.send_bytes(b"echo relayed-$((6*7))\r")
            await read_until(ws, b"relayed-42")
            shells = cluster.kill(0)
            message = await ws.receive(timeout=10)
            while message.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):  # prompt, ack
                message = await ws.receive(timeout=10)
            assert message.type is aiohttp.WSMsgType.CLOSE, message
            assert (message.data, message.extra) == (1001, "owner node connection lost")
            await ws.close()
        reap(shells)
