"""The registry interface every store implements: asynchronous, over :class:`SessionRecord` and
:class:`Tombstone` (see :mod:`tether.server.store.record` for their format).

A store is written through :class:`~tether.server.store.writer.StoreWriter` (the manager never
awaits one on its connect path) and read by whoever needs another process's view: a restarted
server, another node. Every implementation passes the contract suite of
``tests/server/test_store.py``.
"""

from __future__ import annotations

from typing import Protocol

from tether.server.store.record import SessionRecord, Tombstone

__all__ = ["SessionStore", "Tombstone"]


class SessionStore(Protocol):
    """Session records and tombstones, keyed by composite key.

    Every write replaces what was there and every removal is idempotent, so that a write may be
    retried. Times (``now``, a tombstone's ``expires_at``) are wall-clock seconds.
    """

    async def put_record(self, record: SessionRecord) -> None:
        """Register or replace the record under ``record.key``."""

    async def get_record(self, key: str) -> SessionRecord | None:
        """The key's record, if registered."""

    async def remove_record(self, key: str) -> None:
        """Forget a key's record."""

    async def list_records(
        self, *, owner: str | None = None, project: str | None = None
    ) -> list[SessionRecord]:
        """Every record (of ``owner`` / of ``project``, when given), in no particular order."""

    async def list_keys(self, *, owner: str | None = None, project: str | None = None) -> list[str]:
        """The keys of :meth:`list_records` with the same filters."""

    async def put_tombstone(self, tombstone: Tombstone) -> None:
        """Leave a tombstone, replacing any earlier one for its key."""

    async def get_tombstone(self, key: str, now: float) -> Tombstone | None:
        """The key's tombstone if it has not expired at ``now``."""

    async def remove_tombstone(self, key: str) -> None:
        """Drop a key's tombstone (a new shell was started under it)."""

    async def prune(self, now: float) -> int:
        """Drop the tombstones expired at ``now``; returns how many (a store whose tombstones
        expire by themselves may return 0)."""
