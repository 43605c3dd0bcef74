"""``tether attach``: the pure parts, raw mode on a real PTY, and the command run in tmux."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import termios
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest

from tests.browser.helpers import ThreadedProxy
from tests.support.server import ServerProcess, poll_until, server_stats, start_server
from tether.client import Connected, Disconnected, Exited, Gap, connect
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
        match: re.Match[str] = poll_until(
            lambda: re.search(pattern, self.screen()),
            timeout,
            lambda: f"{pattern!r} never showed:\n{self.screen()}",
        )
        return match

    def visible(self) -> list[str]:
        """The rows on screen now (the alternate screen while a program is in it)."""
        return self._run("capture-pane", "-p").splitlines()

    def wait_until(
        self, check: Callable[[list[str]], bool], what: str, timeout: float = 15.0
    ) -> None:
        poll_until(
            lambda: check(self.visible()),
            timeout,
            lambda: f"{what} never held:\n" + "\n".join(self.visible()),
        )

    def flags(self, *names: str) -> dict[str, str]:
        """The pane's terminal modes as tmux sees them (``alternate_on``, ``mouse_any_flag``…)."""
        shown = self._run("display-message", "-p", " ".join(f"#{{{n}}}" for n in names))
        return dict(zip(names, shown.split(), strict=True))

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
    poll_until(path.exists, timeout, f"{path.name} was never written")
    return path.read_text()


def attach_command(server: ServerProcess, *args: str) -> str:
    return f"{sys.executable} -m tether attach {server.base_url} {' '.join(args)}; echo rc=$?"


def test_attach_type_resize_detach_reattach_and_restore(server: ServerProcess, tmux: Tmux) -> None:
    tmux.type("stty -g > before.tmp; mv before.tmp before.txt; clear")
    tmux.type(attach_command(server))
    tmux.wait_for(r"\[tether\] attached to session_\w+ \(project default\); detach: Ctrl-\\ then d")
    tmux.type("echo inner-$((6*7)) pid-$$")
    pid = tmux.wait_for(r"inner-42 pid-(\d+)").group(1)
    tmux.type("stty size")
    tmux.wait_for(r"\n30 100")
    tmux.resize(120, 40)
    tmux.type("stty size")  # typing re-asserts the window's size first, whatever SIGWINCH did
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


def test_attach_says_when_the_shell_exited(server: ServerProcess, tmux: Tmux) -> None:
    tmux.type(attach_command(server))
    tmux.wait_for(r"detach: Ctrl-")
    tmux.type("exit 3")
    tmux.wait_for(r"\[tether\] shell exited with status 3\s+rc=0")
    assert "re-attach" not in tmux.screen()


def test_attach_refuses_a_standard_input_that_is_not_a_terminal(server: ServerProcess) -> None:
    before = server_stats(server.base_url)["totals"]["sessions"]
    done = subprocess.run(
        [sys.executable, "-m", "tether", "attach", server.base_url],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "tether: attach needs a terminal on standard input (it is a pipe or a file)"
    ]
    assert server_stats(server.base_url)["totals"]["sessions"] == before


def test_detaching_from_vim_restores_the_local_terminal(server: ServerProcess, tmux: Tmux) -> None:
    tmux.type("echo before-vim; clear; echo main-screen-text")
    tmux.type(attach_command(server))
    tmux.wait_for(r"detach: Ctrl-")
    tmux.type("vim -u NONE -N -c 'set mouse=a' -c 'exe \"normal! 10ovim-text\"'")
    tmux.wait_until(lambda rows: rows[0] == "" and "vim-text" in rows[1], "vim showing its text")
    assert tmux.flags("alternate_on", "mouse_any_flag", "mouse_button_flag") != {
        "alternate_on": "0", "mouse_any_flag": "0", "mouse_button_flag": "0"
    }  # fmt: skip
    tmux.keys("C-\\")
    tmux.keys("d")
    tmux.wait_for(r"rc=0\s+outer\$")
    modes = ("alternate_on", "mouse_any_flag", "mouse_button_flag", "mouse_standard_flag",
             "mouse_sgr_flag", "keypad_cursor_flag", "keypad_flag", "origin_flag")  # fmt: skip
    assert tmux.flags(*modes) == dict.fromkeys(modes, "0")
    assert tmux.flags("cursor_flag", "wrap_flag") == {"cursor_flag": "1", "wrap_flag": "1"}
    rows = tmux.visible()
    assert "main-screen-text" in rows  # the main screen is back, with what it held
    assert "vim-text" not in rows and "~" not in rows  # and nothing of vim's
    tmux.type("echo after-$((2+3))")
    tmux.wait_for(r"(?m)^after-5$")


# ------------------------------------------------------- a cut connection, through a proxy
@pytest.fixture(scope="module")
def small_ring_server() -> Iterator[ServerProcess]:
    """A server whose sessions keep only 2 KiB of output: a short cut makes a gap."""
    with start_server("--buffer-size", "2048") as running:
        yield running


