"""The node registry against a real redis-server: claims, leases, fencing, outages."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis

from tests.support.redis import RedisServer, redis_server
from tests.support.server import eventually
from tether.errors import RegistryUnavailable
from tether.server.cluster.lease import LeaseSettings, NodeLease, NodeState
from tether.server.cluster.registry import (
    ClaimOutcome,
    Holder,
    RedisRegistry,
    Renewal,
)
from tether.server.store.redis import redis_client

pytestmark = pytest.mark.redis

SETTINGS = LeaseSettings(lease=0.5, renew_every=0.1, timeout=0.3)
POLL_LIMIT = 3.0  # seconds a bounded poll waits for Redis to expire a lease
_prefixes = itertools.count()


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with redis_server() as running:
        yield running


@pytest.fixture
def prefix() -> str:
    return f"test-{next(_prefixes)}:"  # each test its own keys on the shared server


@pytest.fixture
async def client(server: RedisServer) -> AsyncIterator[Redis]:
    connection = redis_client(server.url, timeout=SETTINGS.timeout)
    yield connection
    await connection.aclose()


def node(
    client: Redis, name: str, prefix: str, settings: LeaseSettings = SETTINGS
) -> RedisRegistry:
    return RedisRegistry(
        client, name, url=f"http://{name}.test:4001", settings=settings, prefix=prefix
    )


async def registered(registry: RedisRegistry) -> NodeLease:
    lease = await registry.register()
    assert isinstance(lease, NodeLease), f"{registry.node} not registered: retry in {lease} s"
    return lease


async def until_lost(registry: RedisRegistry, key: str) -> float:
    """Poll (bounded) until ``key``'s holder reads lost; returns the seconds it took."""
    start = time.monotonic()

    async def lost() -> bool:
        holder = await registry.lookup(key)
        assert holder is not None
        return holder.state is NodeState.LOST

    await eventually(lost, POLL_LIMIT, f"{key} still up after {POLL_LIMIT} s")
    return time.monotonic() - start


KEY = "session_1754900000000_000000000000000a:web"


# ---------------------------------------------------------------------- registration and renewal
async def test_a_node_registers_once_per_lease_and_renews(client: Redis, prefix: str) -> None:
    alpha = node(client, "alpha", prefix)
    lease = await registered(alpha)
    duplicate = await node(client, "alpha", prefix).register()
    assert isinstance(duplicate, float) and 0 < duplicate <= SETTINGS.lease, "id in use"
    beta_lease = await registered(node(client, "beta", prefix))
    assert beta_lease.epoch > lease.epoch, "every registration has a new epoch"
    before = lease.expires_at
    assert await alpha.renew(lease) is Renewal.RENEWED
    assert lease.expires_at > before
    assert 0 < await client.pttl(f"{prefix}node:alpha") <= SETTINGS.lease_ms


async def test_a_renewal_after_the_lease_ran_out_or_was_replaced_fails(
    client: Redis, prefix: str
) -> None:
    alpha = node(client, "alpha", prefix)
    lease = await registered(alpha)
    assert await alpha.deregister(lease)
    assert await alpha.renew(lease) is Renewal.LOST
    newer = await registered(alpha)  # e.g. the node restarted
    assert await alpha.renew(lease) is Renewal.REPLACED
    assert not await alpha.deregister(lease), "a stale lease cannot deregister the newer one"
    assert await alpha.renew(newer) is Renewal.RENEWED


# ---------------------------------------------------------------------- claims
async def test_a_claim_is_won_held_on_retry_and_taken_for_others(
    client: Redis, prefix: str
) -> None:
    alpha, beta = node(client, "alpha", prefix), node(client, "beta", prefix)
    alpha_lease, beta_lease = await registered(alpha), await registered(beta)
    won = await alpha.claim(KEY, alpha_lease, owner="alice")
    assert won.outcome is ClaimOutcome.CLAIMED and won.claim is not None
    again = await alpha.claim(KEY, alpha_lease, owner="alice")
    assert (again.outcome, again.claim) == (ClaimOutcome.HELD, won.claim)
    lost = await beta.claim(KEY, beta_lease, owner="alice", takeover=True)
    assert lost.outcome is ClaimOutcome.TAKEN and lost.claim is None
    assert lost.holder == Holder(KEY, "alpha", alpha_lease.epoch, won.claim.token, "alice", UP)
    found = await beta.lookup(KEY)
    assert found == Holder(
        KEY, "alpha", alpha_lease.epoch, won.claim.token, "alice", UP, "http://alpha.test:4001"
    )
    assert await beta.lookup("nobody:web") is None
    assert await beta.count_owner_sessions("alice") == 1


UP, LOST = NodeState.UP, NodeState.LOST


