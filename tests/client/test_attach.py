"""``tether attach``: the pure parts, raw mode on a real PTY, and the command run in tmux."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from tests.support.server import ServerProcess, start_server
from tether.client import Connected, Disconnected, Exited, Gap
from tether.client.attach import DetachKeyFilter, describe, raw_mode, strip_terminal_replies
from tether.protocol.policy import PolicyEvent, State

# ------------------------------------------------------------------------------- pure parts


@pytest.mark.parametrize(
    ("chunks", "sent", "detached"),
    [
        ([b"abc"], b"abc", False),
        ([b"ab\x1cd", b"ignored"], b"ab", True),
        ([b"ab\x1c", b"d"], b"ab", True),  # the key split across two reads
        ([b"\x1c\x1c"], b"\x1c", False),  # Ctrl-\ twice sends one
        ([b"\x1cx"], b"\x1cx", False),  # Ctrl-\ then another key sends both
        ([b"\x1c", b"\x1c", b"d"], b"\x1cd", False),
    ],
)
def test_detach_key(chunks: list[bytes], sent: bytes, detached: bool) -> None:
    keys = DetachKeyFilter()
    out, done = bytearray(), False
    for chunk in chunks:
        data, done = keys.feed(chunk)
        out += data
        if done:
            break
    assert (bytes(out), done) == (sent, detached)


def test_terminal_replies_are_stripped() -> None:
    typed = b"ls\x1b[12;40R\x1b[?64;1;2c\x1b[>1;10;0c -l\x1b[A"
    assert strip_terminal_replies(typed) == b"ls -l\x1b[A"


def test_status_messages() -> None:
    now = datetime(2026, 1, 1, 12, 3, 0)
    assert describe(PolicyEvent(State.WAITING, 3, 2, 4.0), now) == "reconnecting in 4 s (attempt 3)"
    assert describe(PolicyEvent(State.OPEN, 6, 5, 10.0), now) == (
        "paused: server unreachable, retrying at 12:03:10"
    )
    assert describe(PolicyEvent(State.HALF_OPEN, 6, 5), now) == "trying the server again"
    assert describe(PolicyEvent(State.CONNECTED, 0, 0), now) is None
    assert describe(Gap(10, 25)) == "15 bytes of output were lost while away"
    assert describe(Exited(3, None)) == "the shell exited (status 3)"
    assert describe(Exited(None, 9)) == "the shell exited (signal 9)"
    assert describe(Connected({}, True)) == "reconnected"
    assert describe(Connected({}, False)) is None
    assert describe(Disconnected(1006, "")) == "connection lost (1006)"


def test_raw_mode_is_restored_even_on_error() -> None:
    master, slave = os.openpty()
    try:
        before = termios.tcgetattr(slave)
        with pytest.raises(RuntimeError), raw_mode(slave):
            assert termios.tcgetattr(slave) != before
            raise RuntimeError("boom")
        assert termios.tcgetattr(slave) == before
    finally:
        os.close(master)
        os.close(slave)


def test_raw_mode_ignores_non_terminals() -> None:
    read_end, write_end = os.pipe()
    try:
        with raw_mode(read_end):
            pass
    finally:
        os.close(read_end)
        os.close(write_end)


# --------------------------------------------------------------------------- through tmux
PROMPT = r"(?m)^outer\$"  # capture-pane drops trailing spaces


class Tmux:
    """One private tmux server (its own socket) running a controlled bash."""

    def __init__(self, workdir: Path) -> None:
        self.socket = str(workdir / "tmux.sock")
        self.workdir = workdir
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(workdir),
            "LANG": "C.UTF-8",
            "TERM": "xterm-256color",
        }
        self._run("-f", "/dev/null", "new-session", "-d", "-x", "100", "-y", "30",
                  "-c", str(workdir), "bash --norc --noprofile", env=env)  # fmt: skip

    def _run(self, *args: str, env: dict[str, str] | None = None) -> str:
        done = subprocess.run(["tmux", "-S", self.socket, *args], env=env, check=True,
                              capture_output=True, text=True, timeout=10)  # fmt: skip
        return done.stdout

    def type(self, text: str, enter: bool = True) -> None:
        self._run("send-keys", "-l", text)
        if enter:
            self._run("send-keys", "Enter")

    def keys(self, *keys: str) -> None:
        self._run("send-keys", *keys)

    def screen(self) -> str:
        return self._run("capture-pane", "-p", "-J", "-S", "-200")

    def wait_for(self, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            match = re.search(pattern, self.screen())
            if match:
                return match
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} never showed:\n{self.screen()}")
            time.sleep(0.05)

    def resize(self, cols: int, rows: int) -> None:
        self._run("resize-window", "-x", str(cols), "-y", str(rows))

    def kill(self) -> None:
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], capture_output=True, timeout=10)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with start_server() as running:
        yield running


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    workdir = Path(tempfile.mkdtemp(prefix="tether-tmux-"))
    session = Tmux(workdir)
    try:
        session.type("PS1='out''er$ '")  # the echoed command itself does not match "outer$ "
        session.wait_for(PROMPT)
        yield session
    finally:
        session.kill()
        shutil.rmtree(workdir, ignore_errors=True)


def read_when_written(path: Path, timeout: float = 10.0) -> str:
    """The content of a file a shell writes (written to a temporary name, then moved)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} was never written"
        time.sleep(0.02)
    return path.read_text()


