"""A node's runtime against a real redis-server: placement, claims, limits, relays, sweeping,
recovery after Redis loses its data."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.server.test_store import record
from tests.support.redis import RedisServer, redis_server
from tests.support.server import eventually
from tether.protocol.codes import CloseCode
from tether.server.clock import SystemClock
from tether.server.cluster.lease import NodeState
from tether.server.cluster.node import ClusterNode
from tether.server.cluster.placement import Placement, Route, Wanted
from tether.server.cluster.registry import Holder
from tether.server.config import build_settings
from tether.server.store.record import Tombstone

pytestmark = pytest.mark.redis

_prefixes = itertools.count()
KEY = "session_1754900000000_000000000000000a:default"
OTHER = "session_1754900000000_000000000000000b:default"


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with redis_server() as running:
        yield running


class Node:
    """A ClusterNode with a dict of 'live sessions' standing in for the manager's."""

    def __init__(self, server: RedisServer, name: str, prefix: str, **extra: Any) -> None:
        layer = {
            "redis_url": server.url,
            "auth": "none",
            "node_id": name,
            "cluster_prefix": prefix,
            "cluster_lease": 0.6,
            "cluster_renew_every": 0.1,
            "cluster_timeout": 0.3,
            **extra,
        }
        self.settings = build_settings(layer, cwd=Path.cwd())
        self.cluster = ClusterNode(self.settings, SystemClock(), secret=extra.get("secret"))
        self.sessions: dict[str, object] = {}
        self.fenced: list[str] = []
        self.cluster.bind(lambda: self.sessions, self._fence)

    def _fence(self, key: str) -> None:
        self.fenced.append(key)
        self.sessions.pop(key, None)

    async def join(self) -> Node:
        await self.cluster.join(f"http://{self.settings.node_id}.test:4001", 4001)
        return self

    async def place(
        self, key: str, *, create: bool = True, owner: str = "ann", **kw: Any
    ) -> Placement:
        placed = await self.cluster.place(Wanted(key, owner, create, **kw))
        if placed.route is Route.LOCAL and key in self.cluster.claims:
            self.sessions[key] = object()  # the manager created it
        return placed


@pytest.fixture
async def nodes(server: RedisServer) -> AsyncIterator[list[Node]]:
    prefix = f"node-test-{next(_prefixes)}:"
    made = [await Node(server, name, prefix).join() for name in ("alpha", "beta")]
    yield made
    for node in made:
        await node.cluster.stop()


async def test_one_owner_and_forwarding(nodes: list[Node]) -> None:
    alpha, beta = nodes
    assert (await alpha.place(KEY)).route is Route.LOCAL
    placed = await beta.place(KEY)
    assert (placed.route, placed.url) == (Route.FORWARD, "http://alpha.test:4001")
    refused = (await beta.place(KEY, relayed=True)).refusal
    assert refused is not None and refused.code == CloseCode.TRY_AGAIN_LATER
    foreign = (await beta.place(KEY, owner="bob")).refusal
    assert foreign is not None and foreign.code == CloseCode.FORBIDDEN


async def test_racing_claims_have_one_winner(nodes: list[Node]) -> None:
    placed = await asyncio.gather(*(node.place(OTHER) for node in nodes for _ in range(3)))
    routes = sorted(p.route.value for p in placed)
    assert routes.count("forward") == 3 and routes.count("local") == 3
    owners = [node for node in nodes if OTHER in node.cluster.claims]
    assert len(owners) == 1


async def test_create_0_answers_from_the_shared_tombstone(nodes: list[Node]) -> None:
    alpha, beta = nodes
    assert (await beta.place(KEY, create=False)).route is Route.LOCAL  # the manager says 4004
    now = time.time()
    await alpha.cluster.store.put_tombstone(Tombstone(KEY, "ann", 4013, "killed", now, now + 60))
    refused = (await beta.place(KEY, create=False)).refusal
    assert refused is not None and (refused.code, refused.reason) == (4013, "killed")
    refused = (await beta.place(KEY, create=False, owner="bob")).refusal
    assert refused is not None and refused.code == CloseCode.FORBIDDEN


