"""SessionManager with a fake clock: idle reaping, tombstones, storms — real PTYs, no sockets."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tether.errors import Refusal
from tether.server.config import Settings, build_settings
from tether.server.identity import ANONYMOUS, Identity
from tether.server.manager import ConnectRequest, SessionManager
from tether.server.session import SessionState
from tether.server.store import MemoryStore, SessionRecord, Tombstone


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Sink:
    """A client front that records what the session tells it."""

    def __init__(self) -> None:
        self.woken = 0
        self.messages: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None

    def wake(self) -> None:
        self.woken += 1

    def send_message(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


WALL = 1754900000.0  # the fake wall clock's start


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return build_settings(
        {
            "shell": "bash --norc --noprofile",
            "idle_timeout": 60,
            "tombstone_ttl": 300,
            "kill_grace": 0.5,
            "log_file": "-",
        },
        cwd=tmp_path,
    )


@pytest.fixture
async def manager(settings: Settings):  # type: ignore[no-untyped-def]
    clock = FakeClock()
    events: list[tuple[str, dict[str, Any]]] = []
    manager = SessionManager(
        settings,
        clock=clock,
        wall_clock=FakeClock(WALL),
        listener=lambda event, **fields: events.append((event, fields)),
    )
    manager.fake_clock = clock  # type: ignore[attr-defined]
    manager.events = events  # type: ignore[attr-defined]
    yield manager
    await manager.shutdown()


def request(identity: Identity | None = ANONYMOUS, **query: str) -> ConnectRequest:
    return ConnectRequest(
        query={"project": "default", **query}, address="127.0.0.1", identity=identity
    )


async def test_idle_reaping_follows_the_fake_clock(manager: SessionManager) -> None:
    clock = manager.fake_clock  # type: ignore[attr-defined]
    connection = manager.connect(request(), Sink())
    key = connection.session.info.key
    clock.now += 3600
    assert manager.reap_idle() == [], "an attached session is never idle-reaped"
    connection.session.detach(connection.attach.client)
    clock.now += 59.9
    assert manager.reap_idle() == []
    clock.now += 0.2
    assert manager.reap_idle() == [key]
    await asyncio.wait_for(connection.session.terminated.wait(), 5)
    with pytest.raises(Refusal) as refused:
        manager.connect(request(session=connection.session.info.session_id, create="0"), Sink())
    assert refused.value.code == 4004
    clock.now += 301
    manager.reap_idle()
    with pytest.raises(Refusal) as refused:
        manager.connect(request(session=connection.session.info.session_id, create="0"), Sink())
    assert refused.value.code == 4004 and "not found" in refused.value.reason
    assert [e for e, _ in manager.events].count("reap") == 1  # type: ignore[attr-defined]


async def test_storm_window_slides_with_the_fake_clock(manager: SessionManager) -> None:
    clock = manager.fake_clock  # type: ignore[attr-defined]
    sid = "session_1754900000000_fakeclock0001"
    for _ in range(10):
        manager.connect(request(session=sid), Sink())
        clock.now += 0.5
    with pytest.raises(Refusal) as refused:
        manager.connect(request(session=sid), Sink())
    assert (refused.value.code, refused.value.reason) == (4129, "retry-after=1")
    clock.now += 0.5
    with pytest.raises(Refusal):
        manager.connect(request(session=sid), Sink())
    clock.now += 0.6
    manager.connect(request(session=sid), Sink())  # half-open: admitted


async def test_another_owner_is_forbidden_and_missing_credential_is_4001(
    manager: SessionManager,
) -> None:
    connection = manager.connect(request(), Sink())
    alice = Identity("alice")
    with pytest.raises(Refusal) as refused:
        manager.connect(request(alice, session=connection.session.info.session_id), Sink())
    assert refused.value.code == 4003
    with pytest.raises(Refusal) as refused:
        manager.connect(request(None), Sink())
    assert refused.value.code == 4001
    limited = ConnectRequest(
        query={"project": "default"}, address="127.0.0.1", identity=alice, owner_limit=1
    )
    manager.connect(limited, Sink())
    with pytest.raises(Refusal) as refused:
        manager.connect(limited, Sink())
    assert refused.value.code == 4010


async def test_the_stored_record_follows_size_input_and_state(manager: SessionManager) -> None:
    clock = manager.fake_clock  # type: ignore[attr-defined]
    connection = manager.connect(request(client="tab-0001", cols="100", rows="30"), Sink())
    session, key = connection.session, connection.session.info.key
    await manager.flush_store()
    record = await manager.store.get_record(key)
    assert record == SessionRecord.from_session(session, now=clock.now, wall_now=WALL)
    assert record is not None
    assert (record.cols, record.rows, record.pid) == (100, 30, session.info.pid)
    assert (record.owner, record.project, record.state) == (
        "anonymous",
        "default",
        SessionState.ATTACHED,
    )
    assert record.input_counts == {} and record.last_activity == WALL

    clock.now += 5
    await session.write_input("tab-0001", b"echo one\n")
    session.resize(120, 40)
    await manager.flush_store()
    record = await manager.store.get_record(key)
    assert record is not None
    assert (record.cols, record.rows) == (120, 40)
    assert record.input_counts == {"tab-0001": 9}
    assert record.last_activity == WALL, "5 s ago by the monotonic clock, now by the wall's"

    await session.write_input("tab-0001", b"echo two\n")
    session.detach(connection.attach.client)
    await manager.flush_store()
    record = await manager.store.get_record(key)
    assert record is not None
    assert (record.input_counts["tab-0001"], record.state) == (18, SessionState.DETACHED)


async def test_a_burst_of_input_is_written_once(manager: SessionManager) -> None:
    connection = manager.connect(request(client="tab-0001"), Sink())
    await manager.flush_store()
    writes = manager.writer.statistics().writes
    for _ in range(50):
        await connection.session.write_input("tab-0001", b"x")
    await manager.flush_store()
    assert manager.writer.statistics().writes == writes + 1
    record = await manager.store.get_record(connection.session.info.key)
    assert record is not None and record.input_counts == {"tab-0001": 50}


async def test_changes_are_written_by_the_sweep_without_a_flush(settings: Settings) -> None:
    store = NotifyingStore()
    manager = SessionManager(settings, store=store)
    manager.record_interval = 0.01
    try:
        connection = manager.connect(request(client="tab-0001"), Sink())
        key = connection.session.info.key
        await asyncio.wait_for(store.put.wait(), 5)
        store.put.clear()
        connection.session.resize(90, 20)
        await asyncio.wait_for(store.put.wait(), 5)
        record = await store.get_record(key)
        assert record is not None and (record.cols, record.rows) == (90, 20)
    finally:
        await manager.shutdown()
    assert await store.list_keys() == [], "shutdown removes the records it ended"


async def test_an_ended_session_leaves_a_wall_clock_tombstone_in_the_store(
    manager: SessionManager,
) -> None:
    connection = manager.connect(request(), Sink())
    key = connection.session.info.key
    await manager.flush_store()
    assert manager.kill(key)
    await manager.flush_store()
    assert await manager.store.get_record(key) is None
    tombstone = await manager.store.get_tombstone(key, WALL)
    assert tombstone == Tombstone(
        key, "anonymous", 4013, "session terminated by an operator", WALL, WALL + 300
    )
    manager.connect(request(session=connection.session.info.session_id), Sink())
    await manager.flush_store()
    assert await manager.store.get_tombstone(key, WALL) is None, "a new shell under the key"
    assert await manager.store.get_record(key) is not None


class NotifyingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.put = asyncio.Event()

    async def put_record(self, record: SessionRecord) -> None:
        await super().put_record(record)
        self.put.set()


class BrokenStore(MemoryStore):
    """Every write fails until ``healed``."""

    def __init__(self) -> None:
        super().__init__()
        self.healed = False

    def _check(self) -> None:
        if not self.healed:
            raise ConnectionError("store unreachable")

    async def put_record(self, record: SessionRecord) -> None:
        self._check()
        await super().put_record(record)

    async def remove_record(self, key: str) -> None:
        self._check()
        await super().remove_record(key)

    async def put_tombstone(self, tombstone: Tombstone) -> None:
        self._check()
        await super().put_tombstone(tombstone)

    async def remove_tombstone(self, key: str) -> None:
        self._check()
        await super().remove_tombstone(key)


async def test_a_failing_store_does_not_stop_the_manager(settings: Settings) -> None:
    store = BrokenStore()
    events: list[tuple[str, dict[str, Any]]] = []
    manager = SessionManager(
        settings, store=store, listener=lambda event, **fields: events.append((event, fields))
    )
    try:
        connection = manager.connect(request(), Sink())
        key = connection.session.info.key
        await manager.flush_store()
        assert ("store_error", {"key": key, "reason": "ConnectionError: store unreachable"}) in (
            events
        )
        assert manager.kill(key)
        with pytest.raises(Refusal) as refused:  # the local tombstone answers
            manager.connect(request(session=connection.session.info.session_id, create="0"), Sink())
        assert refused.value.code == 4013
        await manager.flush_store()
        assert manager.writer.statistics().pending == 1
        store.healed = True
        await manager.flush_store()
        assert await store.get_record(key) is None
        assert await store.get_tombstone(key, 0.0) is not None
        assert manager.writer.statistics().pending == 0
    finally:
        await manager.shutdown()
