"""What the Redis store does beyond the shared contract (``tests/server/test_store.py``): its
keys, their TTLs, its index sets, batching, and how it fails."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.support.redis import RedisServer, redis_server
from tether.errors import RecordError, RegistryUnavailable
from tether.server.session import SessionState
from tether.server.store import SessionRecord, Tombstone
from tether.server.store.redis import RedisStore, redis_client

pytestmark = pytest.mark.redis


@pytest.fixture
def server() -> Iterator[RedisServer]:
    """A fresh server per test (it starts in milliseconds): each test sees only its own keys."""
    with redis_server() as running:
        yield running


@pytest.fixture
async def client(server: RedisServer) -> AsyncIterator[Redis]:
    connection = redis_client(server.url, timeout=0.5)
    yield connection
    await connection.aclose()


def record(name: str, project: str = "web", **fields: Any) -> SessionRecord:
    session_id = f"session_1754900000000_{name:0>16}"
    defaults: dict[str, Any] = {
        "key": f"{session_id}:{project}",
        "session_id": session_id,
        "project": project,
        "owner": "alice",
        "pid": 10,
        "cols": 80,
        "rows": 24,
        "created_at": 1.0,
        "last_activity": 2.0,
        "state": SessionState.DETACHED,
    }
    return SessionRecord(**{**defaults, **fields})


async def test_a_record_is_one_hash_under_the_prefix_and_indexed(client: Redis) -> None:
    store = RedisStore(client, prefix="p:")
    one = record("a", input_counts={"c": 1})
    await store.put_record(one)
    stored = await client.hgetall(f"p:record:{one.key}")
    assert json.loads(stored["record"]) == one.to_dict()
    assert (stored["owner"], stored["project"]) == ("alice", "web")
    assert await client.smembers("p:records") == {one.key}
    assert await client.smembers("p:records:owner:alice") == {one.key}
    assert await client.smembers("p:records:project:web") == {one.key}
    assert await client.ttl(f"p:record:{one.key}") == -1, "a live session's record never expires"
    await store.remove_record(one.key)
    assert [key async for key in client.scan_iter()] == [], "index sets go with their last key"


async def test_a_replaced_record_moves_between_owner_indexes(client: Redis) -> None:
    store = RedisStore(client)
    await store.put_record(record("a", owner="alice"))
    await store.put_record(record("a", owner="bob"))
    assert await store.list_keys(owner="alice") == []
    assert [r.owner for r in await store.list_records(owner="bob")] == ["bob"]


async def test_listings_and_prunes_go_in_batches(client: Redis) -> None:
    store = RedisStore(client)
    records = [record(f"{i:x}", owner="alice" if i % 2 else "bob") for i in range(1203)]
    for each in records:
        await store.put_record(each)
    assert len(await store.list_records()) == 1203
    assert len(await store.list_keys(owner="alice")) == 601
    for i in range(1203):
        await store.put_tombstone(Tombstone(f"k{i}:web", "alice", 4012, "", 0.0, 100.0 + i))
    assert await store.prune(100.0 + 1100) == 1101
    assert await store.get_tombstone("k1101:web", 0.0) is not None
    assert await client.zcard("tether:tombstones") == 102


async def test_a_tombstone_expires_in_redis_after_its_lifetime(client: Redis) -> None:
    store = RedisStore(client)
    await store.put_tombstone(Tombstone("a:web", "alice", 4012, "exit", 1000.0, 1300.0))
    assert 299_000 < await client.pttl("tether:tombstone:a:web") <= 300_000
    await store.put_tombstone(Tombstone("b:web", "alice", 4012, "exit", 1000.0, 1000.05))
    assert 0 < await client.pttl("tether:tombstone:b:web") <= 50
    await store.put_tombstone(Tombstone("c:web", "alice", 4012, "exit", 1000.0, 999.0))
    assert await client.pttl("tether:tombstone:c:web") in (-2, 0, 1), "at least 1 ms"


async def test_reading_an_expired_tombstone_drops_it_but_not_a_newer_one(client: Redis) -> None:
    store = RedisStore(client)
    await store.put_tombstone(Tombstone("a:web", "alice", 4012, "", 0.0, 100.0))
    assert await store.get_tombstone("a:web", 150.0) is None
    assert await client.exists("tether:tombstone:a:web", "tether:tombstones") == 0
    await store.put_tombstone(Tombstone("a:web", "alice", 4013, "", 0.0, 200.0))
    assert await store.prune(150.0) == 0
    found = await store.get_tombstone("a:web", 150.0)
    assert found is not None and found.code == 4013


async def test_a_malformed_record_is_a_record_error(client: Redis) -> None:
    store = RedisStore(client)
    await client.hset("tether:record:x:web", mapping={"record": json.dumps({"version": 9})})
    with pytest.raises(RecordError, match="newer"):
        await store.get_record("x:web")


def test_a_client_that_returns_bytes_is_refused(server: RedisServer) -> None:
    with pytest.raises(ValueError, match="decode_responses"):
        RedisStore(Redis.from_url(server.url))


async def test_redis_down_is_registry_unavailable_and_the_store_recovers() -> None:
    with redis_server() as own:
        client = redis_client(own.url, timeout=0.3)
        try:
            store = RedisStore(client)
            await store.put_record(record("a"))
            own.stop()
            for call in (
                store.get_record(record("a").key),
                store.put_record(record("a")),
                store.list_records(),
                store.put_tombstone(Tombstone("a:web", "alice", 4012, "", 0.0, 1.0)),
                store.prune(1.0),
            ):
                with pytest.raises(RegistryUnavailable):
                    await call
            own.start()  # empty again: no persistence
            assert await store.get_record(record("a").key) is None
            await store.put_record(record("a"))
            assert await store.list_keys() == [record("a").key]
        finally:
            await client.aclose()