def attach_command(server: ServerProcess, *args: str) -> str:
    return f"{sys.executable} -m tether attach {server.base_url} {' '.join(args)}; echo rc=$?"


def test_attach_type_resize_detach_reattach_and_restore(server: ServerProcess, tmux: Tmux) -> None:
    tmux.type("stty -g > before.tmp; mv before.tmp before.txt; clear")
    tmux.type(attach_command(server))
    tmux.type("echo inner-$((6*7)) pid-$$")
    pid = tmux.wait_for(r"inner-42 pid-(\d+)").group(1)
    tmux.type("stty size")
    tmux.wait_for(r"\n30 100")
    tmux.resize(120, 40)
    time.sleep(0.3)
    tmux.type("stty size")
    tmux.wait_for(r"\n40 120")
    tmux.keys("C-\\")
    tmux.keys("d")
    session = tmux.wait_for(r"detached from session (session_\w+)").group(1)
    tmux.wait_for(r"re-attach: tether attach \S+ --project default --session " + session)
    tmux.wait_for(r"rc=0")
    tmux.type("stty -g > after.tmp; mv after.tmp after.txt; clear")
    assert read_when_written(tmux.workdir / "before.txt") == read_when_written(
        tmux.workdir / "after.txt"
    )

    tmux.type(attach_command(server, "--session", session))
    tmux.wait_for(r"inner-42 pid-" + pid)  # the replay shows the earlier output
    tmux.type("echo again-$$")
    tmux.wait_for(r"again-" + pid)  # the same shell
    tmux.keys("C-\\")
    tmux.keys("d")
    tmux.wait_for(r"rc=0\s+outer\$")


def test_attach_surfaces_a_server_restart_and_restores_the_terminal(
    server: ServerProcess, tmux: Tmux
) -> None:
    tmux.type("stty -g > before.tmp; mv before.tmp before.txt; clear")
    tmux.type(attach_command(server))
    tmux.type("echo ready-$((1+1))")
    tmux.wait_for(r"ready-2")
    server.restart()
    tmux.wait_for(r"ended: 4004")
    tmux.wait_for(r"rc=1")
    tmux.type("stty -g > after.tmp; mv after.tmp after.txt")
    assert read_when_written(tmux.workdir / "before.txt") == read_when_written(
        tmux.workdir / "after.txt"
    )


def test_attach_to_a_missing_session_fails_clearly(server: ServerProcess, tmux: Tmux) -> None:
    missing = "session_1754900000000_" + "a" * 20
    tmux.type(attach_command(server, "--session", missing))
    tmux.wait_for(r"cannot attach: 4004")
    tmux.wait_for(r"rc=1")
