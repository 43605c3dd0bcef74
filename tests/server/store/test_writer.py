"""StoreWriter: write-behind in order, coalesced per key, flushed, and unharmed by store errors."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tether.server.session import SessionState
from tether.server.store import MemoryStore, SessionRecord, StoreWriter, Tombstone


def key(name: str) -> str:
    return f"session_1754900000000_{name:0>16}:web"


def record(name: str, **fields: Any) -> SessionRecord:
    session_id = key(name).rpartition(":")[0]
    defaults: dict[str, Any] = {
        "key": key(name),
        "session_id": session_id,
        "project": "web",
        "owner": "anonymous",
        "pid": 10,
        "cols": 80,
        "rows": 24,
        "created_at": 1.0,
        "last_activity": 2.0,
        "state": SessionState.ATTACHED,
    }
    return SessionRecord(**{**defaults, **fields})


def tombstone(name: str) -> Tombstone:
    return Tombstone(key(name), "anonymous", 4012, "shell exited", 100.0, 400.0)


class RecordingStore(MemoryStore):
    """A memory store that logs every call, can fail the next ones, and can hold a write."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, str]] = []
        self.failures: list[Exception] = []  # raised by the next calls, one each
        self.gate: asyncio.Event | None = None  # when set: writes wait for it
        self.changed = asyncio.Event()

    async def _call(self, name: str, subject: str) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            raise self.failures.pop(0)
        self.calls.append((name, subject))
        self.changed.set()

    async def put_record(self, record: SessionRecord) -> None:
        await self._call("put_record", record.key)
        await super().put_record(record)

    async def remove_record(self, key: str) -> None:
        await self._call("remove_record", key)
        await super().remove_record(key)

    async def put_tombstone(self, tombstone: Tombstone) -> None:
        await self._call("put_tombstone", tombstone.key)
        await super().put_tombstone(tombstone)

    async def remove_tombstone(self, key: str) -> None:
        await self._call("remove_tombstone", key)
        await super().remove_tombstone(key)

    async def prune(self, now: float) -> int:
        await self._call("prune", str(now))
        return await super().prune(now)


class Harness:
    """A writer over a RecordingStore, with records to snapshot and the errors it reported."""

    def __init__(self, **options: Any) -> None:
        self.store = RecordingStore()
        self.records: dict[str, SessionRecord] = {}
        self.errors: list[tuple[str | None, Exception]] = []
        self.writer = StoreWriter(
            self.store,
            self.records.get,
            on_error=lambda k, e: self.errors.append((k, e)),
            **options,
        )

    def put(self, name: str, **fields: Any) -> None:
        self.records[key(name)] = record(name, **fields)
        self.writer.put_record(key(name))


@pytest.fixture
async def harness() -> Any:
    harness = Harness()
    yield harness
    await harness.writer.close()


async def test_writes_follow_the_order_of_first_marks(harness: Harness) -> None:
    for name in "cab":
        harness.put(name)
    harness.writer.put_tombstone(tombstone("d"))
    await harness.writer.flush()
    assert harness.store.calls == [
        ("put_record", key("c")),
        ("put_record", key("a")),
        ("put_record", key("b")),
        ("put_tombstone", key("d")),
    ]
    assert await harness.store.get_record(key("a")) == record("a")


async def test_a_burst_for_one_key_is_one_write_of_the_latest_state(harness: Harness) -> None:
    for count in range(1, 101):
        harness.put("a", input_counts={"tab": count}, cols=80 + count % 3)
    await harness.writer.flush()
    assert harness.store.calls == [("put_record", key("a"))]
    assert await harness.store.get_record(key("a")) == record(
        "a", input_counts={"tab": 100}, cols=81
    )
    statistics = harness.writer.statistics()
    assert (statistics.marks, statistics.coalesced, statistics.writes) == (100, 99, 1)
    assert statistics.pending == 0


async def test_the_record_is_read_when_written_not_when_marked(harness: Harness) -> None:
    harness.put("a")
    harness.records[key("a")] = record("a", rows=50)
    await harness.writer.flush()
    assert await harness.store.get_record(key("a")) == record("a", rows=50)
    harness.writer.put_record(key("gone"))  # no record any more: nothing to write
    await harness.writer.flush()
    assert harness.store.calls == [("put_record", key("a"))]


async def test_an_ending_adds_the_tombstone_before_removing_the_record(harness: Harness) -> None:
    harness.put("a")
    await harness.writer.flush()
    harness.writer.remove_record(key("a"))
    harness.writer.put_tombstone(tombstone("a"))
    await harness.writer.flush()
    assert harness.store.calls[1:] == [("put_tombstone", key("a")), ("remove_record", key("a"))]
    assert await harness.store.get_record(key("a")) is None
    assert await harness.store.get_tombstone(key("a"), 200.0) == tombstone("a")


