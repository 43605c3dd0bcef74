"""One node at its limits: the server sizes itself to its fds and PTYs, refuses beyond with 1013
(never a crash or an fd error), and a thousand sessions come and go without leaving anything."""

from __future__ import annotations

import asyncio
import json
import os
import resource
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest

from tests.support.server import ServerProcess, eventually, start_server
from tests.support.wsclient import Conn, connect, must_connect, must_refuse
from tether.server.capacity import FD_RESERVE, FDS_PER_SESSION

pytestmark = pytest.mark.timeout(120)


def _logged(log_file: Path, event: str) -> list[dict[str, Any]]:
    if not log_file.exists():
        return []
    lines = [json.loads(line) for line in log_file.read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line.get("event") == event]


async def _limits(server: ServerProcess) -> dict[str, Any]:
    found = await eventually(lambda: _logged(server.log_file, "limits"), 10, "no limits line")
    return found[0]


async def test_a_small_max_sessions_refuses_with_1013_and_attaching_still_works() -> None:
    with start_server("--max-sessions", "2") as server:
        limits = await _limits(server)
        assert (limits["max_sessions"], limits["configured"]) == (2, 2)
        one = await must_connect(server.ws_url, project="default")
        two = await must_connect(server.ws_url, project="default")
        full = await must_refuse(server.ws_url, project="default")
        assert (full.code, full.reason) == (1013, "server at capacity")
        again = await must_connect(server.ws_url, project="default", session=one.hello["session"])
        assert again.hello["created"] is False
        for conn in (one, two, again):
            await conn.close()


async def test_default_max_sessions_is_what_a_low_fd_limit_allows() -> None:
    # A hard limit of 200 fds: the server cannot raise its soft limit past it, so it holds only
    # the sessions those fds allow and refuses the next with 1013 rather than running out.
    server = ServerProcess(nofile=(200, 200))
    with server.start():
        limits = await _limits(server)
        assert limits["configured"] is None and limits["nofile_hard"] == 200
        allowed = (200 - limits["fds_open"] - FD_RESERVE) // FDS_PER_SESSION
        assert limits["max_sessions"] == allowed and 1 <= allowed < 30
        conns = [await must_connect(server.ws_url, project="default") for _ in range(allowed)]
        full = await must_refuse(server.ws_url, project="default")
        assert (full.code, full.reason) == (1013, "server at capacity")
        await conns[0].send("exit\r")  # a detached session would still count: end one
        assert await conns[0].wait_closed() == 4012
        await conns[0].close()
        replacement = await _connect_when_room(server)
        for conn in [*conns[1:], replacement]:
            await conn.close()
        assert server.process is not None and server.process.poll() is None


async def _connect_when_room(server: ServerProcess) -> Conn:
    """A new session, once the one that exited is gone (its fds are given back)."""

    async def attempt() -> Conn | None:
        result = await connect(server.ws_url, project="default")
        return result if isinstance(result, Conn) else None

    conn: Conn = await eventually(attempt, 10, "no room after a session ended")
    return conn


def _soft_limit_leaving(pid: int, free: int) -> int:
    """The soft limit under which ``pid`` has exactly ``free`` fd numbers left."""
    used = {int(name) for name in os.listdir(f"/proc/{pid}/fd")}
    limit, room = 0, 0
    while room < free or limit in used:
        room += limit not in used
        limit += 1
    return limit


async def test_running_out_of_fds_on_pty_open_is_1013_not_a_crash() -> None:
    with start_server() as server:
        first = await must_connect(server.ws_url, project="default")
        original = resource.prlimit(server.pid, resource.RLIMIT_NOFILE)
        # Room for the accepted socket and one more fd: the PTY's master opens, its slave not.
        resource.prlimit(
            server.pid, resource.RLIMIT_NOFILE, (_soft_limit_leaving(server.pid, 2), original[1])
        )
        try:
            full = await must_refuse(server.ws_url, project="default")
        finally:
            resource.prlimit(server.pid, resource.RLIMIT_NOFILE, original)
        assert (full.code, full.reason) == (1013, "server at capacity: no file descriptor left")
        await first.send("echo STILL-$((6*7))\r")
        await first.read_until("STILL-42")
        later = await must_connect(server.ws_url, project="default")
        for conn in (first, later):
            await conn.close()
        assert server.process is not None and server.process.poll() is None
        assert not _logged(server.log_file, "error"), "a full machine is no shell failure"


# ------------------------------------------------------------------------- a thousand sessions
SESSIONS = 1000


def _footprint(pid: int) -> tuple[int, int, int]:
    process = psutil.Process(pid)
    return len(os.listdir(f"/proc/{pid}/fd")), len(process.children()), process.memory_info().rss


async def _open_and_end(http: aiohttp.ClientSession, url: str, count: int) -> None:
    """Open ``count`` sessions (all attached at once), then make every shell exit."""
    gate = asyncio.Semaphore(64)

    async def open_one() -> aiohttp.ClientWebSocketResponse:
        async with gate:
            ws = await http.ws_connect(url, protocols=("tether.v1",))
            hello = json.loads((await ws.receive(timeout=60)).data)
            assert hello["type"] == "hello" and hello["created"]
            return ws

    sockets = await asyncio.gather(*(open_one() for _ in range(count)))

    async def end_one(ws: aiohttp.ClientWebSocketResponse) -> int | None:
        async with gate:
            await ws.send_bytes(b"exit\r")
            async for _ in ws:
                pass  # output, then `exit`, then the close
            return ws.close_code

    codes = await asyncio.gather(*(end_one(ws) for ws in sockets))
    assert set(codes) == {4012}, f"close codes {set(codes)}"


@pytest.mark.slow
async def test_a_thousand_sessions_leave_no_fds_processes_or_memory_behind() -> None:
    """Two rounds of a thousand sessions, all open at once, then all ended.

    After the first round fds and processes are back where they started; the memory is the
    second round's measure: Python's allocator keeps the arenas the first round touched (the
    tombstones of the ended sessions live among them for their five minutes), so a leak shows
    as growth from one round to the next, not as the first round's high-water mark.
    """
    with start_server("--max-sessions", str(SESSIONS)) as server:
        url = f"{server.ws_url}?project=default"
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            start = _footprint(server.pid)

            def settled() -> bool:
                now = _footprint(server.pid)
                return now[0] <= start[0] and now[1] == start[1]

            await _open_and_end(http, url, SESSIONS)
            await eventually(settled, 60, f"fds/children not back: {_footprint(server.pid)}")
            first = _footprint(server.pid)[2]
            await _open_and_end(http, url, SESSIONS)
            await eventually(settled, 60, f"fds/children not back: {_footprint(server.pid)}")

            def no_growth() -> bool:  # the heap is trimmed at most once a second
                return _footprint(server.pid)[2] - first < 8 * 1024 * 1024

            grown = f"RSS {start[2]} -> {first} -> {_footprint(server.pid)}"
            await eventually(no_growth, 10, grown)
        assert server.process is not None and server.process.poll() is None
