"""The registry interface every store implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Tombstone:
    """What is left of an ended session for a while: why it ended, and whose it was."""

    key: str
    owner: str
    code: int
    reason: str
    ended_at: float
    expires_at: float


class SessionStore(Protocol):
    """A small registry of session facts and tombstones, keyed by composite key."""

    def put(self, key: str, record: dict[str, Any]) -> None:
        """Register or update a live session's facts (JSON-serializable)."""

    def remove(self, key: str) -> None:
        """Forget a live session."""

    def get(self, key: str) -> dict[str, Any] | None:
        """A live session's facts, if registered."""

    def keys(self) -> list[str]:
        """Every registered live session key."""

    def put_tombstone(self, tombstone: Tombstone) -> None:
        """Leave a tombstone (replacing any earlier one for the key)."""

    def get_tombstone(self, key: str, now: float) -> Tombstone | None:
        """The key's tombstone if it has not expired at ``now``."""

    def remove_tombstone(self, key: str) -> None:
        """Drop a key's tombstone (a new shell was started under it)."""

    def prune(self, now: float) -> int:
        """Drop expired tombstones; returns how many."""
