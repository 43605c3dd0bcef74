"""Ending sessions: operator kill and clear, idle reaping, heartbeat drops, shutdown, the log."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import weakref
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.server import eventually, inprocess_server, start_server
from tests.support.wsclient import must_connect, must_refuse, strip_ansi
from tether.server import pty
from tether.server.clock import FakeClock

pytestmark = pytest.mark.timeout(90)


async def _processes_of(conn) -> list[int]:
    await conn.send("sleep 300 & (sleep 301 &) ; echo JOBS-STARTED\r")
    await conn.read_until("JOBS-STARTED\r\n")
    await conn.send("echo SID=$$\r")
    await conn.read_until("\nSID=")
    await conn.read_until("\r\n", 5)
    text = strip_ansi(bytes(conn.output))
    sid = int(text.rsplit("SID=", 1)[1].split()[0])
    members: list[int] = []

    async def all_started() -> bool:
        members[:] = pty.scan_all_processes(sid)
        return len(members) >= 3  # the shell and both sleeps

    await eventually(all_started)
    return members


async def _gone(pids: list[int], timeout: float = 8.0) -> bool:
    for _ in range(int(timeout / 0.05)):
        if all(pty.is_zombie_or_gone(pid) for pid in pids):
            return True
        await asyncio.sleep(0.05)
    return False


async def test_operator_kill_ends_every_process_and_clients_get_4013() -> None:
    async with inprocess_server() as srv, aiohttp.ClientSession() as http:
        conn = await must_connect(srv.ws_url, project="default")
        members = await _processes_of(conn)
        key = conn.hello["key"]
        async with http.delete(f"{srv.base_url}/api/sessions/{key}") as response:
            assert response.status == 200 and (await response.json())["killed"] == key
        assert await conn.wait_closed() == 4013
        assert await _gone(members), "jobs in their own process groups are ended too"
        late = await must_refuse(
            srv.ws_url, project="default", session=conn.hello["session"], create=0
        )
        assert late.code == 4013
        await conn.close()


async def test_clear_kills_only_the_named_project(tmp_path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with inprocess_server(projects=[f"a={tmp_path / 'a'}", f"b={tmp_path / 'b'}"]) as srv:
        a = await must_connect(srv.ws_url, project="a")
        b = await must_connect(srv.ws_url, project="b")
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{srv.base_url}/api/sessions/clear", json={"project": "a"}) as response,
        ):
            body = await response.json()
        assert body == {"cleared": [a.hello["key"]], "count": 1}
        assert await a.wait_closed() == 4013
        await b.send("echo B-ALIVE\r")
        await b.read_until("B-ALIVE\r\n")
        await a.close()
        await b.close()


async def _state(srv: Any, key: str, state: str) -> None:
    async def reached() -> bool:
        session = srv.server.manager.sessions.get(key)
        return session is not None and session.state.value == state

    await eventually(reached)


async def test_idle_detached_session_is_reaped_and_reported_4004() -> None:
    async with inprocess_server(clock=FakeClock(), idle_timeout=60) as srv:
        conn = await must_connect(srv.ws_url, project="default")
        members = await _processes_of(conn)
        attached = await must_connect(srv.ws_url, project="default")
        await conn.close()
        await _state(srv, conn.hello["key"], "detached")
        srv.clock.advance(60)

        async def reaped() -> bool:
            return conn.hello["key"] not in srv.server.manager.sessions

        await eventually(reaped)
        assert attached.hello["key"] in srv.server.manager.sessions, "attached ones stay"
        assert await _gone(members)
        late = await must_refuse(
            srv.ws_url, project="default", session=conn.hello["session"], create=0
        )
        assert late.code == 4004 and "idle" in late.reason
        await attached.close()


async def _next_control_frame(ws: aiohttp.ClientWebSocketResponse) -> aiohttp.WSMessage:
    """The next frame that is not terminal output."""
    while True:
        message = await asyncio.wait_for(ws.receive(), 5)
        if message.type is not aiohttp.WSMsgType.BINARY:
            return message


async def test_heartbeat_drops_a_peer_that_never_answers_but_keeps_the_session() -> None:
    async with (
        inprocess_server(clock=FakeClock(), heartbeat=30) as srv,
        aiohttp.ClientSession() as http,
    ):
        ws = await http.ws_connect(f"{srv.ws_url}?project=default", autoping=False)
        hello = json.loads((await ws.receive()).data)
        for _ in range(2):
            srv.clock.advance(30)
            assert (await _next_control_frame(ws)).type is aiohttp.WSMsgType.PING
        srv.clock.advance(30)  # a third period with two pings unanswered: dropped
        assert (await _next_control_frame(ws)).type in (
            aiohttp.WSMsgType.CLOSED,
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.ERROR,
            aiohttp.WSMsgType.CLOSING,
        )
        await _state(srv, hello["key"], "detached")
        await ws.close()


async def test_answering_pings_keeps_the_connection() -> None:
    async with (
        inprocess_server(clock=FakeClock(), heartbeat=30) as srv,
        aiohttp.ClientSession() as http,
    ):
        ws = await http.ws_connect(f"{srv.ws_url}?project=default", autoping=False)
        await ws.receive()  # the hello
        for round_trip in range(5):
            srv.clock.advance(30)
            ping = await _next_control_frame(ws)
            assert ping.type is aiohttp.WSMsgType.PING
            await ws.pong(ping.data)
            # Frames are handled in order: once this is answered, so was the pong.
            await ws.send_str(json.dumps({"type": "ping", "t": round_trip}))
            answer = await _next_control_frame(ws)
            assert json.loads(answer.data) == {"type": "pong", "t": round_trip}
        await ws.send_bytes(b"echo STILL-$((6*7))\r")
        output = b""
        while b"STILL-42" not in output:
            message = await asyncio.wait_for(ws.receive(), 5)
            assert message.type is aiohttp.WSMsgType.BINARY, message
            output += message.data
        await ws.close()


def _logged(path: Path) -> list[dict[str, Any]]:
    """The complete lines of a JSON log written by another process (the last may be partial)."""
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


async def test_lifecycle_log_has_one_json_object_per_event(tmp_path) -> None:
    with start_server() as server:
        async with aiohttp.ClientSession() as http:
            conn = await must_connect(server.ws_url, project="default", client="log-client-1")
            await conn.send_json({"type": "resize", "cols": 100, "rows": 30})
            await conn.send("echo hi\r")
            await conn.read_until("hi\r\n")
            await conn.close()

            async def logged(event: str) -> bool:
                return any(line["event"] == event for line in _logged(server.log_file))

            await eventually(lambda: logged("detach"))
            async with http.delete(f"{server.base_url}/api/sessions/{conn.hello['key']}"):
                pass
            await eventually(lambda: logged("kill"))
        lines = _logged(server.log_file)
    events = [line["event"] for line in lines]
    for event in ("listen", "create", "connect", "resize", "detach", "kill"):
        assert event in events, events
    create = next(line for line in lines if line["event"] == "create")
    assert {"ts", "key", "session", "project", "owner", "pid"} <= create.keys()
    connect = next(line for line in lines if line["event"] == "connect")
    assert connect["client"] == "log-client-1" and connect["addr"] == "127.0.0.1"
    assert connect["kind"] == "create" and "duration_ms" in connect
    detach = next(line for line in lines if line["event"] == "detach")
    assert detach["code"] == 1000


async def test_sigterm_tells_clients_1001_and_ends_every_shell() -> None:
    server = start_server()
    try:
        conn = await must_connect(server.ws_url, project="default")
        members = await _processes_of(conn)
        os.kill(server.pid, signal.SIGTERM)
        assert await conn.wait_closed() == 1001
        assert server.stop() == 0
        assert await _gone(members)
        await conn.close()
    finally:
        server.cleanup()


async def test_drain_stops_accepting_says_1001_and_ends_shells_after_the_grace() -> None:
    async with (
        inprocess_server(clock=FakeClock(), drain_grace=20) as srv,
        aiohttp.ClientSession() as http,
    ):
        conn = await must_connect(srv.ws_url, project="default")
        members = await _processes_of(conn)
        async with http.post(f"{srv.base_url}/api/drain") as response:
            assert response.status == 202
        assert await conn.wait_closed() == 1001
        async with http.get(f"{srv.base_url}/readyz") as response:
            assert response.status == 503
        refused = await must_refuse(srv.ws_url, project="default")
        assert refused.code == 1001
        assert not any(pty.is_zombie_or_gone(pid) for pid in members), "shells live in the grace"
        srv.clock.advance(20)

        async def ended() -> bool:
            return srv.server.manager.sessions == {}

        await eventually(ended)
        assert await _gone(members)
        await conn.close()


async def test_a_shell_that_exits_takes_its_orphaned_jobs_but_no_other_terminal() -> None:
    """The served process is a subreaper: jobs orphaned by an exiting shell are found and ended,
    while the processes of the other terminals (its other children) are left alone."""
    with start_server() as server:
        other = await must_connect(server.ws_url, project="default")
        others = await _processes_of(other)
        conn = await must_connect(server.ws_url, project="default")
        members = await _processes_of(conn)
        await conn.send("exit\r")
        assert await conn.wait_closed() == 4012
        assert await _gone(members), "the orphaned (sleep 301 &) ended with its terminal"
        assert not any(pty.is_zombie_or_gone(pid) for pid in others)
        await other.send("echo OTHER-ALIVE\r")
        await other.read_until("OTHER-ALIVE\r\n")
        await other.close()
        await conn.close()


async def test_an_ended_session_is_freed_at_once_not_at_the_next_garbage_collection() -> None:
    """Rings are freed when their session ends and its clients leave, without waiting for the
    cyclic collector (which an idle server may not run for a long time)."""
    async with inprocess_server() as srv, aiohttp.ClientSession() as http:
        conn = await must_connect(srv.ws_url, project="default")
        await conn.send("seq 1 20000 | tail -1\r")
        await conn.read_until("20000\r\n")
        session = weakref.ref(srv.server.manager.sessions[conn.hello["key"]])
        gc.disable()
        try:
            async with http.delete(f"{srv.base_url}/api/sessions/{conn.hello['key']}"):
                pass
            assert await conn.wait_closed() == 4013
            await conn.close()
            for _ in range(100):
                if session() is None:
                    break
                await asyncio.sleep(0.05)
            assert session() is None, "the ended session is not kept alive by a reference cycle"
        finally:
            gc.enable()
