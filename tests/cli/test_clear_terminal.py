"""``tether sessions clear`` at a terminal (the real command on a pseudo-terminal): it lists what it
would end, asks, and ends them on "y"."""

from __future__ import annotations

import asyncio
import os
import pty
import select
import subprocess
import sys

import pytest

from tests.support.server import start_server
from tests.support.wsclient import must_connect

pytestmark = pytest.mark.timeout(60)


def _read_until(fd: int, needle: bytes, timeout: float = 20) -> bytes:
    """What the command printed on the terminal, up to ``needle`` (blocking: run in a thread)."""
    seen = b""
    while needle not in seen:
        ready, _, _ = select.select([fd], [], [], timeout)
        assert ready, f"no {needle!r} in {seen!r}"
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the command ended: the terminal hung up
            break
        if not chunk:
            break
        seen += chunk
    return seen


async def test_clear_at_a_terminal_lists_then_asks() -> None:
    with start_server() as server:
        conn = await must_connect(server.ws_url, project="default")
        master, slave = pty.openpty()
        command = [sys.executable, "-m", "tether", "sessions", "clear", "--url", server.base_url]
        env = dict(os.environ, COLUMNS="200")
        process = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave, env=env)
        os.close(slave)
        try:
            asked = await asyncio.to_thread(_read_until, master, b"[y/N]")
            assert conn.hello["key"].encode() in asked  # the list comes before the question
            assert b"End these 1 session(s)?" in asked
            os.write(master, b"y\r")
            answered = await asyncio.to_thread(_read_until, master, b"cleared 1 session(s)")
            assert b"cleared 1 session(s)" in answered
            assert await asyncio.to_thread(process.wait, 20) == 0
            assert await conn.wait_closed() == 4013
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            os.close(master)
            await conn.close()
