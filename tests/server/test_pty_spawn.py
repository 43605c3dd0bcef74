"""How tether.server.pty starts a shell cheaply without changing what starts: the program is
looked up on PATH once (and again when it moved), a relative PATH entry still counts from the
shell's directory, and the server holds no fd of the terminal's slave side."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.test_pty import read_until
from tether.server import ending, pty

pytestmark = pytest.mark.timeout(60)


def _program(directory: Path, says: str) -> None:
    directory.mkdir(exist_ok=True)
    path = directory / "tether-test-shell"
    path.write_text(f"#!/bin/sh\necho {says}\nexec sleep 30\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[pty.PtyProcess]]:
    processes: list[pty.PtyProcess] = []
    yield processes
    for process in processes:
        pty.signal_session(process.pid, [9], [process.pid])
        pty.reap([process.pid])
        process.close_fds()


async def _run(processes: list[pty.PtyProcess], cwd: Path, says: str) -> pty.PtyProcess:
    env = {"PATH": os.environ["PATH"], "HOME": str(cwd), "TERM": "dumb"}
    process = pty.spawn(["tether-test-shell"], str(cwd), env, 80, 24)
    processes.append(process)
    await read_until(process, says)
    await ending.end_processes(process, kill_grace=0.5)
    return process


async def test_a_program_that_moved_on_path_since_the_last_start_is_found_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, started: list[pty.PtyProcess]
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    second.mkdir()
    monkeypatch.setenv("PATH", f"{first}:{second}:{os.environ['PATH']}")
    _program(first, "from-first")
    await _run(started, tmp_path, "from-first")
    (first / "tether-test-shell").unlink()
    _program(second, "from-second")
    await _run(started, tmp_path, "from-second")


async def test_a_relative_path_entry_counts_from_the_shells_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, started: list[pty.PtyProcess]
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    _program(project / "bin", "from-the-project")
    monkeypatch.setenv("PATH", f"bin:{os.environ['PATH']}")
    await _run(started, project, "from-the-project")


def _open_fds() -> set[int]:
    listed = {int(name) for name in os.listdir("/proc/self/fd")}
    return {fd for fd in listed if _is_open(fd)}  # not the listing's own, closed by now


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


async def test_the_server_holds_only_the_master_of_a_new_terminal(
    tmp_path: Path, started: list[pty.PtyProcess]
) -> None:
    before = _open_fds()
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "TERM": "dumb", "PS1": "$ "}
    process = pty.spawn(["bash", "--norc", "--noprofile"], str(tmp_path), env, 80, 24)
    started.append(process)
    assert _open_fds() - before == {process.fd, process.pidfd}
    assert os.get_blocking(process.fd) is False and os.get_inheritable(process.fd) is False
    await read_until(process, r"\$ $")
    process.write(b"exit\r")
    # No slave fd of ours keeps the terminal open: end of file once the shell is gone.
    await ending.end_processes(process, kill_grace=0.5)
