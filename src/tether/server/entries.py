"""A session as the HTTP APIs show it (``/stats/sessions``, ``/api/sessions``,
``/api/me/sessions``): one place for every front."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tether.server.session import Session


def iso(epoch: float) -> str:
    """Unix time as ``2026-11-29T18:00:00Z``."""
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def session_entry(session: Session, now_monotonic: float, now_wall: float) -> dict[str, Any]:
    """One session's facts, with its creation and last activity as wall-clock times."""
    entry = session.stats()
    entry["created_at"] = iso(session.info.created_at)
    entry["last_activity"] = iso(now_wall - (now_monotonic - session.info.last_activity))
    return entry