async def test_a_new_shell_adds_its_record_before_removing_the_tombstone(
    harness: Harness,
) -> None:
    harness.writer.put_tombstone(tombstone("a"))
    await harness.writer.flush()
    harness.writer.remove_tombstone(key("a"))
    harness.put("a")
    await harness.writer.flush()
    assert harness.store.calls[1:] == [("put_record", key("a")), ("remove_tombstone", key("a"))]
    assert await harness.store.get_tombstone(key("a"), 200.0) is None


async def test_the_last_wish_of_a_key_wins(harness: Harness) -> None:
    harness.put("a")
    harness.writer.remove_record(key("a"))
    harness.writer.put_tombstone(tombstone("a"))
    harness.writer.remove_tombstone(key("a"))
    harness.put("a")  # ended and re-created before anything was written
    await harness.writer.flush()
    assert harness.store.calls == [("put_record", key("a")), ("remove_tombstone", key("a"))]


async def test_the_task_writes_without_a_flush_and_prunes_last(harness: Harness) -> None:
    harness.writer.prune(50.0)
    harness.writer.prune(60.0)
    harness.put("a")
    while len(harness.store.calls) < 2:
        harness.store.changed.clear()
        await asyncio.wait_for(harness.store.changed.wait(), 5)
    assert harness.store.calls == [("put_record", key("a")), ("prune", "60.0")]


async def test_one_write_at_a_time_in_order(harness: Harness) -> None:
    harness.store.gate = asyncio.Event()
    harness.put("a", rows=30)
    while harness.writer.statistics().pending:  # the task took the entry and waits on the gate
        await asyncio.sleep(0)
    harness.put("a", rows=31)  # a new entry: the first write is under way
    flushed = asyncio.create_task(harness.writer.flush())
    harness.store.gate.set()
    await flushed
    assert harness.store.calls == [("put_record", key("a"))] * 2
    assert await harness.store.get_record(key("a")) == record("a", rows=31)


async def test_a_failed_write_is_reported_kept_and_retried_by_the_next_flush(
    harness: Harness,
) -> None:
    harness.store.failures = [ConnectionError("store down")]
    harness.put("a")
    harness.writer.put_tombstone(tombstone("b"))
    await harness.writer.flush()
    assert [(k, str(e)) for k, e in harness.errors] == [(key("a"), "store down")]
    assert harness.store.calls == [("put_tombstone", key("b"))], "the others go on"
    assert harness.writer.statistics().pending == 1
    harness.put("a", rows=33)  # merged with the failed entry
    await harness.writer.flush()
    assert await harness.store.get_record(key("a")) == record("a", rows=33)
    statistics = harness.writer.statistics()
    assert (statistics.failures, statistics.pending, statistics.dropped) == (1, 0, 0)


async def test_a_partly_done_entry_is_retried_from_where_it_failed(harness: Harness) -> None:
    harness.put("a")
    await harness.writer.flush()
    harness.writer.remove_record(key("a"))
    harness.writer.put_tombstone(tombstone("a"))
    harness.store.failures = [RuntimeError("first call fails")]
    await harness.writer.flush()  # put_tombstone fails
    harness.store.failures = []
    await harness.writer.flush()
    assert harness.store.calls[1:] == [("put_tombstone", key("a")), ("remove_record", key("a"))]


async def test_the_task_retries_after_a_delay_until_the_store_answers() -> None:
    harness = Harness(retry_delay=0.001, max_retry_delay=0.002)
    harness.store.failures = [OSError("refused")] * 3
    harness.put("a")
    await asyncio.wait_for(harness.store.changed.wait(), 5)
    assert harness.store.calls == [("put_record", key("a"))]
    assert len(harness.errors) == 3 and harness.writer.statistics().failures == 3
    await harness.writer.close()


async def test_a_failed_prune_is_retried(harness: Harness) -> None:
    harness.store.failures = [OSError("down")]
    harness.writer.prune(10.0)
    await harness.writer.flush()
    assert harness.errors[0][0] is None
    await harness.writer.flush()
    assert harness.store.calls == [("prune", "10.0")]


async def test_close_flushes_then_drops_what_still_fails() -> None:
    harness = Harness(retry_delay=60.0)
    harness.put("a")
    harness.put("b")
    harness.store.failures = [OSError("down")]
    await harness.writer.close()
    assert harness.store.calls == [("put_record", key("b"))]
    harness.put("c")  # after close: dropped, no task started
    statistics = harness.writer.statistics()
    assert (statistics.pending, statistics.dropped) == (0, 2)
    assert await harness.store.get_record(key("c")) is None
