"""How many sessions this process can hold, from the machine's limits, decided once at start.

A session costs file descriptors (its socket, the PTY master, the shell's pidfd and, with crash
survival, its state memfd: :data:`FDS_PER_SESSION`) and one PTY of the kernel's
``/proc/sys/kernel/pty/max`` (the kernel refuses the last index: at most ``max - 1`` are open at
once, and a devpts mounted outside the initial mount namespace also leaves ``pty/reserve`` of
them to the host). The server raises its own ``RLIMIT_NOFILE`` soft limit to what its sessions
need (never above the hard limit), then holds ``min(configured, what the fds allow, what the
PTYs allow)`` sessions; beyond that a connect is refused with 1013 before any fd runs out
(docs/operations.md, "Limits").

:func:`plan` is pure (its inputs are numbers); :func:`prepare` reads them from the system.
"""

from __future__ import annotations

import contextlib
import os
import resource
from dataclasses import dataclass
from pathlib import Path

FDS_PER_SESSION = 4  # socket, PTY master, pidfd, crash-state memfd
# Besides the sessions: listening sockets, the log file, the store, connections not yet upgraded
# or refused, HTTP requests, the slave fd while a shell starts.
FD_RESERVE = 128
_PTY_DIR = Path("/proc/sys/kernel/pty")


@dataclass(frozen=True, slots=True)
class Capacity:
    """The limits this process found at start, and the sessions they allow."""

    configured: int | None  # --max-sessions, None when not given
    fd_soft: int  # the RLIMIT_NOFILE soft limit in force (after raising it)
    fd_hard: int
    fds_open: int  # fds open when the limit was planned
    pty_max: int  # /proc/sys/kernel/pty/max
    ptys_in_use: int  # /proc/sys/kernel/pty/nr at start (every process's)

    @property
    def fd_sessions(self) -> int:
        """Sessions the fd soft limit leaves room for."""
        return max(0, (self.fd_soft - self.fds_open - FD_RESERVE) // FDS_PER_SESSION)

    @property
    def pty_sessions(self) -> int:
        """PTYs the kernel lets one process open at most (index ``max - 1`` is never given)."""
        return max(0, self.pty_max - 1)

    @property
    def max_sessions(self) -> int:
        """The sessions this server holds: the configured number, within what the limits allow."""
        allowed = max(1, min(self.fd_sessions, self.pty_sessions))
        return allowed if self.configured is None else min(self.configured, allowed)

    @property
    def clamped(self) -> bool:
        """A configured number above what the limits allow (it was lowered)."""
        return self.configured is not None and self.configured > self.max_sessions

    def fields(self) -> dict[str, int | None]:
        """For the start log line."""
        return {
            "max_sessions": self.max_sessions,
            "configured": self.configured,
            "fd_sessions": self.fd_sessions,
            "pty_sessions": self.pty_sessions,
            "fds_per_session": FDS_PER_SESSION,
            "nofile_soft": self.fd_soft,
            "nofile_hard": self.fd_hard,
            "fds_open": self.fds_open,
            "pty_max": self.pty_max,
            "ptys_in_use": self.ptys_in_use,
        }


def wanted_soft_limit(sessions: int, fds_open: int, soft: int, hard: int) -> int:
    """The soft limit ``sessions`` need: never lowered, never above ``hard``."""
    wanted = fds_open + FD_RESERVE + FDS_PER_SESSION * sessions
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    return max(soft, wanted)


def plan(
    configured: int | None,
    soft: int,
    hard: int,
    fds_open: int,
    pty_max: int,
    ptys_in_use: int,
) -> tuple[int, Capacity]:
    """The soft limit to set, and the capacity once it is set (pure)."""
    ptys = max(0, pty_max - 1)
    target = ptys if configured is None else min(configured, ptys)
    new_soft = wanted_soft_limit(target, fds_open, soft, hard)
    return new_soft, Capacity(configured, new_soft, hard, fds_open, pty_max, ptys_in_use)


def prepare(configured: int | None) -> Capacity:
    """Read the limits, raise the fd soft limit to what the sessions need, return the capacity.

    Raising it more than once (the supervisor and then its worker, or tests that start several
    servers in one process) is harmless: it only ever goes up.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    new_soft, capacity = plan(
        configured, soft, hard, open_fd_count(), _read_int("max", 4096), _read_int("nr", 0)
    )
    if new_soft != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
        except (ValueError, OSError):
            c = capacity
            return Capacity(configured, soft, hard, c.fds_open, c.pty_max, c.ptys_in_use)
    return capacity


def open_fd_count() -> int:
    """File descriptors this process has open now."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # minus the one listing it
    except OSError:
        return 0


def _read_int(name: str, default: int) -> int:
    with contextlib.suppress(OSError, ValueError):
        return int((_PTY_DIR / name).read_text().strip())
    return default
