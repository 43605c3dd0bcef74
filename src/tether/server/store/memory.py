"""The default store: dicts in this process, no setup."""

from __future__ import annotations

from typing import Any

from tether.server.store.record import SessionRecord, Tombstone
from tether.server.store.tombstones import TombstoneTable


class MemoryStore:
    """In-process :class:`~tether.server.store.base.SessionStore`.

    Records are kept in their ``to_dict()`` form and read back with ``from_dict()``, as a shared
    store would, so that a record that does not survive serialisation fails here first.
    """

    def __init__(self) -> None:
        self._records: dict[str, dict[str, Any]] = {}
        self._tombstones = TombstoneTable()

    async def put_record(self, record: SessionRecord) -> None:
        self._records[record.key] = record.to_dict()

    async def get_record(self, key: str) -> SessionRecord | None:
        data = self._records.get(key)
        return None if data is None else SessionRecord.from_dict(data)

    async def remove_record(self, key: str) -> None:
        self._records.pop(key, None)

    async def list_records(
        self, *, owner: str | None = None, project: str | None = None
    ) -> list[SessionRecord]:
        return [
            SessionRecord.from_dict(data)
            for data in self._records.values()
            if (owner is None or data["owner"] == owner)
            and (project is None or data["project"] == project)
        ]

    async def list_keys(self, *, owner: str | None = None, project: str | None = None) -> list[str]:
        return [record.key for record in await self.list_records(owner=owner, project=project)]

    async def put_tombstone(self, tombstone: Tombstone) -> None:
        self._tombstones.put(tombstone)

    async def get_tombstone(self, key: str, now: float) -> Tombstone | None:
        return self._tombstones.get(key, now)

    async def remove_tombstone(self, key: str) -> None:
        self._tombstones.remove(key)

    async def prune(self, now: float) -> int:
        return self._tombstones.prune(now)
