"""Write-behind to a :class:`~tether.server.store.base.SessionStore`: the manager stays synchronous.

The manager answers every connect from what it holds in memory (its live sessions and a local
tombstone table) without an ``await``, so that concurrent connects for one key create one shell
and a reconnect storm is counted exactly. The store is a *mirror* of those facts for other
processes (a restarted server, other nodes), kept current by one :class:`StoreWriter`:

- The manager *marks* what changed (``put_record(key)``, ``remove_record(key)``,
  ``put_tombstone(t)``, ``remove_tombstone(key)``, ``prune(now)``); marking never blocks.
- Marks coalesce per key: a key has at most one pending entry, holding the last wish for its
  record (write / remove) and for its tombstone (this one / remove). A record is read from the
  ``snapshot`` callback when it is written, not when marked, so a burst of keystrokes (or
  resizes) costs one write of the latest state.
- One asyncio task writes the entries oldest first, one at a time, then exits when none is left
  (the next mark starts it again). Within an entry the write that adds comes before the one that
  removes (a new record before its key's tombstone is removed, a tombstone before the record is
  removed), so a reader sees the old fact or the new one, never neither.
- A failed write (any exception from the store) is counted, reported to ``on_error`` and
  **retried**: the entry goes back to the end of the queue, merged under any newer marks for its
  key, and the task waits (0.1 s, doubling up to 5 s) before it goes on. Pending entries are at
  most one per key, so an outage costs memory in proportion to the keys touched, not the writes.
  Entries are **dropped** only by :meth:`StoreWriter.close` (at shutdown), after one last attempt,
  and counted in :attr:`WriterStatistics.dropped`.
- :meth:`StoreWriter.flush` writes what is pending now (one attempt each) and returns; tests
  await it instead of sleeping, and shutdown calls it through :meth:`StoreWriter.close`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass

from tether.server.store.base import SessionStore
from tether.server.store.record import SessionRecord, Tombstone

_log = logging.getLogger(__name__)
_YIELD_EVERY = 64  # writes between yields to the event loop when the store never suspends

ErrorHandler = Callable[[str | None, Exception], None]  # (key, or None for a prune; the error)
Snapshot = Callable[[str], SessionRecord | None]  # the key's current record; None: no session


class _Wish(enum.Enum):
    PUT = "put"
    REMOVE = "remove"


@dataclass
class _Entry:
    """The last wish for one key: for its record, and for its tombstone (None: no change)."""

    record: _Wish | None = None
    tombstone: Tombstone | _Wish | None = None

    def under(self, newer: _Entry) -> _Entry:
        """This (older) entry with ``newer``'s wishes taking precedence."""
        return _Entry(newer.record or self.record, newer.tombstone or self.tombstone)


@dataclass(frozen=True)
class WriterStatistics:
    """A snapshot of a writer's counters."""

    pending: int  # keys waiting to be written
    marks: int  # changes marked
    coalesced: int  # marks absorbed by an entry already pending for their key
    writes: int  # store calls that succeeded
    failures: int  # store calls (or snapshots) that raised
    dropped: int  # entries given up at close


