"""SessionManager with a fake clock: idle reaping, tombstones, storms — real PTYs, no sockets."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tether.errors import Refusal
from tether.server.config import build_settings
from tether.server.identity import ANONYMOUS, Identity
from tether.server.manager import ConnectRequest, SessionManager


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

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


@pytest.fixture
async def manager(tmp_path: Path):  # type: ignore[no-untyped-def]
    settings = build_settings(
        {
            "shell": "bash --norc --noprofile",
            "idle_timeout": 60,
            "tombstone_ttl": 300,
            "kill_grace": 0.5,
            "log_file": "-",
        },
        cwd=tmp_path,
    )
    clock = FakeClock()
    events: list[tuple[str, dict[str, Any]]] = []
    manager = SessionManager(
        settings, clock=clock, listener=lambda event, **fields: events.append((event, fields))
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
