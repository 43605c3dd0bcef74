"""A real ``redis-server`` for tests: on a random loopback port, no persistence, stopped by PID.

``RedisServer`` starts one (``redis-server`` from Debian's package, which ``./dev setup``
installs); :func:`redis_server` is the context manager tests use. A missing ``redis-server`` is a
failure that says how to install it, never a skip: the Redis tests run in CI.
``stop``/``start`` (the same port again) simulate Redis going down and coming back;
``pause``/``resume`` (SIGSTOP/SIGCONT) a Redis that hangs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.support.server import poll_until

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the server may still lose a race for it: it retries)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_server_program() -> str:
    """The path of ``redis-server``; fails the test (not a skip) when it is not installed."""
    program = shutil.which("redis-server")
    if program is None:
        pytest.fail(
            "redis-server is not installed: run ./dev setup (or apt-get install redis-server)",
            pytrace=False,
        )
    return program


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1 that persists nothing (its dir is a temp dir)."""

    def __init__(self) -> None:
        self.program = redis_server_program()
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="tether-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.process is not None, "the redis-server is not running"
        return self.process.pid

    def start(self) -> None:
        """Start the server (again, on the same port after :meth:`stop`); wait until it answers."""
        assert self.process is None, "already running"
        for _ in range(5):
            self.process = subprocess.Popen(
                [self.program, *self._arguments()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=self.directory,
            )
            if self._wait_until_answering():
                return
            self._kill()  # lost the port to another process: try another one
            self.port = free_port()
        raise AssertionError(f"redis-server did not answer PING within {START_TIMEOUT} s")

    def stop(self) -> None:
        """Stop the server by its PID (SIGTERM, then SIGKILL) and check it is gone."""
        if self.process is None:
            return
        pid = self.process.pid
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)  # a paused server cannot act on SIGTERM
        self.process.terminate()
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._kill()
        self.process = None
        assert not psutil.pid_exists(pid), f"redis-server {pid} is still running"

    def restart(self) -> None:
        self.stop()
        self.start()

    def pause(self) -> None:
        """SIGSTOP: the server keeps its socket (connections are accepted) but answers nothing."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def _arguments(self) -> list[str]:
        return [
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.directory),
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--loglevel", "warning",
        ]  # fmt: skip

    def _wait_until_answering(self) -> bool:
        process = self.process
        assert process is not None
        with contextlib.suppress(AssertionError):  # not within the time: False, as when it died
            poll_until(lambda: process.poll() is not None or self._answers_ping(), START_TIMEOUT)
        return process.poll() is None and self._answers_ping()

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def _kill(self) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        self.process.wait(STOP_TIMEOUT)
        self.process = None


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    """A running :class:`RedisServer`, stopped (and checked gone) on exit."""
    server = RedisServer()
    try:
        server.start()
        yield server
    finally:
        server.close()