async def test_racing_claims_from_many_nodes_have_exactly_one_winner(
    server: RedisServer, prefix: str
) -> None:
    clients = [redis_client(server.url, timeout=2.0) for _ in range(12)]
    try:
        nodes = [node(c, f"node-{i}", prefix) for i, c in enumerate(clients)]
        leases = [await registered(n) for n in nodes]
        pairs = list(zip(nodes, leases, strict=True))
        for round_ in range(20):
            key = f"race-{round_}:web"
            results = await asyncio.gather(
                *(n.claim(key, lease, owner="alice") for n, lease in pairs)
            )
            winners = [r for r in results if r.outcome is ClaimOutcome.CLAIMED]
            assert len(winners) == 1, results
            assert winners[0].claim is not None
            holder = await nodes[0].lookup(key)
            assert holder is not None and holder.node == winners[0].claim.node
            assert all(r.holder is not None and r.holder.node == holder.node for r in results
                       if r is not winners[0])  # fmt: skip
        assert await nodes[0].count_owner_sessions("alice") == 20
    finally:
        for c in clients:
            await c.aclose()


async def test_racing_claims_on_one_node_win_once_and_agree_on_the_token(
    client: Redis, prefix: str
) -> None:
    alpha = node(client, "alpha", prefix)
    lease = await registered(alpha)
    results = await asyncio.gather(*(alpha.claim(KEY, lease, owner="a") for _ in range(50)))
    outcomes = [r.outcome for r in results]
    assert outcomes.count(ClaimOutcome.CLAIMED) == 1
    assert outcomes.count(ClaimOutcome.HELD) == 49
    assert len({r.claim for r in results}) == 1


async def test_a_claim_is_released_once_and_only_with_its_token(client: Redis, prefix: str) -> None:
    alpha = node(client, "alpha", prefix)
    lease = await registered(alpha)
    won = (await alpha.claim(KEY, lease, owner="alice")).claim
    assert won is not None
    forged = type(won)(won.key, won.node, won.epoch, won.token + 1)
    assert not await alpha.release(forged)
    assert await alpha.release(won)
    assert not await alpha.release(won), "already released"
    assert await alpha.lookup(KEY) is None
    assert await alpha.count_owner_sessions("alice") == 0
    assert await alpha.list_sessions() == []


async def test_fenced_writes_need_a_token_no_lower_than_the_claims(
    client: Redis, prefix: str
) -> None:
    alpha = node(client, "alpha", prefix)
    lease = await registered(alpha)
    won = (await alpha.claim(KEY, lease, owner="alice")).claim
    assert won is not None
    assert await alpha.write(won, {"name": "build box"})
    holder = await alpha.lookup(KEY)
    assert holder is not None and dict(holder.fields) == {"name": "build box"}
    older = type(won)(won.key, won.node, won.epoch, won.token - 1)
    assert not await alpha.write(older, {"name": "stale"})
    with pytest.raises(ValueError):
        await alpha.write(won, {"token": "999"})
    with pytest.raises(ValueError):
        await alpha.write(won, {})
    await alpha.release(won)
    assert not await alpha.write(won, {"name": "after"}), "no claim: nothing to write into"


# ---------------------------------------------------------------------- node loss and fencing
async def test_a_node_that_stops_renewing_is_lost_within_its_lease(
    client: Redis, prefix: str
) -> None:
    alpha, beta = node(client, "alpha", prefix), node(client, "beta", prefix)
    alpha_lease = await registered(alpha)
    await alpha.claim(KEY, alpha_lease, owner="alice")
    took = await until_lost(beta, KEY)  # a lookup needs no registration
    assert took <= SETTINGS.lease + 0.5
    beta_lease = await registered(beta)
    holder = await beta.lookup(KEY)
    assert holder is not None and (holder.node, holder.url) == ("alpha", "")
    refused = await beta.claim(KEY, beta_lease, owner="alice")
    assert refused.outcome is ClaimOutcome.TAKEN, "no silent takeover without asking"
    assert refused.holder is not None and refused.holder.state is LOST
    assert alpha_lease.is_expired(time.monotonic()), "alpha knows it may no longer serve"