@pytest.fixture
def proxy(small_ring_server: ServerProcess) -> Iterator[ThreadedProxy]:
    running = ThreadedProxy(small_ring_server.port)
    try:
        yield running
    finally:
        running.close()


def proxied_attach(proxy: ThreadedProxy, *args: str) -> str:
    return f"{sys.executable} -m tether attach {proxy.base_url} {' '.join(args)}; echo rc=$?"


def has_status_bar(rows: list[str]) -> bool:
    return rows[-1].startswith("[tether] ") and "Ctrl-\\ d detaches" in rows[-1]


def test_status_bar_leaves_the_screen_alone_and_what_it_covered_is_repainted(
    proxy: ThreadedProxy, tmux: Tmux
) -> None:
    tmux.type(proxied_attach(proxy))
    tmux.wait_for(r"detach: Ctrl-")
    tmux.type("PS1='in''ner> '; seq 100 140")  # the shell's prompt on the last row
    tmux.wait_until(lambda rows: rows[-2] == "140" and rows[-1] == "inner>", "the prompt")
    proxy.cut()
    tmux.wait_until(has_status_bar, "the status bar over the prompt")
    proxy.restore()
    tmux.wait_until(lambda rows: rows[-1] == "inner>", "the prompt repainted by readline")
    tmux.type("vim -u NONE -N -c 'exe \"normal! 10ovim-line\"'")
    tmux.keys("i")
    tmux.wait_until(lambda rows: rows[-1].startswith("-- INSERT --"), "vim in insert mode")
    text = tmux.visible()[:-1]
    proxy.cut()
    tmux.wait_until(has_status_bar, "the status bar")
    rows = tmux.visible()
    assert "reconnecting in" in rows[-1] or "connection lost" in rows[-1]
    assert rows[:-1] == text  # the program's screen is untouched
    proxy.restore()
    tmux.wait_until(lambda rows: rows[-1].startswith("-- INSERT --"), "vim's last line repainted")
    assert tmux.visible()[:-1] == text
    tmux.keys("Escape")
    tmux.type(":q!")
    tmux.keys("C-\\")
    tmux.keys("d")
    tmux.wait_for(r"rc=0\s+outer\$")


def test_top_is_redrawn_after_a_gap(
    small_ring_server: ServerProcess, proxy: ThreadedProxy, tmux: Tmux
) -> None:
    tmux.type(proxied_attach(proxy))
    session = tmux.wait_for(r"attached to (session_\w+)").group(1)

    def stream() -> tuple[int, int]:
        """(output position, tail) of the session: bytes before the tail are gone."""
        stats = server_stats(small_ring_server.base_url)["sessions"]
        entry = next(entry for entry in stats if entry["session"] == session)
        return entry["output_position"], entry["output_position"] - entry["buffered_bytes"]

    tmux.type("top -d 0.1")
    tmux.wait_until(lambda rows: rows[0].startswith("top - "), "top's header")
    proxy.cut()
    tmux.wait_until(has_status_bar, "the status bar")
    at_cut, _ = stream()
    # Until output attach never received is dropped: a gap.
    poll_until(lambda: stream()[1] > at_cut, 15, "no output was dropped")
    proxy.restore()
    tmux.wait_until(
        lambda rows: rows[0].startswith("top - ") and rows[1].startswith("Tasks:")
        and not has_status_bar(rows),
        "top's header after the gap", timeout=30,
    )  # fmt: skip
    tmux.type("q", enter=False)
    tmux.keys("C-\\")
    tmux.keys("d")
    tmux.wait_for(r"rc=0\s+outer\$")
    assert tmux.flags("alternate_on") == {"alternate_on": "0"}


# ---------------------------------------------------------------- two clients, two sizes
def test_the_terminal_in_use_sets_the_size(server: ServerProcess, tmux: Tmux) -> None:
    tmux.type(attach_command(server))
    session = tmux.wait_for(r"attached to (session_\w+)").group(1)
    tmux.type("echo first-$((1+1))")
    tmux.wait_for(r"(?m)^first-2$")

    async def other_client() -> tuple[int, int]:
        async with connect(server.ws_url, project="default", session=session, create=False,
                           cols=150, rows=20) as other:  # fmt: skip
            await other.send("stty size\r")
            await other.read_until(b"20 150")
            return other.cols, other.rows

    assert asyncio.run(other_client()) == (150, 20)
    tmux.wait_for(r"(?m)^20 150$")  # attach showed the other client's command and answer
    tmux.type("stty size")  # typing here makes this terminal the active one again
    tmux.wait_for(r"(?m)^30 100$")
    tmux.keys("C-\\")
    tmux.keys("d")
    tmux.wait_for(r"rc=0\s+outer\$")
