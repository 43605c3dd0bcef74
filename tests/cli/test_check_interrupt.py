"""Ctrl-C during ``tether check`` (the real command): it stops at once and ends the shells it
started, here in the middle of the circuit-breaker scenario's wait for the breaker."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import pytest

from tests.support.server import eventually, server_stats, start_server

pytestmark = pytest.mark.timeout(90)


async def _live_sessions(base_url: str) -> list[str]:
    stats = await asyncio.to_thread(server_stats, base_url)
    return [entry["key"] for entry in stats["sessions"] if entry["state"] != "ended"]


async def test_ctrl_c_leaves_no_shell_behind() -> None:
    with start_server() as server:
        command = [sys.executable, "-m", "tether", "check", "--url", server.ws_url]
        command += ["--scenario", "circuit-breaker"]  # time scale 1: 31 s of backoff to come
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        try:
            assert process.stderr is not None
            said = b""
            while b"server cut off" not in said:
                line = await asyncio.to_thread(process.stderr.readline)
                assert line, f"check ended early: {said!r}"
                said += line
            assert await _live_sessions(server.base_url)  # its shell is there, mid-scenario
            process.send_signal(signal.SIGINT)
            out, err = await asyncio.to_thread(process.communicate, timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        assert process.returncode == 130
        assert err.decode().strip().splitlines()[-1] == (
            "tether check: interrupted; the sessions it opened were ended"
        )
        assert "Traceback" not in err.decode() and out == b""
        assert await eventually(
            lambda: _nothing_left(server.base_url), 10, "the check left a shell behind"
        )


async def _nothing_left(base_url: str) -> bool:
    return not await _live_sessions(base_url)