async def test_a_partitioned_node_is_fenced_out_once_another_claimed_its_key(
    client: Redis, prefix: str
) -> None:
    alpha, beta = node(client, "alpha", prefix), node(client, "beta", prefix)
    alpha_lease = await registered(alpha)
    stale = (await alpha.claim(KEY, alpha_lease, owner="alice")).claim
    assert stale is not None
    await until_lost(beta, KEY)  # alpha paused past its lease (e.g. SIGSTOP, a partition)
    beta_lease = await registered(beta)
    taken = await beta.claim(KEY, beta_lease, owner="alice", takeover=True)
    assert taken.outcome is ClaimOutcome.CLAIMED and taken.claim is not None
    assert taken.replaced == ("alpha", stale.token)
    assert taken.claim.token > stale.token
    # alpha comes back: it can neither renew, claim, write, release nor re-adopt the key.
    assert await alpha.renew(alpha_lease) is Renewal.LOST
    assert (await alpha.claim(KEY, alpha_lease, owner="alice")).outcome is ClaimOutcome.STALE
    assert not await alpha.write(stale, {"name": "mine"})
    assert not await alpha.release(stale)
    back = await registered(alpha)
    assert await alpha.renew_claim(stale, back) is None
    assert await alpha.renew_claim(stale, alpha_lease) is None, "an old lease is refused too"
    holder = await alpha.lookup(KEY)
    assert holder is not None and (holder.node, holder.state) == ("beta", UP)
    assert holder.token == taken.claim.token
    assert await alpha.count_owner_sessions("alice") == 1
    assert [h.node for h in await alpha.list_sessions()] == ["beta"]


async def test_a_node_that_comes_back_keeps_the_keys_nobody_took(
    client: Redis, prefix: str
) -> None:
    alpha, beta = node(client, "alpha", prefix), node(client, "beta", prefix)
    alpha_lease = await registered(alpha)
    old = (await alpha.claim(KEY, alpha_lease, owner="alice")).claim
    assert old is not None
    await until_lost(beta, KEY)
    back = await registered(alpha)
    renewed = await alpha.renew_claim(old, back)
    assert renewed is not None and renewed.token > old.token and renewed.epoch == back.epoch
    holder = await beta.lookup(KEY)
    assert holder is not None and (holder.state, holder.token) == (UP, renewed.token)
    assert not await alpha.write(old, {"name": "from before"}), "the old token is fenced out"
    assert await alpha.renew_claim(old, back) is None, "only once"
    assert await alpha.write(renewed, {"name": "now"})


async def test_listings_show_every_node_and_a_sweep_clears_a_lost_one(
    client: Redis, prefix: str
) -> None:
    nodes = [node(client, name, prefix) for name in ("alpha", "beta", "gamma")]
    leases = [await registered(n) for n in nodes]
    for i, (each, lease) in enumerate(zip(nodes, leases, strict=True)):
        for j in range(i + 1):
            result = await each.claim(f"s{i}{j}:web", lease, owner=f"user{j}")
            assert result.outcome is ClaimOutcome.CLAIMED
    assert await nodes[0].count_owner_sessions("user0") == 3
    deadline = time.monotonic() + POLL_LIMIT
    while (await _state(nodes[0], "s00:web")) is UP:  # alpha, never renewed, goes
        assert time.monotonic() < deadline, "alpha still up"
        for each, lease in zip(nodes[1:], leases[1:], strict=True):
            await each.renew(lease)  # beta and gamma stay up
        await asyncio.sleep(0.05)
    infos = {info.node: info for info in await nodes[1].nodes()}
    assert {n: (i.state, i.sessions) for n, i in infos.items()} == {
        "alpha": (LOST, 1),
        "beta": (UP, 2),
        "gamma": (UP, 3),
    }
    assert infos["gamma"].url == "http://gamma.test:4001" and infos["alpha"].epoch is None
    sessions = {h.key: (h.node, h.state) for h in await nodes[1].list_sessions()}
    assert len(sessions) == 6 and sessions["s00:web"] == ("alpha", LOST)
    assert sessions["s21:web"] == ("gamma", UP)
    assert await nodes[1].sweep("alpha") == ["s00:web"]
    assert await nodes[1].sweep("alpha") == []
    assert "alpha" not in {info.node for info in await nodes[1].nodes()}, "forgotten"
    assert await nodes[1].count_owner_sessions("user0") == 2
    assert await nodes[1].sweep("beta") == [], "a node that is up keeps its claims"


async def _state(registry: RedisRegistry, key: str) -> NodeState:
    holder = await registry.lookup(key)
    assert holder is not None
    return holder.state


async def test_a_lease_kept_renewing_stays_up_and_reports_its_loss(
    client: Redis, prefix: str
) -> None:
    alpha, beta = node(client, "alpha", prefix), node(client, "beta", prefix)
    lease = await registered(alpha)
    await alpha.claim(KEY, lease, owner="alice")
    lost: list[Renewal | None] = []
    task = asyncio.create_task(alpha.keep_renewing(lease, lost.append))
    try:
        await asyncio.sleep(3 * SETTINGS.lease)  # the subject is real time: leases expiring
        holder = await beta.lookup(KEY)
        assert holder is not None and holder.state is UP and lost == []
        await alpha.deregister(lease)  # as if the lease had lapsed
        await asyncio.wait_for(task, timeout=SETTINGS.renew_every * 5)
    finally:
        task.cancel()
    assert lost == [Renewal.LOST]


