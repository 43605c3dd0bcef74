"""The HTTP endpoints of docs/protocol.md, section 9 against a real server with real sessions: JSON
shapes and values of /stats/sessions and /stats/circuit-breaker, the operator API, health."""

from __future__ import annotations

import asyncio
import os
import re
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from tests.support.server import inprocess_server
from tests.support.wsclient import must_connect, must_refuse
from tether.server.clock import FakeClock

pytestmark = pytest.mark.timeout(60)

ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
SESSION_FIELDS = {
    "key",
    "session",
    "project",
    "owner",
    "state",
    "pid",
    "created_at",
    "last_activity",
    "clients",
    "output_position",
    "buffered_bytes",
    "memory_bytes",
}


async def get(url: str, expect: int = 200) -> Any:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == expect, await response.text()
        assert response.content_type == "application/json"
        return await response.json()


async def request(method: str, url: str, expect: int, **kwargs: Any) -> Any:
    async with aiohttp.ClientSession() as http, http.request(method, url, **kwargs) as response:
        assert response.status == expect, await response.text()
        return await response.json()


def assert_error(body: Any, code: str) -> None:
    assert set(body) == {"error"} and body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


async def wait_state(base_url: str, key: str, state: str) -> dict[str, Any]:
    for _ in range(100):
        stats = await get(f"{base_url}/stats/sessions")
        entry = next((s for s in stats["sessions"] if s["key"] == key), None)
        if entry is not None and entry["state"] == state:
            return stats
        await asyncio.sleep(0.05)
    raise AssertionError(f"{key} never became {state}")


