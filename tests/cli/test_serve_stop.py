"""``tether serve`` failing to listen, and stopping on Ctrl-C: one line each, and no idle wait."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import controlled_environment, eventually, start_server
from tether.client import connect

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port some other program listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.mark.parametrize("supervise", ["--supervise", "--no-supervise"])
def test_port_in_use_is_one_line_and_exit_2(busy_port: int, supervise: str, tmp_path: Path) -> None:
    (tmp_path / "home").mkdir()
    command = [
        sys.executable, "-m", "tether", "serve", "--port", str(busy_port), "--auth", "none",
        "--log-file", "-", "--log-stderr-level", "off", "--project", f"default={tmp_path}",
        supervise,
    ]  # fmt: skip
    done = subprocess.run(
        command,
        env=controlled_environment(tmp_path / "home"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=40,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr  # once, even when the supervisor ran the worker
    assert f"port {busy_port} is already in use" in lines[0]
    assert "Traceback" not in done.stderr


def _interrupt(process: subprocess.Popen[bytes]) -> float:
    """SIGINT (what Ctrl-C sends) and the seconds until the server exited."""
    started = time.monotonic()
    process.send_signal(signal.SIGINT)
    process.wait(30)
    return time.monotonic() - started


def test_ctrl_c_with_no_session_stops_at_once() -> None:
    # A drain grace far longer than a stop may take: an idle server must not wait it out.
    server = start_server("--drain-grace", "20")
    try:
        assert server.process is not None
        process = server.process
        seconds = _interrupt(process)
        assert process.returncode == 0
        assert seconds < 10, f"an idle server took {seconds:.1f} s to stop"
        assert not any("stopping" in line for line in server.output)
    finally:
        server.cleanup()


async def test_ctrl_c_with_a_session_says_what_it_waits_for() -> None:
    server = start_server("--drain-grace", "20")
    try:
        assert server.process is not None
        process = server.process
        term = await connect(server.ws_url, project="default", ping_interval=None)
        try:
            process.send_signal(signal.SIGINT)
            said = await eventually(
                lambda: [line for line in server.output if "stopping:" in line], 10
            )
            assert "1 session(s) end in 20 s" in said[0]
            # The second signal ends the shells at once instead of after the grace.
            process.send_signal(signal.SIGINT)
            await asyncio.to_thread(process.wait, 15)
            assert process.returncode == 0
        finally:
            await term.close()
    finally:
        server.cleanup()