async def test_a_claim_without_a_session_is_released(nodes: list[Node]) -> None:
    alpha, beta = nodes
    await alpha.cluster.place(Wanted(KEY, "ann", True))  # claimed; the manager refused it
    alpha.cluster.settle(KEY)
    await asyncio.gather(*alpha.cluster._releases)
    assert await beta.cluster.registry.lookup(KEY) is None


async def test_the_owner_limit_counts_every_node(nodes: list[Node]) -> None:
    alpha, beta = nodes
    assert (await alpha.place(KEY, owner_limit=1)).route is Route.LOCAL
    refused = (await beta.place(OTHER, owner_limit=1)).refusal
    assert refused is not None and refused.code == CloseCode.OWNER_LIMIT
    await asyncio.gather(*beta.cluster._releases)
    assert await beta.cluster.registry.lookup(OTHER) is None
    assert await beta.cluster.registry.count_owner_sessions("ann") == 1


async def test_a_lost_node_reads_lost_then_is_taken_over_and_fenced(nodes: list[Node]) -> None:
    alpha, beta = nodes
    await alpha.place(KEY)
    for task in alpha.cluster._tasks:  # alpha stops renewing: a pause, a partition
        task.cancel()

    async def not_forwarded() -> Placement | None:
        placed = await beta.place(KEY, create=False)
        return placed if placed.route is not Route.FORWARD else None

    placed = await eventually(not_forwarded)
    assert placed.refusal is not None
    assert (placed.refusal.code, placed.refusal.reason) == (4004, "node lost")
    assert (await beta.place(KEY)).route is Route.LOCAL  # create=1: taken over
    # alpha comes back: its lease expired, so it asks Redis before serving the key, and ends it.
    assert alpha.cluster.lease is not None and alpha.cluster.lease.is_expired(time.monotonic())
    again = await alpha.place(KEY, create=False)
    assert alpha.fenced == [KEY]
    assert (again.route, again.url) == (Route.FORWARD, "http://beta.test:4001")


async def test_redis_unreachable_is_1013_but_owned_keys_stay_local(server: RedisServer) -> None:
    prefix = f"node-test-{next(_prefixes)}:"
    alpha = await Node(server, "alpha", prefix).join()
    try:
        await alpha.place(KEY)
        server.pause()
        try:
            refused = (await alpha.place(OTHER)).refusal
            assert refused is not None
            assert (refused.code, refused.reason) == (1013, "cluster registry unavailable")
            assert (await alpha.place(KEY, create=False)).route is Route.LOCAL
        finally:
            server.resume()
    finally:
        await alpha.cluster.stop()


async def test_redis_losing_its_data_loses_no_session(server: RedisServer) -> None:
    prefix = f"node-test-{next(_prefixes)}:"
    alpha = await Node(server, "alpha", prefix).join()
    try:
        await alpha.place(KEY)
        server.restart()  # no persistence: every key is gone

        async def up_again() -> Holder | None:
            holder = await _lookup(alpha)
            return holder if holder is not None and holder.state is NodeState.UP else None

        holder = await eventually(up_again)
        assert holder.node == "alpha" and alpha.fenced == []
        assert alpha.cluster.is_ready()
    finally:
        await alpha.cluster.stop()


async def _lookup(node: Node) -> Any:
    try:
        return await node.cluster.registry.lookup(KEY)
    except Exception:
        return None