@pytest.fixture
def two_projects(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    return [f"a={tmp_path / 'a'}", f"b={tmp_path / 'b'}"]


async def test_stats_sessions_counts_states_clients_and_bytes(two_projects) -> None:
    async with inprocess_server(projects=two_projects) as srv:
        a1 = await must_connect(srv.ws_url, project="a")
        a2 = await must_connect(srv.ws_url, project="a")
        b1 = await must_connect(srv.ws_url, project="b")
        b1_twin = await must_connect(srv.ws_url, project="b", session=b1.hello["session"])
        await a1.send("echo STATS-A1\r")
        await a1.read_until("STATS-A1\r\n")
        await a2.close()
        stats = await wait_state(srv.base_url, a2.hello["key"], "detached")

        totals = stats["totals"]
        assert totals["sessions"] == 3
        assert (totals["attached"], totals["detached"], totals["starting"]) == (2, 1, 0)
        assert totals["by_state"] == {"starting": 0, "attached": 2, "detached": 1, "ended": 0}
        assert totals["clients"] == 3
        entries = {s["key"]: s for s in stats["sessions"]}
        assert totals["buffered_bytes"] == sum(s["buffered_bytes"] for s in entries.values())
        assert totals["memory_bytes"] == sum(s["memory_bytes"] for s in entries.values())

        server = stats["server"]
        assert server["pid"] == os.getpid()
        assert server["rss_bytes"] > 10 * 1024 * 1024 and server["cpu_seconds"] > 0
        assert server["cpu_percent"] >= 0 and server["uptime_seconds"] >= 0
        assert server["ready"] is True and server["connections"] == 3

        first = entries[a1.hello["key"]]
        assert first.keys() >= SESSION_FIELDS
        assert first["session"] == a1.hello["session"] and first["project"] == "a"
        assert first["owner"] == "anonymous" and first["state"] == "attached"
        assert first["clients"] == 1 and entries[b1.hello["key"]]["clients"] == 2
        assert first["output_position"] >= len(a1.output) > 0
        assert first["buffered_bytes"] == first["output_position"]  # nothing dropped yet
        assert ISO.fullmatch(first["created_at"]) and ISO.fullmatch(first["last_activity"])
        created = datetime.strptime(first["created_at"], "%Y-%m-%dT%H:%M:%SZ")
        assert abs(created.replace(tzinfo=UTC).timestamp() - datetime.now(UTC).timestamp()) < 60
        assert os.path.exists(f"/proc/{first['pid']}")
        for conn in (a1, b1, b1_twin):
            await conn.close()


async def test_stats_sessions_filters_by_project_and_owner(two_projects) -> None:
    async with inprocess_server(projects=two_projects) as srv:
        conns = [await must_connect(srv.ws_url, project=p) for p in ("a", "a", "b")]
        only_a = await get(f"{srv.base_url}/stats/sessions?project=a")
        assert {s["project"] for s in only_a["sessions"]} == {"a"}
        assert only_a["totals"]["sessions"] == 2 and only_a["totals"]["clients"] == 2
        mine = await get(f"{srv.base_url}/stats/sessions?owner=anonymous")
        assert mine["totals"]["sessions"] == 3
        nobody = await get(f"{srv.base_url}/stats/sessions?owner=nobody&project=a")
        assert nobody["sessions"] == [] and nobody["totals"]["sessions"] == 0
        listed = await get(f"{srv.base_url}/api/sessions?project=b")
        assert [s["project"] for s in listed["sessions"]] == ["b"]
        for conn in conns:
            await conn.close()


async def test_kill_and_clear_move_the_stats(two_projects) -> None:
    async with inprocess_server(projects=two_projects) as srv:
        a1, a2, b1 = [await must_connect(srv.ws_url, project=p) for p in ("a", "a", "b")]
        base = srv.base_url
        body = await request("DELETE", f"{base}/api/sessions/{a1.hello['key']}", 200)
        assert body == {"killed": a1.hello["key"]}
        assert await a1.wait_closed() == 4013
        stats = await get(f"{base}/stats/sessions")
        assert a1.hello["key"] not in {s["key"] for s in stats["sessions"]}
        assert stats["totals"]["sessions"] == 2

        again = await request("DELETE", f"{base}/api/sessions/{a1.hello['key']}", 404)
        assert_error(again, "not_found")
        assert_error(
            await request("POST", f"{base}/api/sessions/clear?project=zz", 404), "not_found"
        )

        cleared = await request("POST", f"{base}/api/sessions/clear", 200, json={"project": "a"})
        assert cleared == {"cleared": [a2.hello["key"]], "count": 1}
        assert (await get(f"{base}/stats/sessions"))["totals"]["sessions"] == 1
        everything = await request("POST", f"{base}/api/sessions/clear", 200)
        assert everything == {"cleared": [b1.hello["key"]], "count": 1}
        assert (await get(f"{base}/stats/sessions"))["totals"] == {
            "sessions": 0,
            "starting": 0,
            "attached": 0,
            "detached": 0,
            "ended": 0,
            "by_state": {"starting": 0, "attached": 0, "detached": 0, "ended": 0},
            "clients": 0,
            "buffered_bytes": 0,
            "memory_bytes": 0,
        }
        for conn in (a1, a2, b1):
            await conn.close()


async def test_circuit_breaker_shows_a_key_breaker_through_its_states() -> None:
    async with inprocess_server(clock=FakeClock(), storm_threshold=2, storm_window=5) as srv:
        url = f"{srv.base_url}/stats/circuit-breaker"
        quiet = await get(url)
        assert quiet["thresholds"]["key"] == {
            "threshold": 2,
            "window": 5.0,
            "max_delay": 30.0,
            "forget_after": 30.0,
        }
        assert quiet["thresholds"]["address"]["loopback_exempt"] is True
        assert quiet["thresholds"]["project"] == {"failures": 5, "open_for": 30.0}
        assert (quiet["key"], quiet["address"], quiet["project"]) == ([], [], [])
        assert quiet["open"] == {"key": 0, "address": 0, "project": 0}

        first = await must_connect(srv.ws_url, project="default")
        session, key = first.hello["session"], first.hello["key"]
        await first.close()
        for _ in range(2):
            await (await must_connect(srv.ws_url, project="default", session=session)).close()
        counting = await get(url)
        assert [(b["key"], b["state"], b["attempts"]) for b in counting["key"]] == [
            (key, "closed", 2)
        ]

        assert (await must_refuse(srv.ws_url, project="default", session=session)).code == 4129
        tripped = await get(url)
        (row,) = tripped["key"]
        assert row["state"] == "open" and row["trips"] == 1 and row["retry_after"] == 1
        assert row["attempts"] == 0 and row["delay"] == 1.0
        assert ISO.fullmatch(row["opened_at"])
        assert tripped["open"]["key"] == 1

        srv.clock.advance(0.5)
        (still_open,) = (await get(url))["key"]
        assert still_open["state"] == "open" and still_open["retry_after"] == 1
        assert (await must_refuse(srv.ws_url, project="default", session=session)).code == 4129
        srv.clock.advance(0.5)
        (half_open,) = (await get(url))["key"]
        assert half_open["state"] == "half_open" and half_open["retry_after"] == 0
        await (await must_connect(srv.ws_url, project="default", session=session)).close()
        (closed,) = (await get(url))["key"]
        assert closed["state"] == "closed" and closed["attempts"] == 1 and closed["trips"] == 1


async def test_circuit_breaker_shows_address_and_project_breakers(tmp_path) -> None:
    broken, fine = tmp_path / "broken", tmp_path / "fine"
    broken.mkdir()
    fine.mkdir()
    settings = {
        "storm_exempt_loopback": False,
        "address_storm_threshold": 7,
        "projects": [f"broken={broken}", f"fine={fine}"],
    }
    async with inprocess_server(clock=FakeClock(), **settings) as srv:
        broken.rmdir()
        for _ in range(2):  # admitted attempts count for the address; refused ones never do
            await (await must_connect(srv.ws_url, project="fine")).close()
        for _ in range(5):
            assert (await must_refuse(srv.ws_url, project="broken")).code == 1011
        refused = await must_refuse(srv.ws_url, project="broken")
        assert refused.code == 1013 and "retry-after=" in refused.reason
        breakers = await get(f"{srv.base_url}/stats/circuit-breaker")
        (project,) = breakers["project"]
        assert project["project"] == "broken" and project["state"] == "open"
        assert project["failures"] == 5 and project["retry_after"] == 30
        assert ISO.fullmatch(project["opened_at"])
        (address,) = breakers["address"]
        assert address["key"] == "127.0.0.1" and address["state"] == "closed"
        assert address["attempts"] == 2 and address["trips"] == 0 and address["opened_at"] is None
        assert breakers["open"] == {"key": 0, "address": 0, "project": 1}
        assert breakers["thresholds"]["address"]["threshold"] == 7
        srv.clock.advance(12)
        (waiting,) = (await get(f"{srv.base_url}/stats/circuit-breaker"))["project"]
        assert waiting["state"] == "open" and waiting["retry_after"] == 18
        assert waiting["opened_at"] == project["opened_at"]


async def test_health_ready_drain_and_errors_are_json() -> None:
    async with inprocess_server(drain_grace=0.1) as srv:
        base = srv.base_url
        assert await get(f"{base}/healthz") == {"status": "ok"}
        assert await get(f"{base}/readyz") == {"status": "ready"}
        assert_error(await get(f"{base}/no/such/page", 404), "not_found")
        drained = await request("POST", f"{base}/api/drain", 202)
        assert drained == {"draining": True, "grace": 0.1}
        assert_error(await get(f"{base}/readyz", 503), "draining")
        assert await get(f"{base}/healthz") == {"status": "ok"}
        stats = await get(f"{base}/stats/sessions")
        assert stats["server"]["ready"] is False


async def test_one_session_by_key() -> None:
    async with inprocess_server() as srv, aiohttp.ClientSession() as http:
        conn = await must_connect(srv.ws_url, project="default")
        async with http.get(f"{srv.base_url}/api/sessions/{conn.hello['key']}") as response:
            assert response.status == 200
            entry = await response.json()
        assert entry["key"] == conn.hello["key"] and entry["state"] == "attached"
        assert entry["clients"] == 1 and entry["pid"] > 0
        async with http.get(f"{srv.base_url}/api/sessions/nope:default") as response:
            assert response.status == 404
            assert (await response.json())["error"]["code"] == "not_found"
        await conn.close()


async def test_a_plain_get_of_the_terminal_endpoint_starts_no_shell() -> None:
    """The shell starts before the upgrade is answered, but only for a real upgrade request."""
    async with inprocess_server() as srv, aiohttp.ClientSession() as http:
        url = f"{srv.base_url}/ws/terminal?project=default"
        async with http.get(url) as response:
            assert response.status == 400
            assert response.content_type == "application/json"
        half = {"Connection": "Upgrade", "Upgrade": "websocket"}  # no key, no version
        async with http.get(url, headers=half) as response:
            assert response.status == 400
        assert srv.server.manager.sessions == {}
        assert srv.server.manager.counters["created"] == 0
