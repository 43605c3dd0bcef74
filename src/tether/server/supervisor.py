"""The supervisor: a small process that outlives the worker, so that a crash of the server
loses no shell when there is no systemd (docs/architecture.md, "Surviving the server process").

``tether serve`` becomes the supervisor unless told not to (``--no-supervise``) or already
managed (``$NOTIFY_SOCKET`` set: systemd, or this supervisor's own worker). It

- starts the worker (the same command line) with ``$NOTIFY_SOCKET`` pointing at itself, and
  keeps the fds the worker stores there (:class:`~tether.server.fdstore.FdStore`, systemd's
  protocol);
- is a child subreaper: shells orphaned by a dead worker become its children, and it reaps
  them; the worker that adopts them sees their end through a pidfd, and their exit status
  through the exit reports (``$TETHER_EXIT_REPORTS_FD``, a stream socket the supervisor keeps
  both ends of, so that a report waits there while no worker runs): a shell's status is sent
  *before* it is reaped, so a worker that finds it gone finds its report too;
- restarts a worker that died of a signal or an unexpected exit, at once (then backing off),
  handing it the stored fds as ``LISTEN_FDS``/``LISTEN_FDNAMES``;
- on SIGTERM or SIGINT tells the worker to drain and stop (SIGTERM), waits, and exits with its
  status; SIGHUP and SIGUSR2 are passed on to the worker (reload, upgrade in place);
- tells the worker its pid (``$TETHER_SUPERVISOR_PID``): a worker whose supervisor is gone
  (SIGKILLed: nothing would restart a crashed worker any more) drains and stops as on SIGTERM,
  so that no shell is left running unkept;
- in a cluster, keeps the node's lease alive while no worker is ready (:class:`LeaseKeeper`): a
  worker reports its registration (``X_TETHER_LEASE=``, a tether-specific notification) and
  renews it itself while it runs; between its death and the next worker's ``READY=1`` the
  supervisor renews it with the same ``RENEW`` script, so that a crash is not a node loss.
  redis is imported only once a lease is reported (never outside a cluster).

It imports nothing of the server beyond the fd-store protocol (and, once a lease is reported,
the text of the registry's scripts): it holds on while the code on disk changes under it (an
upgrade replaces the worker, never the supervisor).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import select
import shutil
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tether.server import fdstore, pty
from tether.server.config import Settings

if TYPE_CHECKING:  # redis is imported only once a worker reports a cluster lease
    from redis import Redis

SUPERVISED_ENV = "TETHER_SUPERVISED"
# Seconds added before restarting a crashed worker: for tests that keep a worker down longer
# than a cluster lease (docs/scaling.md, failure table); 0 (restart at once) otherwise.
RESTART_DELAY_ENV = "TETHER_SUPERVISOR_RESTART_DELAY"
_FORWARDED = (signal.SIGHUP, signal.SIGUSR2)
_STOPPING = (signal.SIGTERM, signal.SIGINT)
_MAX_QUICK_FAILURES = 5  # workers dying before READY=1 in a row: give up
_MAX_BACKOFF = 5.0
_TICK = 1.0  # seconds between the loop's periodic work
SUPERVISOR_PID_ENV = "TETHER_SUPERVISOR_PID"
EXIT_REPORTS_ENV = "TETHER_EXIT_REPORTS_FD"
# One exit report: pid, exit code (-1: none), signal number (0: none)
EXIT_REPORT = struct.Struct(">iii")


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
        self.restart_delay = _restart_delay(os.environ)
        self.keeper = LeaseKeeper()
        name = f"tether-supervisor-{os.getpid()}-{secrets.token_hex(6)}"
        self.notify_path = "@" + name
        self.sock = fdstore.server_socket(name)
        # exit reports: written on one end, read by the worker on the other (kept here too)
        self.reports_out, self.reports_in = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.reports_out.setblocking(False)

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
            self.keeper.close()
            self.store.close()  # the shells left (if any) hang up: their masters are gone
            self.sock.close()
            self._reap()
            self.reports_out.close()
            self.reports_in.close()
        return self.status

    # ----------------------------------------------------------------- the loop
    def _note_signal(self, signum: int, _frame: object) -> None:
        self._signals.append(signum)

    def _wait(self, wake_read: int) -> None:
        timeout = _TICK
        now = time.monotonic()
        if self._restart_at is not None:
            timeout = max(0.0, min(timeout, self._restart_at - now))
        renew_at = self.keeper.next_renewal()
        if renew_at is not None and not self._worker_ready():
            timeout = max(0.0, min(timeout, renew_at - now))
        readable, _, _ = select.select([self.sock.fileno(), wake_read], [], [], timeout)
        if wake_read in readable:
            with contextlib.suppress(BlockingIOError):
                while os.read(wake_read, 512):
                    pass
        if self.sock.fileno() in readable:
            self.store.receive(self.sock)
            if self.store.ready:
                self._quick_failures = 0
            reports, self.store.lease_reports = self.store.lease_reports, []
            for report in reports:
                self.keeper.report(report, time.monotonic())

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
        """Collect every child that ended: the worker, and orphaned shells and jobs (a shell's
        exit is reported to the worker first, while it is still a zombie)."""
        while True:
            try:
                ended = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if ended is None or ended.si_pid == 0:
                return
            if ended.si_pid != self.worker:
                self._report_exit(ended)
            try:
                pid, status = os.waitpid(ended.si_pid, 0)
            except ChildProcessError:
                continue
            if pid == self.worker:
                self._worker_ended(status)

    def _report_exit(self, ended: os.waitid_result) -> None:
        """Tell the worker how a shell ended (only session leaders: shells, not their jobs)."""
        if not pty.leads_a_session(ended.si_pid):
            return
        exited = ended.si_code == os.CLD_EXITED
        code, signum = (ended.si_status, 0) if exited else (-1, ended.si_status)
        with contextlib.suppress(OSError):  # full (no worker for long): the status is lost
            self.reports_out.send(EXIT_REPORT.pack(ended.si_pid, code, signum))

    def _tick(self) -> None:
        """Periodic work: the restart when due, and the cluster lease while no worker is ready
        (the supervisor outlives the worker, so a crash does not lose the node's lease)."""
        now = time.monotonic()
        if self._worker_ready():
            self.keeper.close()  # no connection to Redis kept while the worker renews
        elif self.keeper.due(now, worker_ready=False, stopping=self.stopping):
            self.keeper.renew(now)
        if self._restart_at is not None and time.monotonic() >= self._restart_at:
            self._restart_at = None
            self._start_worker()

    def _worker_ready(self) -> bool:
        """A worker runs and has said ``READY=1``: it renews the lease itself."""
        return self.worker is not None and self.store.ready

    # ----------------------------------------------------------------- the worker
    def _start_worker(self) -> None:
        self.store.ready = False
        env = dict(os.environ) | {
            "NOTIFY_SOCKET": self.notify_path,
            SUPERVISED_ENV: "1",
            SUPERVISOR_PID_ENV: str(os.getpid()),
            fdstore.NAMES_ENV: "1",  # FdStore reads a name per fd: fewer messages
        }
        path = shutil.which(self.command[0]) or self.command[0]
        pid = os.fork()
        if pid == 0:  # the child: fds into place, then the worker's code
            try:
                for signum in (*_STOPPING, *_FORWARDED, signal.SIGCHLD):
                    signal.signal(signum, signal.SIG_DFL)
                env |= self.store.environment(os.getpid())
                # above the numbers the stored fds take (3, 4, …), before they take them
                floor = fdstore.LISTEN_FDS_START + len(self.store.entries)
                reports = fcntl.fcntl(self.reports_in.fileno(), fcntl.F_DUPFD, floor)
                env[EXIT_REPORTS_ENV] = str(reports)
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
        delay += self.restart_delay
        _say(f"server process {pid} died ({why}): restarting it; the sessions are kept")
        self._restart_at = time.monotonic() + delay


def _restart_delay(environ: Mapping[str, str]) -> float:
    try:
        return max(0.0, float(environ.get(RESTART_DELAY_ENV, "0")))
    except ValueError:
        return 0.0


# ----------------------------------------------------------------------------- cluster lease
@dataclass(frozen=True)
class ReportedLease:
    """A worker's cluster registration, as it reports it (``X_TETHER_LEASE=`` + JSON): what the
    supervisor needs to renew it with the registry's ``RENEW`` script."""

    node: str
    epoch: int
    redis_url: str
    prefix: str
    lease_ms: int
    renew_every: float
    timeout: float

    def line(self) -> str:
        fields = {
            "node": self.node,
            "epoch": self.epoch,
            "redis_url": self.redis_url,
            "prefix": self.prefix,
            "lease_ms": self.lease_ms,
            "renew_every": self.renew_every,
            "timeout": self.timeout,
        }
        return f"{fdstore.LEASE_VARIABLE}={json.dumps(fields, separators=(',', ':'))}"

    @classmethod
    def parse(cls, value: str) -> ReportedLease | None:
        """The lease of a report's value (None: not one; a stray sender, a garbled line)."""
        try:
            fields = json.loads(value)
            lease = cls(
                node=str(fields["node"]),
                epoch=int(fields["epoch"]),
                redis_url=str(fields["redis_url"]),
                prefix=str(fields["prefix"]),
                lease_ms=int(fields["lease_ms"]),
                renew_every=float(fields["renew_every"]),
                timeout=float(fields["timeout"]),
            )
        except (ValueError, KeyError, TypeError):
            return None
        if lease.renew_every <= 0 or lease.timeout <= 0 or lease.lease_ms <= 0:
            return None
        return lease


def report_lease(lease: ReportedLease, environ: Mapping[str, str] = os.environ) -> bool:
    """The worker's side: tell this supervisor the lease to keep while the worker is down (sent
    after each registration). Not sent under systemd: there is no supervisor there."""
    if environ.get(SUPERVISED_ENV) != "1":
        return False
    return fdstore.notify(lease.line(), environ=environ)


def renewal_due(
    lease: ReportedLease | None,
    last_renewal: float,
    now: float,
    *,
    worker_ready: bool,
    stopping: bool,
) -> bool:
    """Whether the supervisor renews the lease now: one is known, no ready worker renews it
    (dead, or restarting and not yet ``READY=1``), the supervisor is not stopping (the worker
    deregisters), and ``renew_every`` has passed since the last renewal or report (so that
    the node sends at most one renewal per ``renew_every``)."""
    if lease is None or worker_ready or stopping:
        return False
    return now >= last_renewal + lease.renew_every


RenewScript = Callable[..., Any]


class LeaseKeeper:
    """The supervisor's hold on the node's lease (see the module docstring)."""

    def __init__(self) -> None:
        self.lease: ReportedLease | None = None
        self.renewed_at = 0.0  # when the lease was last renewed or reported (monotonic)
        self.renewals = 0
        self._client: Redis | None = None
        self._script: RenewScript | None = None
        self._failing = False
        self._announced = False  # said once per stretch without a ready worker

    def report(self, value: str, now: float) -> None:
        """A worker registered (or took the node id over, or registered again)."""
        lease = ReportedLease.parse(value)
        if lease is None:
            return
        if self.lease is not None and self.lease.redis_url != lease.redis_url:
            self.close()
        self.lease, self.renewed_at = lease, now
        self._announced = False

    def due(self, now: float, *, worker_ready: bool, stopping: bool) -> bool:
        return renewal_due(
            self.lease, self.renewed_at, now, worker_ready=worker_ready, stopping=stopping
        )

    def next_renewal(self) -> float | None:
        return None if self.lease is None else self.renewed_at + self.lease.renew_every

    def renew(self, now: float) -> None:
        """One ``RENEW``; a lost or replaced lease is given up (the next worker registers again
        or takes the node id over); Redis unreachable: tried again after ``renew_every``."""
        lease = self.lease
        assert lease is not None
        self.renewed_at = now
        from redis.exceptions import RedisError

        try:
            found = int(self._renew_script(lease)(keys=self._keys(lease), args=self._args(lease)))
        except (RedisError, OSError) as error:
            if not self._failing:
                _say(f"cluster lease of node {lease.node} not renewed: {error}")
            self._failing = True
            return
        self._failing = False
        if found == 1:
            if not self._announced:
                _say(f"server process down: keeping the cluster lease of node {lease.node}")
            self._announced = True
            self.renewals += 1
            return
        why = "lost" if found == 0 else "replaced"
        _say(f"cluster lease of node {lease.node} {why}: no longer renewed here")
        self.lease = None
        self.close()

    def _renew_script(self, lease: ReportedLease) -> RenewScript:
        if self._script is None:
            from redis import Redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            from tether.server.cluster import scripts

            self._client = Redis.from_url(
                lease.redis_url,
                decode_responses=True,
                socket_timeout=lease.timeout,
                socket_connect_timeout=lease.timeout,
                retry=Retry(NoBackoff(), 0),
            )
            self._script = self._client.register_script(scripts.RENEW)
        return self._script

    @staticmethod
    def _keys(lease: ReportedLease) -> list[str]:
        return [f"{lease.prefix}node:{lease.node}", f"{lease.prefix}nodes"]

    @staticmethod
    def _args(lease: ReportedLease) -> list[Any]:
        return [lease.epoch, lease.lease_ms, lease.node]

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
        self._client, self._script = None, None


def _say(line: str) -> None:
    with contextlib.suppress(OSError):
        sys.stderr.write(f"tether: {line}\n")
        sys.stderr.flush()
