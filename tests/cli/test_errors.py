"""One line, the same words, from every command (the real ``tether``) when the server cannot be
reached."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.support.server import ServerProcess, server_stats, start_server

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


TOOLS = [
    ("check", "--scenario", "connect"),
    ("load", "--duration", "1", "--connections", "1"),
    ("stress", "--iterations", "10"),
]


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with start_server() as running:
        yield running


@pytest.mark.parametrize("command", TOOLS, ids=lambda command: command[0])
def test_an_unknown_project_is_bad_input_not_a_failed_run(
    command: tuple[str, ...], server: ServerProcess
) -> None:
    argv = [sys.executable, "-m", "tether", *command, "--url", server.base_url]
    argv += ["--project", "nope", "--json"]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )
    assert (done.returncode, done.stdout) == (2, "")  # exit 2, and no report even with --json
    assert done.stderr.splitlines() == [
        f"tether {command[0]}: unknown project 'nope' (this server has: default)"
    ]
    assert server_stats(server.base_url)["sessions"] == []  # it started nothing
