"""A synchronous table of tombstones, one per key, that expire: the manager's own (looked up on
the connect path without an ``await``) and the memory store's."""

from __future__ import annotations

from tether.server.store.record import Tombstone


class TombstoneTable:
    """Tombstones by composite key; an expired one is never returned (and is dropped when seen)."""

    def __init__(self) -> None:
        self._tombstones: dict[str, Tombstone] = {}

    def __len__(self) -> int:
        return len(self._tombstones)

    def entries(self) -> list[Tombstone]:
        """Every tombstone held (expired ones included until pruned): a hand-over's."""
        return list(self._tombstones.values())

    def put(self, tombstone: Tombstone) -> None:
        """Leave a tombstone, replacing any earlier one for its key."""
        self._tombstones[tombstone.key] = tombstone

    def get(self, key: str, now: float) -> Tombstone | None:
        """The key's tombstone if it has not expired at ``now``."""
        tombstone = self._tombstones.get(key)
        if tombstone is not None and tombstone.is_expired(now):
            del self._tombstones[key]
            return None
        return tombstone

    def remove(self, key: str) -> None:
        """Drop a key's tombstone (idempotent)."""
        self._tombstones.pop(key, None)

    def prune(self, now: float) -> int:
        """Drop every tombstone expired at ``now``; returns how many."""
        expired = [key for key, t in self._tombstones.items() if t.is_expired(now)]
        for key in expired:
            del self._tombstones[key]
        return len(expired)