# ---------------------------------------------------------------------- Redis down, and manners
async def test_redis_down_or_hung_is_registry_unavailable_quickly_and_recovers() -> None:
    with redis_server() as own:
        client = redis_client(own.url, timeout=SETTINGS.timeout)
        try:
            alpha = node(client, "alpha", "test:")
            lease = await registered(alpha)
            own.stop()
            await _unavailable_quickly(alpha.renew(lease))
            await _unavailable_quickly(alpha.lookup(KEY))
            own.start()  # the same port, empty (no persistence): the node registers again
            assert await alpha.renew(lease) is Renewal.LOST
            lease = await registered(alpha)
            own.pause()
            try:
                await _unavailable_quickly(alpha.claim(KEY, lease, owner="alice"))
            finally:
                own.resume()
            assert await alpha.renew(lease) is Renewal.RENEWED
        finally:
            await client.aclose()


async def _unavailable_quickly(call: object) -> None:
    start = time.monotonic()
    with pytest.raises(RegistryUnavailable) as caught:
        await call  # type: ignore[misc]
    assert time.monotonic() - start < SETTINGS.timeout + 0.5
    assert caught.value.__cause__ is not None


async def test_a_lease_that_runs_out_while_redis_is_hung_is_reported_lost() -> None:
    with redis_server() as own:
        client = redis_client(own.url, timeout=SETTINGS.timeout)
        try:
            alpha = node(client, "alpha", "test:")
            lease = await registered(alpha)
            lost: list[Renewal | None] = []
            task = asyncio.create_task(alpha.keep_renewing(lease, lost.append))
            own.pause()
            try:
                await asyncio.wait_for(task, timeout=SETTINGS.lease + 2 * SETTINGS.timeout + 1)
            finally:
                own.resume()
                task.cancel()
            assert lost == [None]
            assert lease.is_expired(time.monotonic())
        finally:
            await client.aclose()


async def test_only_keys_under_the_prefix_are_touched() -> None:
    with redis_server() as own:
        client = redis_client(own.url, timeout=SETTINGS.timeout)
        try:
            theirs = {"app:user:1": "x", "tether": "not ours", "tetherx:node:alpha": "y"}
            for name, value in theirs.items():
                await client.set(name, value)
            alpha, beta = node(client, "alpha", "tether:"), node(client, "beta", "tether:")
            alpha_lease, beta_lease = await registered(alpha), await registered(beta)
            won = (await alpha.claim(KEY, alpha_lease, owner="alice")).claim
            assert won is not None
            await alpha.write(won, {"name": "n"})
            await beta.claim(KEY, beta_lease, owner="alice")
            await beta.list_sessions()
            await beta.nodes()
            await alpha.release(won)
            await alpha.sweep("alpha")
            await alpha.deregister(alpha_lease)
            keys = {key async for key in client.scan_iter()}
            assert {k for k in keys if not k.startswith("tether:")} == set(theirs)
            for name, value in theirs.items():
                assert await client.get(name) == value
        finally:
            await client.aclose()


async def test_a_connect_costs_a_constant_number_of_o1_redis_commands(
    client: Redis, prefix: str
) -> None:
    long = LeaseSettings(lease=60.0)  # the subject is counting commands, not time
    alpha, beta = node(client, "alpha", prefix, long), node(client, "beta", prefix, long)
    alpha_lease, beta_lease = await registered(alpha), await registered(beta)
    for i in range(300):
        await alpha.claim(f"bulk-{i}:web", alpha_lease, owner="alice")

    async def commands_of(call: object) -> dict[str, int]:
        await client.config_resetstat()
        await call  # type: ignore[misc]
        stats = await client.info("commandstats")
        return {
            name.removeprefix("cmdstat_"): int(value["calls"])
            for name, value in stats.items()
            if not name.startswith("cmdstat_config")
        }

    o1 = {"evalsha", "hget", "hmget", "hgetall", "hset", "incr", "sadd", "srem", "pexpire"}
    for call in (
        beta.claim("fresh:web", beta_lease, owner="alice"),  # a new session
        beta.claim("bulk-7:web", beta_lease, owner="alice"),  # a connect for another's
        beta.lookup("bulk-7:web"),  # a reconnect routed to the owner
        alpha.renew(alpha_lease),  # the one renewal per node per second
    ):
        used = await commands_of(call)
        assert set(used) <= o1, used
        assert used["evalsha"] == 1 and sum(used.values()) <= 12, used
