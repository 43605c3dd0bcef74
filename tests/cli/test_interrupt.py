"""Ctrl-C during ``tether check``, ``load`` and ``stress`` (the real commands): each stops at
once, exits 130 with one line, and ends every shell it started, not leaving them to the server's
idle timeout (30 minutes)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable

import pytest

from tests.support.server import eventually, server_stats, start_server

pytestmark = pytest.mark.timeout(120)

RUNS = {
    # Three users typing for two minutes: interrupted long before the end.
    "load": ("--connections", "3", "--duration", "120", "--ramp-up", "0"),
    # Three bystanders type through the whole run while the phases open and end more.
    "stress": ("--iterations", "400", "--concurrency", "4"),
}


async def _live_sessions(base_url: str) -> list[str]:
    stats = await asyncio.to_thread(server_stats, base_url)
    return [entry["key"] for entry in stats["sessions"] if entry["state"] != "ended"]


async def _interrupt(
    argv: list[str], base_url: str, started: Callable[[subprocess.Popen[bytes]], Awaitable[None]]
) -> tuple[int, bytes, str]:
    """Run ``tether ARGV --url BASE_URL``, SIGINT it once ``started`` returns; (status, stdout,
    stderr), once no session is left running on the server."""
    command = [sys.executable, "-m", "tether", *argv, "--url", base_url]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    try:
        await started(process)
        assert process.poll() is None, f"{argv[0]} ended before the interrupt"
        process.send_signal(signal.SIGINT)
        out, err = await asyncio.to_thread(process.communicate, timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    await eventually(lambda: _nothing_left(base_url), 10, f"{argv[0]} left a shell behind")
    return process.returncode, out, err.decode()


async def _nothing_left(base_url: str) -> bool:
    return not await _live_sessions(base_url)


async def test_check_ctrl_c_in_the_breakers_wait_leaves_no_shell() -> None:
    with start_server() as server:

        async def mid_scenario(process: subprocess.Popen[bytes]) -> None:
            assert process.stderr is not None
            said = b""
            while b"server cut off" not in said:
                line = await asyncio.to_thread(process.stderr.readline)
                assert line, f"check ended early: {said!r}"
                said += line
            assert await _live_sessions(server.base_url)  # its shell is there, mid-scenario

        # Time scale 1: 31 s of backoff to come.
        argv = ["check", "--scenario", "circuit-breaker"]
        status, out, err = await _interrupt(argv, server.base_url, mid_scenario)
    assert status == 130
    assert err.strip().splitlines()[-1] == (
        "tether check: interrupted; the sessions it opened were ended"
    )
    assert "Traceback" not in err and out == b""


@pytest.mark.parametrize("tool", sorted(RUNS))
async def test_load_and_stress_ctrl_c_end_every_session_they_opened(tool: str) -> None:
    with start_server() as server:

        async def three_open(_: subprocess.Popen[bytes]) -> None:
            async def enough() -> bool:
                return len(await _live_sessions(server.base_url)) >= 3

            await eventually(enough, 60, f"{tool} opened no session")

        status, out, err = await _interrupt([tool, *RUNS[tool]], server.base_url, three_open)
    assert status == 130, err
    assert err.strip().splitlines()[-1] == (
        f"tether {tool}: interrupted; the sessions it opened were ended"
    )
    assert "Traceback" not in err and out == b""