class StoreWriter:
    """Mirrors marked changes to ``store``; see the module docstring for the semantics."""

    def __init__(
        self,
        store: SessionStore,
        snapshot: Snapshot,
        *,
        on_error: ErrorHandler | None = None,
        retry_delay: float = 0.1,
        max_retry_delay: float = 5.0,
    ) -> None:
        self.store = store
        self._snapshot = snapshot
        self._on_error = on_error or _log_error
        self._retry_delay = retry_delay
        self._max_retry_delay = max_retry_delay
        self._pending: dict[str, _Entry] = {}  # insertion order: oldest first
        self._prune_at: float | None = None
        self._lock = asyncio.Lock()  # one write at a time, whether from the task or a flush
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._marks = self._coalesced = self._writes = self._failures = self._dropped = 0

    # ------------------------------------------------------------------ marking (never blocks)
    def put_record(self, key: str) -> None:
        """Write the key's record (its state when written, from ``snapshot``)."""
        self._mark(key, _Entry(record=_Wish.PUT))

    def remove_record(self, key: str) -> None:
        self._mark(key, _Entry(record=_Wish.REMOVE))

    def put_tombstone(self, tombstone: Tombstone) -> None:
        self._mark(tombstone.key, _Entry(tombstone=tombstone))

    def remove_tombstone(self, key: str) -> None:
        self._mark(key, _Entry(tombstone=_Wish.REMOVE))

    def prune(self, now: float) -> None:
        """Drop the store's tombstones expired at ``now`` (after the pending writes)."""
        self._prune_at = now if self._prune_at is None else max(now, self._prune_at)
        self._start()

    def _mark(self, key: str, wish: _Entry) -> None:
        if self._closed:
            self._dropped += 1
            return
        self._marks += 1
        pending = self._pending.get(key)
        if pending is None:
            self._pending[key] = wish
        else:
            self._coalesced += 1
            self._pending[key] = pending.under(wish)  # keeps its place in the queue
        self._start()

    def _start(self) -> None:
        if self._task is None and not self._closed:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop yet: the first mark inside one, or flush, writes it
                return
            self._task = loop.create_task(self._run())

    # ------------------------------------------------------------------ writing
    async def _run(self) -> None:
        delay, written = self._retry_delay, 0
        try:
            while self._pending or self._prune_at is not None:
                if await self._write_next():
                    delay, written = self._retry_delay, written + 1
                    if written % _YIELD_EVERY == 0:
                        await asyncio.sleep(0)
                else:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self._max_retry_delay)
        finally:
            self._task = None

    async def _write_next(self) -> bool:
        if self._pending:
            return await self._write(next(iter(self._pending)))
        return await self._write_prune()

    async def _write(self, key: str) -> bool:
        """Write the key's pending entry; False (and the entry back in the queue) on an error."""
        async with self._lock:
            entry = self._pending.pop(key, None)
            if entry is None:
                return True
            try:
                await self._apply(key, entry)
            except asyncio.CancelledError:
                self._requeue(key, entry)
                raise
            except Exception as exc:
                self._failures += 1
                self._requeue(key, entry)
                self._on_error(key, exc)
                return False
            return True

    async def _apply(self, key: str, entry: _Entry) -> None:
        # What adds a fact comes before what removes one (see the module docstring). Each step
        # done is cleared from the entry, so that a retry after an error does only the rest.
        if entry.record is _Wish.PUT:
            record = self._snapshot(key)
            if record is not None:
                await self.store.put_record(record)
                self._writes += 1
            entry.record = None
        if isinstance(entry.tombstone, Tombstone):
            await self.store.put_tombstone(entry.tombstone)
            self._writes += 1
            entry.tombstone = None
        if entry.record is _Wish.REMOVE:
            await self.store.remove_record(key)
            self._writes += 1
            entry.record = None
        if entry.tombstone is _Wish.REMOVE:
            await self.store.remove_tombstone(key)
            self._writes += 1
            entry.tombstone = None

    def _requeue(self, key: str, entry: _Entry) -> None:
        newer = self._pending.pop(key, None)
        self._pending[key] = entry if newer is None else entry.under(newer)

    async def _write_prune(self) -> bool:
        async with self._lock:
            now, self._prune_at = self._prune_at, None
            if now is None:
                return True
            try:
                await self.store.prune(now)
            except Exception as exc:
                self._failures += 1
                self._prune_at = now if self._prune_at is None else self._prune_at
                self._on_error(None, exc)
                return False
            self._writes += 1
            return True

    # ------------------------------------------------------------------ flush, close, facts
    async def flush(self) -> None:
        """Write every entry pending now (and any marked meanwhile), one attempt each; an entry
        that fails stays pending for the background retry."""
        attempted: set[str] = set()
        while batch := [key for key in self._pending if key not in attempted]:
            for key in batch:
                attempted.add(key)
                await self._write(key)
        await self._write_prune()

    async def close(self) -> None:
        """Flush, stop the task, and drop (count) whatever could not be written."""
        await self.flush()
        self._closed = True
        task = self._task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._dropped += len(self._pending) + (self._prune_at is not None)
        self._pending.clear()
        self._prune_at = None

    def statistics(self) -> WriterStatistics:
        return WriterStatistics(
            pending=len(self._pending),
            marks=self._marks,
            coalesced=self._coalesced,
            writes=self._writes,
            failures=self._failures,
            dropped=self._dropped,
        )


def _log_error(key: str | None, error: Exception) -> None:
    _log.warning("session store write failed (key %s): %r", key, error)
