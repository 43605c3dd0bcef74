"""Bad input gets the documented close code and reason, and touches no other session."""

from __future__ import annotations

import aiohttp
import pytest

from tests.support.server import inprocess_server
from tests.support.wsclient import connect, must_connect, must_refuse

pytestmark = pytest.mark.timeout(60)

BAD_PARAMETERS = [
    ({}, "project"),
    ({"project": "bad/project"}, "project"),
    ({"project": "default", "session": "bad id!"}, "session"),
    ({"project": "default", "session": "x" * 129}, "session"),
    ({"project": "default", "session": "sessión"}, "session"),
    ({"project": "default", "client": "short"}, "client"),
    ({"project": "default", "offset": "-1"}, "offset"),
    ({"project": "default", "offset": "abc"}, "offset"),
    ({"project": "default", "cols": "0", "rows": "24"}, "cols"),
    ({"project": "default", "cols": "80", "rows": "501"}, "rows"),
    ({"project": "default", "cols": "1001", "rows": "24"}, "cols"),
    ({"project": "default", "create": "maybe"}, "create"),
]


async def _alive(srv, conn) -> None:
    await conn.send("echo UNTOUCHED-$((40+2))\r")
    await conn.read_until("UNTOUCHED-42")


@pytest.mark.parametrize(("query", "named"), BAD_PARAMETERS)
async def test_bad_parameters_close_4000_naming_the_parameter(query, named) -> None:
    async with inprocess_server() as srv:
        bystander = await must_connect(srv.ws_url, project="default")
        refused = await must_refuse(srv.ws_url, **query)
        assert refused.code == 4000
        assert named in refused.reason and len(refused.reason.encode()) <= 123
        await _alive(srv, bystander)
        assert len(srv.server.manager.sessions) == 1
        await bystander.close()


async def test_unknown_project_is_forbidden() -> None:
    async with inprocess_server() as srv:
        refused = await must_refuse(srv.ws_url, project="nope")
        assert refused.code == 4003 and "project" in refused.reason


async def test_offset_beyond_the_stream_is_refused() -> None:
    async with inprocess_server() as srv:
        conn = await must_connect(srv.ws_url, project="default")
        refused = await must_refuse(
            srv.ws_url, project="default", session=conn.hello["session"], offset=10**9
        )
        assert refused.code == 4000 and "offset" in refused.reason
        await _alive(srv, conn)
        await conn.close()


async def test_wrong_subprotocol_is_refused_and_none_means_v1() -> None:
    async with inprocess_server() as srv:
        refused = await connect(srv.ws_url, protocols=("chat.v2",), project="default")
        assert refused.code == 4000 and "subprotocol" in refused.reason
        plain = await connect(srv.ws_url, protocols=(), project="default")
        assert plain.hello["created"] is True
        await plain.close()


async def test_foreign_origin_is_refused_own_origin_allowed() -> None:
    async with inprocess_server() as srv:
        foreign = await connect(
            srv.ws_url, headers={"Origin": "http://evil.example"}, project="default"
        )
        assert foreign.code == 4003 and "origin" in foreign.reason
        own = await connect(srv.ws_url, headers={"Origin": srv.base_url}, project="default")
        assert own.hello["created"]
        await own.close()


async def test_oversized_frame_closes_1009_and_others_are_untouched() -> None:
    async with inprocess_server(max_message_size=4096) as srv:
        bystander = await must_connect(srv.ws_url, project="default")
        conn = await must_connect(srv.ws_url, project="default")
        await conn.send(b"x" * 5000)
        assert await conn.wait_closed() == 1009
        await _alive(srv, bystander)
        session = srv.server.manager.sessions[conn.hello["key"]]
        assert session.state.value == "detached", "closing a connection never ends its session"
        await conn.close()
        await bystander.close()


async def test_binary_garbage_is_just_input() -> None:
    async with inprocess_server() as srv:
        conn = await must_connect(srv.ws_url, project="default")
        await conn.send(bytes(range(256)) * 4 + b"\x03\recho SURVIVED\r")
        await conn.read_until("SURVIVED\r\n")
        await conn.close()


async def test_per_key_storm_refuses_the_11th_with_retry_after() -> None:
    async with inprocess_server() as srv:
        sid = "session_1754900000000_stormstorm01"
        for _ in range(10):
            conn = await must_connect(srv.ws_url, project="default", session=sid)
            await conn.close()
        refused = await must_refuse(srv.ws_url, project="default", session=sid)
        assert (refused.code, refused.reason) == (4129, "retry-after=1")
        other = await must_connect(srv.ws_url, project="default")
        assert other.hello["created"], "other keys are not affected"
        await other.close()
        breakers = srv.server.manager.key_storms.snapshot(srv.server.clock.monotonic())
        assert any(b.key == f"{sid}:default" and b.state.value == "open" for b in breakers)


async def test_refused_attempts_do_not_count_toward_the_storm_window() -> None:
    async with inprocess_server() as srv:
        sid = "session_1754900000000_stormstorm02"
        for _ in range(30):
            await must_refuse(srv.ws_url, project="default", session=sid, create=0)
        conn = await must_connect(srv.ws_url, project="default", session=sid)
        assert conn.hello["created"]
        await conn.close()


async def test_per_address_storm_applies_when_loopback_is_not_exempt() -> None:
    async with inprocess_server(address_storm_threshold=5, storm_exempt_loopback=False) as srv:
        for _ in range(5):
            conn = await must_connect(srv.ws_url, project="default")
            await conn.close()
        refused = await must_refuse(srv.ws_url, project="default")
        assert refused.code == 4129 and refused.reason.startswith("retry-after=")
        bad = await must_refuse(srv.ws_url, project="bad/x")
        assert bad.code == 4129, "the per-address check runs before parameter checks"


async def test_failing_shell_start_opens_the_project_breaker() -> None:
    async with inprocess_server(shell="/nonexistent/shell") as srv:
        codes = [(await must_refuse(srv.ws_url, project="default")).code for _ in range(6)]
        assert codes[:5] == [1011] * 5
        assert codes[5] == 1013
        facts = srv.server.manager.start_failures.snapshot(srv.server.clock.monotonic())
        assert facts and facts[0].state.value == "open"


async def test_server_at_capacity_answers_1013() -> None:
    async with inprocess_server(max_sessions=2) as srv:
        one = await must_connect(srv.ws_url, project="default")
        two = await must_connect(srv.ws_url, project="default")
        full = await must_refuse(srv.ws_url, project="default")
        assert full.code == 1013
        again = await must_connect(srv.ws_url, project="default", session=one.hello["session"])
        assert again.hello["created"] is False, "attaching is not limited"
        for conn in (one, two, again):
            await conn.close()


async def test_http_errors_are_json() -> None:
    async with inprocess_server() as srv, aiohttp.ClientSession() as http:
        async with http.get(f"{srv.base_url}/no/such/path") as response:
            assert response.status == 404
            body = await response.json()
            assert body["error"]["code"] and body["error"]["message"]
        async with http.delete(f"{srv.base_url}/api/sessions/nope:default") as response:
            assert response.status == 404
            assert (await response.json())["error"]["code"] == "not_found"
        async with http.post(f"{srv.base_url}/healthz") as response:
            assert response.status == 405
            assert "error" in await response.json()
        bad = {"data": b"{bad", "headers": {"Content-Type": "application/json"}}
        async with http.post(f"{srv.base_url}/api/sessions/clear", **bad) as response:
            assert response.status == 400
            assert (await response.json())["error"]["code"] == "bad_json"
