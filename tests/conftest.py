"""Shared fixtures: every test module is checked for leaked processes and file descriptors."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

import psutil
import pytest


def _descendants() -> dict[int, str]:
    found = {}
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            found[child.pid] = f"{child.name()} ({child.status()})"
    return found


def _open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


@pytest.fixture(autouse=True, scope="session")
def private_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """``--auth local`` servers started here store their tokens in a directory of the test
    run's, never in the real user's (``$XDG_RUNTIME_DIR/tether``)."""
    runtime = tmp_path_factory.mktemp("runtime")
    runtime.chmod(0o700)
    previous = os.environ.get("XDG_RUNTIME_DIR")
    os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    # Files the tests write (tokens files, keys) are private, as the server requires of
    # secrets; a test of that rule sets the mode it means.
    umask = os.umask(0o077)
    yield
    os.umask(umask)
    if previous is None:
        os.environ.pop("XDG_RUNTIME_DIR", None)
    else:
        os.environ["XDG_RUNTIME_DIR"] = previous


@pytest.fixture(autouse=True, scope="module")
def no_leaks() -> Iterator[None]:
    """After a module: no process we started is left, no more fds are open than before."""
    before_children = set(_descendants())
    before_fds = _open_fds()
    yield
    deadline = time.monotonic() + 10
    leaked: dict[int, str] = {}
    while time.monotonic() < deadline:
        for pid, _ in list(_descendants().items()):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # zombies of ours that nothing else reaps
        leaked = {p: n for p, n in _descendants().items() if p not in before_children}
        fds = _open_fds() - before_fds
        if not leaked and len(fds) <= 2:
            break
        time.sleep(0.1)
    assert not leaked, f"processes left behind: {leaked}"
    extra = _open_fds() - before_fds
    # A couple of fds may belong to lazily created interpreter resources (e.g. an event loop
    # selector kept by a library); more than that is a leak.
    assert len(extra) <= 2, f"file descriptors left open: {sorted(extra)}"