async def test_lost_nodes_are_swept_with_tombstones(server: RedisServer) -> None:
    prefix = f"node-test-{next(_prefixes)}:"
    alpha = await Node(server, "alpha", prefix).join()
    beta = await Node(server, "beta", prefix, cluster_sweep_after=0.4).join()
    try:
        await alpha.place(KEY)
        for task in alpha.cluster._tasks:
            task.cancel()

        async def swept() -> bool:
            return await beta.cluster.registry.lookup(KEY) is None

        await eventually(swept, timeout=6)
        tombstone = await beta.cluster.store.get_tombstone(KEY, time.time())
        assert tombstone is not None and (tombstone.code, tombstone.reason) == (4004, "node lost")
        refused = (await beta.place(KEY, create=False)).refusal
        assert refused is not None and refused.reason == "node lost"
    finally:
        await alpha.cluster.stop()
        await beta.cluster.stop()


def test_only_the_secret_makes_a_relay(server: RedisServer) -> None:
    secret = "s" * 20
    node = Node(server, "alpha", "relay-test:", secret=None)
    node.cluster.secret = secret
    assert node.cluster.is_relay({"X-Tether-Relay": secret}, "10.0.0.2")
    assert not node.cluster.is_relay({"X-Tether-Relay": "wrong"}, "127.0.0.1")
    assert not node.cluster.is_relay({}, "127.0.0.1")
    open_node = Node(server, "beta", "relay-test:")
    assert open_node.cluster.is_relay({"X-Tether-Relay": "1"}, "127.0.0.1")
    assert not open_node.cluster.is_relay({"X-Tether-Relay": "1"}, "10.0.0.2")


async def test_record_writes_are_fenced_by_the_claim(nodes: list[Node]) -> None:
    alpha, beta = nodes
    mine = record(session_id="c", project="default")
    await alpha.place(mine.key)
    await alpha.cluster.fenced_store.put_record(mine)
    assert await beta.cluster.store.get_record(mine.key) == mine
    await beta.cluster.fenced_store.put_record(record(session_id="x", project="y"))  # no claim
    assert alpha.cluster.fenced_store.refused == 0
    # beta takes the key over while alpha is lost; alpha's late writes are refused.
    for task in alpha.cluster._tasks:
        task.cancel()

    async def lost_to_beta() -> bool:
        return (await beta.place(mine.key, create=False)).route is not Route.FORWARD

    await eventually(lost_to_beta)
    assert (await beta.place(mine.key)).route is Route.LOCAL
    newer = record(session_id="c", project="default", pid=4242)
    await beta.cluster.fenced_store.put_record(newer)
    await alpha.cluster.fenced_store.put_record(mine)
    await alpha.cluster.fenced_store.remove_record(mine.key)
    assert alpha.cluster.fenced_store.refused == 2
    assert await beta.cluster.store.get_record(mine.key) == newer


async def test_a_successor_process_takes_the_node_over_without_a_lost_moment(
    server: RedisServer,
) -> None:
    """Restart survival: a new process of node alpha that adopted alpha's sessions joins at
    once (alpha's registration is still live) and holds their claims under its epoch; the
    claims never read lost, and the old process's tokens no longer count."""
    prefix = f"node-test-{next(_prefixes)}:"
    old = await Node(server, "alpha", prefix).join()
    beta = await Node(server, "beta", prefix).join()
    new = Node(server, "alpha", prefix)
    try:
        await old.place(KEY)
        old_claim = old.cluster.claims[KEY]
        for task in old.cluster._tasks:  # the old process is gone (exec, crash)
            task.cancel()
        new.sessions[KEY] = object()  # adopted from the old process
        started = time.monotonic()
        await new.join()
        assert time.monotonic() - started < 0.5  # no wait for the old lease to expire
        holder = await beta.cluster.registry.lookup(KEY)
        assert holder is not None and holder.state is NodeState.UP and holder.node == "alpha"
        assert new.cluster.claims[KEY].token > old_claim.token
        assert not await beta.cluster.registry.release(old_claim)  # fenced out
        assert new.fenced == []
    finally:
        await new.cluster.stop()
        await beta.cluster.stop()
        await old.cluster.client.aclose(close_connection_pool=True)
