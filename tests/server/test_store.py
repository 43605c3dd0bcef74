"""The SessionStore contract, run against every implementation (the in-memory one today)."""

from __future__ import annotations

import pytest

from tether.server.store import MemoryStore, SessionStore, Tombstone

IMPLEMENTATIONS = [MemoryStore]


@pytest.fixture(params=IMPLEMENTATIONS, ids=lambda cls: cls.__name__)
def store(request: pytest.FixtureRequest) -> SessionStore:
    implementation: type[SessionStore] = request.param
    return implementation()


def test_records_are_put_read_and_removed(store: SessionStore) -> None:
    assert store.get("a:web") is None and store.keys() == []
    store.put("a:web", {"key": "a:web", "owner": "anonymous", "pid": 12})
    store.put("b:web", {"key": "b:web", "owner": "alice", "pid": 13})
    assert store.get("a:web") == {"key": "a:web", "owner": "anonymous", "pid": 12}
    assert sorted(store.keys()) == ["a:web", "b:web"]
    store.put("a:web", {"key": "a:web", "owner": "anonymous", "pid": 14})
    assert store.get("a:web")["pid"] == 14  # type: ignore[index]
    store.remove("a:web")
    store.remove("a:web")  # idempotent
    assert store.keys() == ["b:web"]


def test_tombstones_expire(store: SessionStore) -> None:
    store.put_tombstone(Tombstone("a:web", "anonymous", 4012, "shell exited", 10.0, 310.0))
    assert store.get_tombstone("a:web", 300.0) is not None
    assert store.get_tombstone("a:web", 310.0) is None
    assert store.get_tombstone("a:web", 20.0) is None, "an expired tombstone is gone for good"


def test_tombstones_are_replaced_removed_and_pruned(store: SessionStore) -> None:
    store.put_tombstone(Tombstone("a:web", "anonymous", 4012, "shell exited", 0.0, 100.0))
    store.put_tombstone(Tombstone("a:web", "anonymous", 4013, "terminated", 1.0, 200.0))
    tombstone = store.get_tombstone("a:web", 150.0)
    assert tombstone is not None and tombstone.code == 4013
    store.put_tombstone(Tombstone("b:web", "anonymous", 4004, "idle", 0.0, 50.0))
    assert store.prune(60.0) == 1
    store.remove_tombstone("a:web")
    assert store.get_tombstone("a:web", 60.0) is None
