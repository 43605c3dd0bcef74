"""The shared store as a cluster node writes it: session records fenced by the key's claim.

A node that was paused or partitioned past its lease may still have record writes queued when
it wakes up; another node may hold the key by then. :class:`FencedStore` writes a key's record
only while this node's claim of the key holds its token (one script: the claim check and the
write together), so a stale owner can never overwrite or remove the new owner's record. A key
this node holds no claim for is not written at all. Tombstones and reads pass through: a
tombstone is written only by the node that ended the session (a fenced session leaves none in
the store, see :class:`~tether.server.state.EndReason`).
"""

from __future__ import annotations

from collections.abc import Callable

from tether.server.store.record import SessionRecord, Tombstone
from tether.server.store.redis import Fence, RedisStore


class FencedStore:
    """A :class:`~tether.server.store.base.SessionStore` over ``store``; ``fence_of(key)`` is
    this node's claim of ``key`` as a fence, None when it holds none."""

    def __init__(self, store: RedisStore, fence_of: Callable[[str], Fence | None]) -> None:
        self.store, self._fence_of = store, fence_of
        self.refused = 0  # writes the fence stopped (a newer owner held the key)

    async def put_record(self, record: SessionRecord) -> None:
        fence = self._fence_of(record.key)
        if fence is not None and not await self.store.put_record_fenced(record, fence):
            self.refused += 1

    async def remove_record(self, key: str) -> None:
        fence = self._fence_of(key)
        if fence is not None and not await self.store.remove_record_fenced(key, fence):
            self.refused += 1

    async def get_record(self, key: str) -> SessionRecord | None:
        return await self.store.get_record(key)

    async def list_records(
        self, *, owner: str | None = None, project: str | None = None
    ) -> list[SessionRecord]:
        return await self.store.list_records(owner=owner, project=project)

    async def list_keys(self, *, owner: str | None = None, project: str | None = None) -> list[str]:
        return await self.store.list_keys(owner=owner, project=project)

    async def put_tombstone(self, tombstone: Tombstone) -> None:
        await self.store.put_tombstone(tombstone)

    async def get_tombstone(self, key: str, now: float) -> Tombstone | None:
        return await self.store.get_tombstone(key, now)

    async def remove_tombstone(self, key: str) -> None:
        await self.store.remove_tombstone(key)

    async def prune(self, now: float) -> int:
        return await self.store.prune(now)
