"""The SessionStore contract, run against every implementation (in memory, and in a real Redis)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.support.redis import redis_server
from tether.server.session import SessionState
from tether.server.store import MemoryStore, SessionRecord, SessionStore, Tombstone
from tether.server.store.redis import RedisStore, redis_client

StoreFactory = Callable[[], contextlib.AbstractAsyncContextManager[SessionStore]]


@contextlib.asynccontextmanager
async def memory_store() -> AsyncIterator[SessionStore]:
    yield MemoryStore()


@contextlib.asynccontextmanager
async def redis_store() -> AsyncIterator[SessionStore]:
    """A store on its own real redis-server (a fresh database), stopped after the test; a key
    outside the store's prefix is there before and must be untouched after."""
    with redis_server() as server:
        client = redis_client(server.url)
        try:
            await client.set("someone-else:key", "theirs")
            yield RedisStore(client, prefix="test:")
            assert await client.get("someone-else:key") == "theirs"
            keys = {key async for key in client.scan_iter()}
            strays = {key for key in keys if not key.startswith("test:")} - {"someone-else:key"}
            assert strays == set(), "the store wrote outside its prefix"
        finally:
            await client.aclose()


# Every implementation is listed here; the Redis one runs against a real redis-server (installed
# by ./dev setup: a missing one fails the test rather than skipping it).
STORE_FACTORIES = [
    pytest.param(memory_store, id="memory"),
    pytest.param(redis_store, id="redis", marks=pytest.mark.redis),
]


@pytest.fixture(params=STORE_FACTORIES)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[SessionStore]:
    factory: StoreFactory = request.param
    async with factory() as store:
        yield store


def record(session_id: str = "a", project: str = "web", **fields: Any) -> SessionRecord:
    session_id = f"session_1754900000000_{session_id:0>16}"
    defaults: dict[str, Any] = {
        "key": f"{session_id}:{project}",
        "session_id": session_id,
        "project": project,
        "owner": "anonymous",
        "pid": 100,
        "cols": 80,
        "rows": 24,
        "created_at": 1754900000.5,
        "last_activity": 1754900001.25,
        "state": SessionState.ATTACHED,
        "input_counts": {"client-1": 12},
    }
    return SessionRecord(**{**defaults, **fields})


def tombstone(key: str, expires_at: float, code: int = 4012, owner: str = "anonymous") -> Tombstone:
    return Tombstone(key, owner, code, "shell exited", expires_at - 300, expires_at)


async def test_a_record_is_put_read_replaced_and_removed(store: SessionStore) -> None:
    first = record()
    assert await store.get_record(first.key) is None
    await store.put_record(first)
    assert await store.get_record(first.key) == first
    resized = record(cols=132, rows=50, input_counts={"client-1": 40, "client-2": 3})
    await store.put_record(resized)
    assert await store.get_record(first.key) == resized
    await store.remove_record(first.key)
    await store.remove_record(first.key)  # idempotent
    assert await store.get_record(first.key) is None


async def test_a_record_keeps_every_field(store: SessionStore) -> None:
    ended = record(
        state=SessionState.ENDED,
        name="build box",
        end_code=4013,
        end_reason="session terminated by an operator",
        input_counts={"b": 2, "a": 1},
    )
    await store.put_record(ended)
    read = await store.get_record(ended.key)
    assert read == ended and read is not None
    assert list(read.input_counts) == ["b", "a"], "input counts keep their order"


async def test_records_are_listed_by_owner_and_project(store: SessionStore) -> None:
    records = [
        record("a", "web", owner="alice"),
        record("b", "web", owner="bob"),
        record("c", "api", owner="alice"),
    ]
    for each in records:
        await store.put_record(each)
    assert sorted(await store.list_keys()) == sorted(r.key for r in records)
    alice = await store.list_records(owner="alice")
    assert sorted(r.key for r in alice) == sorted([records[0].key, records[2].key])
    assert [r.key for r in await store.list_records(project="api")] == [records[2].key]
    assert await store.list_keys(owner="alice", project="web") == [records[0].key]
    assert await store.list_keys(owner="carol") == []
    await store.remove_record(records[1].key)
    assert sorted(await store.list_records(), key=lambda r: r.key) == [records[0], records[2]]


async def test_tombstones_expire(store: SessionStore) -> None:
    await store.put_tombstone(tombstone("a:web", expires_at=310.0))
    assert await store.get_tombstone("a:web", 300.0) == tombstone("a:web", expires_at=310.0)
    assert await store.get_tombstone("a:web", 310.0) is None
    assert await store.get_tombstone("a:web", 20.0) is None, "an expired tombstone is gone"


async def test_tombstones_are_replaced_removed_and_pruned(store: SessionStore) -> None:
    await store.put_tombstone(tombstone("a:web", expires_at=100.0))
    await store.put_tombstone(tombstone("a:web", expires_at=200.0, code=4013))
    found = await store.get_tombstone("a:web", 150.0)
    assert found is not None and found.code == 4013
    await store.put_tombstone(tombstone("b:web", expires_at=50.0))
    assert await store.prune(60.0) in (0, 1)  # 0 where tombstones expire by themselves
    assert await store.get_tombstone("b:web", 0.0) is None, "pruned: gone, whatever the time"
    assert await store.get_tombstone("a:web", 150.0) is not None, "not expired: kept"
    await store.remove_tombstone("a:web")
    await store.remove_tombstone("a:web")  # idempotent
    assert await store.get_tombstone("a:web", 60.0) is None


async def test_records_and_tombstones_of_one_key_are_independent(store: SessionStore) -> None:
    live = record()
    await store.put_record(live)
    await store.put_tombstone(tombstone(live.key, expires_at=500.0))
    await store.remove_record(live.key)
    assert await store.get_tombstone(live.key, 400.0) is not None
    await store.put_record(live)
    await store.remove_tombstone(live.key)
    assert await store.get_record(live.key) == live
