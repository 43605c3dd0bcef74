"""One line, the same words, from every command (the real ``tether``) when the server cannot be
reached."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(120)

COMMANDS = [
    ("stats",),
    ("sessions", "list"),
    ("sessions", "kill", "session_1_x:default"),
    ("sessions", "clear", "--yes"),
    ("check", "--scenario", "connect"),
    ("load", "--duration", "1", "--connections", "1"),
    ("stress", "--iterations", "10"),
]


@pytest.fixture(scope="module")
def dead_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_unreachable_server_is_one_line_with_the_same_words(
    command: tuple[str, ...], dead_port: int
) -> None:
    argv = [sys.executable, "-m", "tether", *command, "--url", f"http://127.0.0.1:{dead_port}"]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].endswith(
        f"cannot reach the server at http://127.0.0.1:{dead_port}: "
        "connection refused (is the server running?)"
    )
