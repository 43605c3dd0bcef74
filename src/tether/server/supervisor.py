"""The supervisor: a small process that outlives the worker, so that a crash of the server
loses no shell when there is no systemd (docs/architecture.md, "Surviving the server process").

``tether serve`` becomes the supervisor unless told not to (``--no-supervise``) or already
managed (``$NOTIFY_SOCKET`` set: systemd, or this supervisor's own worker). It

- starts the worker (the same command line) with ``$NOTIFY_SOCKET`` pointing at itself, and
  keeps the fds the worker stores there (:class:`~tether.server.fdstore.FdStore`, systemd's
  protocol);
- is a child subreaper: shells orphaned by a dead worker become its children, and it reaps
  them (the worker that adopts them sees their end through a pidfd, without the status);
- restarts a worker that died of a signal or an unexpected exit, at once (then backing off),
  handing it the stored fds as ``LISTEN_FDS``/``LISTEN_FDNAMES``;
- on SIGTERM or SIGINT tells the worker to drain and stop (SIGTERM), waits, and exits with its
  status; SIGHUP and SIGUSR2 are passed on to the worker (reload, upgrade in place).

It imports nothing of the server beyond the fd-store protocol: it holds on while the code on
disk changes under it (an upgrade replaces the worker, never the supervisor).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import select
import shutil
import signal
import sys
import time
from collections.abc import Mapping, Sequence

from tether.server import fdstore, pty
from tether.server.config import Settings

SUPERVISED_ENV = "TETHER_SUPERVISED"
_FORWARDED = (signal.SIGHUP, signal.SIGUSR2)
_STOPPING = (signal.SIGTERM, signal.SIGINT)
_MAX_QUICK_FAILURES = 5  # workers dying before READY=1 in a row: give up
_MAX_BACKOFF = 5.0
_TICK = 1.0  # seconds between the loop's periodic work


def should_supervise(settings: Settings, environ: Mapping[str, str]) -> bool:
    """Whether ``tether serve`` becomes a supervisor (see the module docstring)."""
    managed = "NOTIFY_SOCKET" in environ or environ.get(SUPERVISED_ENV) == "1"
    return settings.supervise and not managed


def supervise(command: Sequence[str]) -> int:
    """Run ``command`` as the worker until stopped; returns the exit status for ``tether``."""
    # The supervisor holds the same environment (secrets) as the worker: same-account shells
    # must not read it either (the worker, once exec'ed, makes itself non-dumpable again).
    pty.make_undumpable()
    return Supervisor(command).run()


class Supervisor:
    def __init__(self, command: Sequence[str]) -> None:
        self.command = list(command)
        self.store = fdstore.FdStore()
        self.worker: int | None = None
        self.stopping = False
        self.status = 0
        self._signals: list[int] = []
        self._quick_failures = 0
        self._restart_at: float | None = None
        name = f"tether-supervisor-{os.getpid()}-{secrets.token_hex(6)}"
        self.notify_path = "@" + name
        self.sock = fdstore.server_socket(name)

    def run(self) -> int:
        pty.become_subreaper()
        wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
        for signum in (*_STOPPING, *_FORWARDED, signal.SIGCHLD):
            signal.signal(signum, self._note_signal)
        try:
            self._start_worker()
            while self.worker is not None or self._restart_at is not None:
                self._wait(wake_read)
                self._handle_signals()
                self._reap()
                self._tick()
        finally:
            signal.set_wakeup_fd(-1)
            os.close(wake_read)
            os.close(wake_write)
            self.store.close()  # the shells left (if any) hang up: their masters are gone
            self.sock.close()
            self._reap()
        return self.status

    # ----------------------------------------------------------------- the loop
    def _note_signal(self, signum: int, _frame: object) -> None:
        self._signals.append(signum)

    def _wait(self, wake_read: int) -> None:
        timeout = _TICK
        if self._restart_at is not None:
            timeout = max(0.0, min(timeout, self._restart_at - time.monotonic()))
        readable, _, _ = select.select([self.sock.fileno(), wake_read], [], [], timeout)
        if wake_read in readable:
            with contextlib.suppress(BlockingIOError):
                while os.read(wake_read, 512):
                    pass
        if self.sock.fileno() in readable:
            self.store.receive(self.sock)
            if self.store.ready:
                self._quick_failures = 0

    def _handle_signals(self) -> None:
        pending, self._signals = self._signals, []
        for signum in pending:
            if signum in _STOPPING:
                self.stopping = True
                self._restart_at = None
                self._send(signal.SIGTERM)
            elif signum in _FORWARDED:
                self._send(signum)

    def _send(self, signum: int) -> None:
        if self.worker is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.worker, signum)

    def _reap(self) -> None:
        """Collect every child that ended: the worker, and orphaned shells and jobs."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.worker:
                self._worker_ended(status)

    def _tick(self) -> None:
        """Periodic work. Issue 14: the cluster lease renewal moves here (the supervisor
        outlives the worker, so a crash does not lose the node's lease)."""
        if self._restart_at is not None and time.monotonic() >= self._restart_at:
            self._restart_at = None
            self._start_worker()

    # ----------------------------------------------------------------- the worker
    def _start_worker(self) -> None:
        self.store.ready = False
        env = dict(os.environ) | {"NOTIFY_SOCKET": self.notify_path, SUPERVISED_ENV: "1"}
        path = shutil.which(self.command[0]) or self.command[0]
        pid = os.fork()
        if pid == 0:  # the child: fds into place, then the worker's code
            try:
                for signum in (*_STOPPING, *_FORWARDED, signal.SIGCHLD):
                    signal.signal(signum, signal.SIG_DFL)
                env |= self.store.environment(os.getpid())
                self.store.place()
                os.execve(path, self.command, env)
            finally:
                os._exit(127)
        self.worker = pid

    def _worker_ended(self, status: int) -> None:
        pid, self.worker = self.worker, None
        code = os.waitstatus_to_exitcode(status)
        crashed = code < 0 or code not in (0, 2)
        ready = self.store.ready
        if self.stopping or not crashed:
            self.status = code if code >= 0 else 128 - code
            return
        self._quick_failures = 0 if ready else self._quick_failures + 1
        if self._quick_failures >= _MAX_QUICK_FAILURES:
            _say(f"server process failed {self._quick_failures} times in a row: giving up")
            self.status = 1
            return
        why = f"signal {-code}" if code < 0 else f"exit status {code}"
        delay = 0.0 if ready else min(_MAX_BACKOFF, 0.1 * 2**self._quick_failures)
        _say(f"server process {pid} died ({why}): restarting it; the sessions are kept")
        self._restart_at = time.monotonic() + delay


def _say(line: str) -> None:
    with contextlib.suppress(OSError):
        sys.stderr.write(f"tether: {line}\n")
        sys.stderr.flush()
