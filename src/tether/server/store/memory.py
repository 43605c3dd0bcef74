"""The default store: a dict in this process, no setup."""

from __future__ import annotations

from typing import Any

from tether.server.store.base import Tombstone


class MemoryStore:
    """In-process :class:`~tether.server.store.base.SessionStore`."""

    def __init__(self) -> None:
        self._records: dict[str, dict[str, Any]] = {}
        self._tombstones: dict[str, Tombstone] = {}

    def put(self, key: str, record: dict[str, Any]) -> None:
        self._records[key] = record

    def remove(self, key: str) -> None:
        self._records.pop(key, None)

    def get(self, key: str) -> dict[str, Any] | None:
        return self._records.get(key)

    def keys(self) -> list[str]:
        return list(self._records)

    def put_tombstone(self, tombstone: Tombstone) -> None:
        self._tombstones[tombstone.key] = tombstone

    def get_tombstone(self, key: str, now: float) -> Tombstone | None:
        tombstone = self._tombstones.get(key)
        if tombstone is not None and tombstone.expires_at <= now:
            del self._tombstones[key]
            return None
        return tombstone

    def remove_tombstone(self, key: str) -> None:
        self._tombstones.pop(key, None)

    def prune(self, now: float) -> int:
        expired = [k for k, t in self._tombstones.items() if t.expires_at <= now]
        for key in expired:
            del self._tombstones[key]
        return len(expired)
