"""tether.server.pty and tether.server.ending on real PTYs and real shells: spawning, size, exit
through the pidfd, the processes of a terminal session, and ending them all."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.support.wsclient import strip_ansi
from tether.errors import SpawnError
from tether.server import ending, pty

pytestmark = pytest.mark.timeout(60)

SHELL = ["bash", "--norc", "--noprofile"]

Spawn = Callable[..., pty.PtyProcess]


def shell_env(home: Path, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "TERM": "xterm-256color",
        "LANG": "C.UTF-8",
        "PS1": "$ ",
        **extra,
    }


@pytest.fixture
async def spawn(tmp_path: Path) -> AsyncIterator[Spawn]:
    """Spawns shells; ends every one (and its jobs) after the test."""
    started: list[pty.PtyProcess] = []

    def start(
        argv: list[str] = SHELL, cols: int = 80, rows: int = 24, **env: str
    ) -> pty.PtyProcess:
        process = pty.spawn(argv, str(tmp_path), shell_env(tmp_path, **env), cols, rows)
        started.append(process)
        return process

    yield start
    for process in started:
        await ending.end_processes(process, kill_grace=0.5)


@pytest.fixture
def subreaper() -> None:
    # Process-wide and permanent, as in the server (in-process test servers do the same).
    assert pty.become_subreaper()


async def read_until(process: pty.PtyProcess, pattern: str, timeout: float = 10) -> re.Match[str]:
    """Read the terminal until ``pattern`` matches its text (escape sequences removed)."""
    loop = asyncio.get_running_loop()
    readable = asyncio.Event()
    output = bytearray()
    loop.add_reader(process.fd, readable.set)
    try:
        async with asyncio.timeout(timeout):
            while True:
                match = re.search(pattern, strip_ansi(bytes(output)))
                if match is not None:
                    return match
                await readable.wait()
                readable.clear()
                data, end_of_file = process.read_available(65536)
                output += data
                assert not end_of_file, f"end of file before {pattern!r}: {bytes(output)!r}"
    except TimeoutError:
        raise AssertionError(f"no {pattern!r} in {bytes(output)!r}") from None
    finally:
        loop.remove_reader(process.fd)


async def run(process: pty.PtyProcess, command: str) -> None:
    assert process.write(command.encode() + b"\r") == len(command) + 1


async def wait_exit(process: pty.PtyProcess) -> tuple[int | None, int | None]:
    """Wait for the pidfd to become readable, then reap the shell."""
    loop = asyncio.get_running_loop()
    exited = asyncio.Event()
    loop.add_reader(process.pidfd, exited.set)
    try:
        async with asyncio.timeout(10):
            await exited.wait()
    finally:
        loop.remove_reader(process.pidfd)
    status = process.poll_exit()
    assert status is not None
    return status


async def session_processes(process: pty.PtyProcess, jobs: str) -> list[int]:
    """Start ``jobs`` in the shell; returns every process of its terminal session."""
    await run(process, jobs)
    await run(process, "echo JOBS-$((40+2))")
    await read_until(process, r"JOBS-42")
    found = pty.scan_all_processes(process.pid)
    for _ in range(100):  # the jobs were started before the echo, but exec may lag
        if all(_command(pid) not in ("bash", "") for pid in found if pid != process.pid):
            break
        await asyncio.sleep(0.01)
        found = pty.scan_all_processes(process.pid)
    return found


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


# ----------------------------------------------------------------------------- spawning
async def test_shell_starts_in_the_directory_with_the_environment_and_size(
    spawn: Spawn, tmp_path: Path
) -> None:
    process = spawn(cols=100, rows=30, GREETING="hi-there")
    assert process.fd >= 0 and process.pidfd >= 0
    await run(process, 'echo "<$PWD|$GREETING|$(stty size)|$TERM>"')
    match = await read_until(process, r"<(/[^|]*)\|hi-there\|(\d+ \d+)\|([^>]*)>")
    assert match.group(1) == str(tmp_path)
    assert match.group(2) == "30 100"
    assert match.group(3) == "xterm-256color"


async def test_the_server_environment_is_not_passed_on(spawn: Spawn) -> None:
    os.environ["TETHER_TEST_SECRET"] = "leak"
    try:
        process = spawn()
    finally:
        del os.environ["TETHER_TEST_SECRET"]
    await run(process, 'echo "[${TETHER_TEST_SECRET:-unset}]"')
    await read_until(process, r"\[unset\]")


async def test_the_shell_leads_a_session_with_the_terminal_as_controlling_tty(
    spawn: Spawn,
) -> None:
    process = spawn()
    assert os.getsid(process.pid) == process.pid
    await run(process, 'echo "tty=$(tty) job-control=$(set -o | grep -c "monitor.*on")"')
    match = await read_until(process, r"tty=(/dev/pts/\d+) job-control=1")
    assert match.group(1) == os.readlink(f"/proc/{process.pid}/fd/0")


def _signal_mask(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1], 16)
    raise AssertionError(f"no {field} in /proc/{pid}/status")


async def test_signal_dispositions_and_mask_are_reset_in_the_child(spawn: Spawn) -> None:
    previous = signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    try:
        process = spawn(["sleep", "300"])
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        signal.signal(signal.SIGPIPE, previous)
    assert _signal_mask(process.pid, "SigIgn") & (1 << (signal.SIGPIPE - 1)) == 0
    assert _signal_mask(process.pid, "SigBlk") == 0


def test_a_missing_directory_or_program_is_a_spawn_error(tmp_path: Path) -> None:
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(SpawnError, match="cannot enter directory"):
        pty.spawn(SHELL, str(tmp_path / "missing"), shell_env(tmp_path), 80, 24)
    with pytest.raises(SpawnError, match="cannot start"):
        pty.spawn(["no-such-program-here"], str(tmp_path), shell_env(tmp_path), 80, 24)
    assert set(os.listdir("/proc/self/fd")) == before, "no fd is left open"
    assert os.getcwd() != str(tmp_path / "missing")


# ----------------------------------------------------------------------------- the terminal
async def test_resize_sets_the_window_size(spawn: Spawn) -> None:
    process = spawn()
    process.resize(132, 43)
    await run(process, 'echo "size=$(stty size)"')
    await read_until(process, r"size=43 132")


async def test_write_reaches_the_program_and_output_comes_back(spawn: Spawn) -> None:
    process = spawn(["cat"])
    assert process.write(memoryview(b"through the terminal\n")) == 21
    await read_until(process, r"through the terminal\s+through the terminal")


async def test_end_of_file_once_the_shell_is_gone(spawn: Spawn) -> None:
    process = spawn()
    await run(process, "exit")
    await wait_exit(process)
    loop = asyncio.get_running_loop()
    end = loop.create_future()

    def readable() -> None:
        if process.read_available(65536)[1] and not end.done():
            end.set_result(True)

    loop.add_reader(process.fd, readable)
    try:
        async with asyncio.timeout(10):
            assert await end
    finally:
        loop.remove_reader(process.fd)


# ----------------------------------------------------------------------------- exit
async def test_the_pidfd_tells_when_the_shell_exits_with_its_code(spawn: Spawn) -> None:
    process = spawn()
    assert process.poll_exit() is None, "running"
    await run(process, "exit 7")
    assert await wait_exit(process) == (7, None)
    assert not pty.exists(process.pid), "reaped"
    assert process.poll_exit() == (None, None), "already reaped: no status left"


async def test_a_shell_killed_by_a_signal_reports_the_signal(spawn: Spawn) -> None:
    process = spawn()
    os.kill(process.pid, signal.SIGKILL)
    assert await wait_exit(process) == (None, signal.SIGKILL)


async def test_close_fds_is_idempotent(spawn: Spawn) -> None:
    process = spawn()
    process.close_fds()
    assert (process.fd, process.pidfd) == (-1, -1)
    process.close_fds()
    assert (process.fd, process.pidfd) == (-1, -1)


# ----------------------------------------------------------------------------- processes
async def test_session_members_finds_jobs_and_orphans_but_not_other_terminals(
    spawn: Spawn, subreaper: None
) -> None:
    process, other = spawn(), spawn()
    members = await session_processes(process, "sleep 300 & (sleep 301 &)")
    await session_processes(other, "sleep 302 &")
    found = pty.session_members(process.pid)
    assert found is not None
    assert sorted(found) == sorted(members)
    assert process.pid in found and len(found) == 3
    assert other.pid not in found


async def test_session_members_needs_a_subreaper(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pty, "_subreaper", False)
    assert pty.session_members(os.getpid()) is None


async def test_process_figures(spawn: Spawn) -> None:
    process = spawn()
    assert pty.exists(process.pid) and not pty.is_zombie_or_gone(process.pid)
    assert pty.process_rss_bytes(process.pid) > 0
    os.kill(process.pid, signal.SIGKILL)
    await wait_exit(process)
    assert pty.is_zombie_or_gone(process.pid) and not pty.exists(process.pid)
    assert pty.process_rss_bytes(process.pid) == 0


# ----------------------------------------------------------------------------- ending
JOBS = (
    "sleep 300 &"  # a job in its own process group
    " (sleep 301 &);"  # an orphan: its parent is gone, the subreaper adopts it
    " (trap '' HUP; exec sleep 302) &"  # ignores SIGHUP: killed after the grace period
    " sleep 303 & kill -STOP $!"  # stopped: SIGCONT wakes it up to die
)


@pytest.mark.parametrize("as_subreaper", [True, False])
async def test_ending_ends_and_reaps_every_process_of_the_terminal(
    spawn: Spawn, subreaper: None, monkeypatch: pytest.MonkeyPatch, as_subreaper: bool
) -> None:
    process, bystander = spawn(), spawn()
    members = await session_processes(process, JOBS)
    assert len(members) == 5, members
    if not as_subreaper:
        monkeypatch.setattr(pty, "_subreaper", False)  # found by reading all of /proc instead
    loop = asyncio.get_running_loop()
    started = loop.time()
    await ending.end_processes(process, kill_grace=0.3)
    assert loop.time() - started >= 0.3, "the job ignoring SIGHUP needed SIGKILL"
    assert [pid for pid in members if pty.exists(pid)] == [], "every one gone and reaped"
    assert (process.fd, process.pidfd) == (-1, -1)
    await run(bystander, "echo STILL-$((1+1))")
    await read_until(bystander, "STILL-2")


async def test_ending_without_stubborn_jobs_does_not_wait_for_the_grace(
    spawn: Spawn, subreaper: None
) -> None:
    process = spawn()
    members = await session_processes(process, "sleep 300 &")
    loop = asyncio.get_running_loop()
    started = loop.time()
    await ending.end_processes(process, kill_grace=30)
    assert loop.time() - started < 10
    assert not any(pty.exists(pid) for pid in members)


async def test_ending_a_shell_that_already_exited(spawn: Spawn) -> None:
    process = spawn()
    await run(process, "exit")
    await wait_exit(process)
    await ending.end_processes(process, kill_grace=0.1)
    assert (process.fd, process.pidfd) == (-1, -1)


async def test_the_fds_are_closed_even_if_ending_is_cancelled(spawn: Spawn) -> None:
    process = spawn(["bash", "--norc", "--noprofile", "-c", "trap '' HUP; sleep 300"])
    task = asyncio.create_task(ending.end_processes(process, kill_grace=30))
    await asyncio.sleep(0)  # let it start: it signals, then waits for the grace period
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (process.fd, process.pidfd) == (-1, -1)
    # The shell still runs (it ignores SIGHUP): the fixture's ending kills and reaps it.
