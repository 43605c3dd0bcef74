"""tether.server.core.Server driven as a front would drive it, with no web framework: plain
mappings for headers, a recording :class:`Front`, a fake clock, real PTYs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.server import eventually
from tether.errors import Refusal
from tether.server.clock import FakeClock
from tether.server.config import build_settings
from tether.server.core import Server
from tether.server.front import Upgrade
from tether.server.manager import Connection

pytestmark = pytest.mark.timeout(30)

TOKEN = "core-test-token-0000001"
TOKENS = f'[[tokens]]\nowner = "alice"\ntoken = "{TOKEN}"\nprojects = "*"\n'
HOST = {"Host": "127.0.0.1:8080"}


class RecordingFront:
    """A front that records what the core and the session tell it."""

    def __init__(self, address: str = "127.0.0.1") -> None:
        self.address = address
        self.woken = 0
        self.messages: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None
        self.ticks = 0

    def wake(self) -> None:
        self.woken += 1

    def send_message(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    def close(self, code: int, reason: str) -> None:
        if self.closed is None:
            self.closed = (code, reason)

    def heartbeat_tick(self) -> None:
        self.ticks += 1


def upgrade(headers: dict[str, str] | None = None, **query: str) -> Upgrade:
    return Upgrade(
        headers={**HOST, **(headers or {})},
        cookies={},
        query={"project": "default", **query},
        subprotocols=("tether.v1",),
    )


def make_server(tmp_path: Path, clock: FakeClock | None = None, **settings: Any) -> Server:
    settings.setdefault("projects", [f"default={tmp_path}"])
    settings.setdefault("shell", "bash --norc --noprofile")
    settings.setdefault("log_file", "-")
    settings.setdefault("kill_grace", 0.5)
    settings.setdefault("auth", "none")
    settings.setdefault("allow_same_user_shells", True)
    return Server(build_settings(settings, cwd=tmp_path), clock=clock)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    server = make_server(tmp_path, FakeClock(), idle_timeout=60, heartbeat=10, drain_grace=5)
    try:
        yield server
    finally:
        await server.shutdown()


def sample(server: Server, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(server.metrics.render().decode()):
        for item in family.samples:
            if item.name == name and item.labels == labels:
                return float(item.value)
    raise AssertionError(f"no sample {name} {labels}")


def fake(server: Server) -> FakeClock:
    assert isinstance(server.clock, FakeClock)
    return server.clock


# ----------------------------------------------------------------------------- requests
def test_identity_comes_from_header_cookie_or_query_as_plain_mappings(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(TOKENS)
    server = make_server(tmp_path, auth="token", tokens_file=str(tokens))
    bearer = server.identify({"Authorization": f"Bearer {TOKEN}"}, {}, {})
    assert bearer is not None and bearer.owner == "alice"
    cookie = server.identify({}, {"tether_token": TOKEN}, {})
    assert cookie is not None and cookie.owner == "alice"
    assert server.identify({}, {}, {"token": TOKEN}) == cookie
    assert server.identify({"Authorization": "Bearer wrong"}, {}, {}) is None
    assert server.identify({}, {}, {}) is None


def test_host_and_origin_checks_read_plain_headers(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    assert server.host_allowed({"Host": "127.0.0.1:7681"})
    assert server.host_allowed({"Host": "localhost"})
    assert not server.host_allowed({"Host": "attacker.example"})
    same_site = {"Host": "127.0.0.1:7681", "Origin": "http://127.0.0.1:7681"}
    assert server.origin_allowed(same_site)
    assert server.origin_allowed({"Host": "127.0.0.1:7681"}), "no Origin: not a browser"
    assert not server.origin_allowed({"Host": "127.0.0.1:7681", "Origin": "http://evil.example"})


def test_forwarded_for_is_believed_only_from_trusted_proxies_across_every_line(
    tmp_path: Path,
) -> None:
    server = make_server(tmp_path, trusted_proxies=["10.0.0.0/8"])
    assert server.client_address("192.0.2.1", ["203.0.113.5"]) == "192.0.2.1"
    assert server.client_address("10.0.0.2") == "10.0.0.2"
    assert server.client_address("10.0.0.2", ["203.0.113.5"]) == "203.0.113.5"
    # A client's own line comes first, the proxy's last: the walk from the right sees the latter.
    assert server.client_address("10.0.0.2", ["198.51.100.1", "203.0.113.7"]) == "203.0.113.7"
    assert server.client_address("10.0.0.2", ["198.51.100.1, 10.0.0.9"]) == "198.51.100.1"


# ----------------------------------------------------------------------------- connections
async def test_admit_refusals_are_counted_and_logged(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tether.lifecycle")
    front = RecordingFront("192.0.2.9")
    hostile = upgrade({"Origin": "http://evil.example"})
    with pytest.raises(Refusal) as refused:
        server.admit(front, hostile)
    assert refused.value.code == 4003
    wrong_protocol = Upgrade(HOST, {}, {"project": "default"}, subprotocols=("chat",))
    with pytest.raises(Refusal) as refused:
        server.admit(front, wrong_protocol)
    assert refused.value.code == 4000 and "subprotocol" in refused.value.reason
    assert sample(server, "tether_connections_refused_total", code="4003") == 1
    assert sample(server, "tether_connection_attempts_total") == 2
    (first, _) = [r for r in caplog.records if r.getMessage() == "refuse"]
    assert first.fields["addr"] == "192.0.2.9"
    assert server.manager.sessions == {}


async def test_a_connection_from_admission_to_detach(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tether.lifecycle")
    front = RecordingFront()
    with server.serving(front):
        request = upgrade(client="core-client-1")
        connection = server.admit(front, request)
        assert connection.created and connection.attach.hello["type"] == "hello"
        server.on_admitted(front, request, connection, 0.002)
        assert server.process_facts()["connections"] == 1
        assert sample(server, "tether_connections_opened_total", kind="create") == 1
        fake(server).advance(3)
        connection.session.detach(connection.attach.client)
        server.on_detached(front, connection, 1000)
    assert server.process_facts()["connections"] == 0
    assert sample(server, "tether_connections_closed_total", code="1000") == 1
    events = {r.getMessage(): r.fields for r in caplog.records}
    assert events["connect"]["client"] == "core-client-1" and events["connect"]["kind"] == "create"
    assert events["connect"]["duration_ms"] == 2.0
    assert events["detach"]["code"] == 1000 and events["detach"]["duration_ms"] == 3000.0


async def test_resumes_are_counted_only_for_attaches_with_an_offset(server: Server) -> None:
    front = RecordingFront()
    first = server.admit(front, upgrade())
    first.session.detach(first.attach.client)
    session = first.session.info.session_id
    for query in ({"session": session}, {"session": session, "offset": "0"}):
        again = upgrade(**query)
        connection = server.admit(front, again)
        server.on_admitted(front, again, connection, 0.001)
        connection.session.detach(connection.attach.client)
        server.on_detached(front, connection, 1000)
    assert sample(server, "tether_reconnects_total") == 2
    assert sample(server, "tether_resumes_total", gap="false") == 1


# ----------------------------------------------------------------------------- time
async def test_heartbeat_ticks_every_front_once_per_period_of_the_clock(server: Server) -> None:
    clock = fake(server)
    fronts = [RecordingFront(), RecordingFront()]
    heartbeat = asyncio.create_task(server.heartbeat())
    try:
        with server.serving(fronts[0]), server.serving(fronts[1]):
            await eventually(lambda: clock.sleepers == 1)
            clock.advance(9.9)
            assert clock.sleepers == 1, "not a period yet: the heartbeat still sleeps"
            clock.advance(0.1)
            await eventually(lambda: fronts[1].ticks == 1)
            clock.advance(10)
            await eventually(lambda: fronts[0].ticks == 2)
    finally:
        heartbeat.cancel()


async def test_the_reaper_ends_a_detached_session_after_the_idle_timeout(server: Server) -> None:
    clock = fake(server)
    reaper = asyncio.create_task(server.reaper())
    try:
        front = RecordingFront()
        connection = server.admit(front, upgrade())
        key = connection.session.info.key
        connection.session.detach(connection.attach.client)
        await eventually(lambda: clock.sleepers == 1)
        clock.advance(45)
        await eventually(lambda: clock.sleepers == 1)  # it looked, found none, sleeps again
        assert sample(server, "tether_detached_oldest_seconds") == 45
        assert key in server.manager.sessions
        clock.advance(15)
        await eventually(lambda: key not in server.manager.sessions)
        assert sample(server, "tether_idle_reaps_total") == 1
        with pytest.raises(Refusal) as late:
            server.admit(front, upgrade(session=connection.session.info.session_id, create="0"))
        assert late.value.code == 4004
    finally:
        reaper.cancel()


async def test_drain_says_1001_at_once_and_ends_the_shells_after_the_grace(
    server: Server,
) -> None:
    clock = fake(server)
    front = RecordingFront()
    with server.serving(front):
        connection: Connection = server.admit(front, upgrade())
        await server.drain()
        assert front.closed == (1001, "server draining")
        assert server.process_facts()["ready"] is False
        with pytest.raises(Refusal) as refused:
            server.admit(RecordingFront(), upgrade())
        assert refused.value.code == 1001
        await eventually(lambda: clock.sleepers == 1)
        clock.advance(4.9)
        assert clock.sleepers == 1, "the grace is not over"
        assert connection.session.info.key in server.manager.sessions
        clock.advance(0.1)
        await asyncio.wait_for(server.wait_drained(), 5)
    assert server.manager.sessions == {}


async def test_uptime_and_ages_are_read_from_the_injected_clock(tmp_path: Path) -> None:
    clock = FakeClock(wall=1_800_000_000.0)
    server = make_server(tmp_path, clock)
    try:
        clock.advance(12.5)
        facts = server.process_facts()
        assert facts["uptime_seconds"] == 12.5
        connection = server.admit(RecordingFront(), upgrade())
        assert connection.session.info.created_at == 1_800_000_012.5
    finally:
        await server.shutdown()
