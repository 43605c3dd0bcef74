"""Spawn, read, write, resize, signal and reap shells in PTYs — the only OS-terminal code.

Facts this module relies on (checked on this machine; docs/architecture.md, "PTY facts"):
``posix_spawn`` with ``setsid`` opens the pts as
fd 0 after ``setsid``, so it becomes the controlling terminal; the slave must be closed in the
parent or end-of-file never comes; ignored signals survive exec, so every disposition is reset;
jobs get process groups of their own, so ending a terminal signals its whole session.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import grp
import os
import shutil
import signal
import struct
import termios
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tether.errors import OutOfResources, SpawnError

READ_CHUNK = 65536
_SPAWN_LOCK = threading.Lock()
_libc = ctypes.CDLL(None, use_errno=True)
_libc.unlockpt.argtypes = [ctypes.c_int]
_libc.ptsname_r.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]
_subreaper = False  # set by become_subreaper(): orphans of our shells are then our children
_shells: set[int] = set()  # shells spawned here and not yet reaped (each leads its own session)
_ALL_SIGNALS = {s for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP)}
ExitStatus = tuple[int | None, int | None]  # (exit code, signal number)


def _unknown_exit(_pid: int) -> ExitStatus | None:
    return (None, None)


# The exit status of a shell that is not our child (its reaper, the supervisor, reports it:
# server/survival.py); None while it has ended but not been reported yet.
_orphan_exit: Callable[[int], ExitStatus | None] = _unknown_exit


def report_orphan_exits_with(lookup: Callable[[int], ExitStatus | None]) -> None:
    """Where :meth:`PtyProcess.poll_exit` learns how a shell that is not our child ended."""
    global _orphan_exit
    _orphan_exit = lookup


@dataclass(slots=True)
class PtyProcess:
    """A shell running on the slave side of a PTY whose master ``fd`` the server holds."""

    pid: int
    fd: int
    pidfd: int

    def read_available(self, limit: int) -> tuple[bytes, bool]:
        """Drain up to ``limit`` bytes without blocking; returns (data, reached_end_of_file)."""
        parts: list[bytes] = []
        total = 0
        while total < limit:
            try:
                chunk = os.read(self.fd, min(READ_CHUNK, limit - total))
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EIO:  # every slave holder is gone: end of file
                    return b"".join(parts), True
                raise
            if not chunk:
                return b"".join(parts), True
            parts.append(chunk)
            total += len(chunk)
        return (parts[0] if len(parts) == 1 else b"".join(parts)), False

    def write(self, data: bytes | memoryview) -> int:
        """Write what the terminal takes now; returns the number of bytes written (maybe 0)."""
        try:
            return os.write(self.fd, data)
        except BlockingIOError:
            return 0

    def resize(self, cols: int, rows: int) -> None:
        """Set the window size; the kernel sends SIGWINCH to the foreground process group."""
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def poll_exit(self) -> tuple[int | None, int | None] | None:
        """Reap the shell if it ended: (exit code, signal number), else None."""
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:  # not our child (adopted after a crash): ask its reaper
            status_of_orphan = _orphan_exit(self.pid)
            if status_of_orphan is not None:
                _shells.discard(self.pid)
            return status_of_orphan
        if pid == 0:
            return None
        _shells.discard(self.pid)
        if os.WIFSIGNALED(status):
            return (None, os.WTERMSIG(status))
        return (os.waitstatus_to_exitcode(status), None)

    def close_fds(self) -> None:
        """Close the master and the pidfd (idempotent)."""
        for name in ("fd", "pidfd"):
            fd = getattr(self, name)
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, name, -1)


def spawn(
    argv: Sequence[str],
    cwd: str,
    env: Mapping[str, str],
    cols: int,
    rows: int,
    *,
    terminal_owner: int | None = None,
) -> PtyProcess:
    """Start ``argv`` in a new session on a new PTY of ``cols``×``rows`` in directory ``cwd``.

    ``terminal_owner``: the uid the shell will run as, when not ours; the terminal device is
    then given to it (group ``tty``, mode 620, as login does), so that its programs can reopen
    their terminal by name and no other account can.
    """
    master, slave_path = _open_master()
    try:
        if terminal_owner is not None:
            _give_terminal(slave_path, terminal_owner)
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        pid = _posix_spawn_in(argv, cwd, env, slave_path)
    except BaseException:
        os.close(master)
        raise
    _shells.add(pid)
    try:
        pidfd = os.pidfd_open(pid)
    except OSError as exc:
        if exc.errno not in (errno.EMFILE, errno.ENFILE):
            pidfd = -1  # gone already: its end is seen on the master
        else:  # the last fd went to the master: the machine is full, do not start
            _abandon(pid, master)
            raise _out_of_resources(exc) from exc
    return PtyProcess(pid=pid, fd=master, pidfd=pidfd)


def _open_master() -> tuple[int, str]:
    """A new PTY's master (non-blocking) and the path of its slave, which only the shell opens:
    no slave fd here to close, and one system call each for the unlock and the name."""
    try:
        master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise _out_of_resources(exc) from exc
    name = ctypes.create_string_buffer(64)
    failed = _libc.unlockpt(master) or _libc.ptsname_r(master, name, len(name))
    if failed:
        os.close(master)
        raise _out_of_resources(OSError(ctypes.get_errno(), "cannot unlock the PTY"))
    return master, os.fsdecode(name.value)


def _abandon(pid: int, master: int) -> None:
    """Kill and reap a shell just started, and close its master (the session is refused)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    _shells.discard(pid)
    os.close(master)


def is_running_shell(pid: int) -> bool:
    """True while ``pid`` is a shell spawned or adopted here whose end has not been seen."""
    return pid in _shells


def adopt(pid: int, fd: int) -> PtyProcess:
    """A shell another server process started, whose master ``fd`` was handed to us (an
    upgrade's exec, or the file-descriptor store after a crash); it need not be our child."""
    os.set_inheritable(fd, False)
    os.set_blocking(fd, False)
    _shells.add(pid)
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:  # it is gone already: the session ends at once
        pidfd = -1
    return PtyProcess(pid=pid, fd=fd, pidfd=pidfd)


def window_size(fd: int) -> tuple[int, int]:
    """(cols, rows) of the terminal whose master is ``fd`` (the kernel keeps it)."""
    rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, bytes(8)))
    return max(cols, 1), max(rows, 1)


def _give_terminal(slave: str, uid: int) -> None:
    try:
        tty_group = grp.getgrnam("tty").gr_gid
    except KeyError:
        tty_group = -1
    # Without CAP_CHOWN (a non-root server) the terminal stays ours: no other account can open
    # it by name either, only the shell's programs cannot reopen it so.
    with contextlib.suppress(PermissionError):
        os.chown(slave, uid, tty_group)
        os.chmod(slave, 0o620)


def _posix_spawn_in(argv: Sequence[str], cwd: str, env: Mapping[str, str], slave: str) -> int:
    # posix_spawn has no chdir action: change directory around the call, under a lock, so no
    # other spawn runs meanwhile. The server resolves every other path to absolute at start.
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, slave, os.O_RDWR, 0),
        (os.POSIX_SPAWN_DUP2, 0, 1),
        (os.POSIX_SPAWN_DUP2, 0, 2),
    ]
    program = _program_path(argv[0])
    with _SPAWN_LOCK:
        previous = os.getcwd()
        try:
            os.chdir(cwd)
        except OSError as exc:
            raise SpawnError(f"cannot enter directory {cwd}: {exc.strerror}") from exc
        try:
            if program is not None:
                try:
                    return _posix_spawn(os.posix_spawn, program, argv, env, actions)
                except OSError as exc:
                    if exc.errno not in (errno.ENOENT, errno.ENOEXEC):
                        raise
                    _programs.clear()  # moved since it was found, or a script: as before
            return _posix_spawn(os.posix_spawnp, argv[0], argv, env, actions)
        except OSError as exc:
            if exc.errno in _RESOURCE_ERRORS:
                raise _out_of_resources(exc) from exc
            raise SpawnError(f"cannot start {argv[0]}: {exc.strerror}") from exc
        finally:
            os.chdir(previous)


def _posix_spawn(
    call: Callable[..., int],
    program: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    actions: list[tuple[Any, ...]],
) -> int:
    # Every signal back to its default (ignored ones survive exec): one sigaction each in the
    # child, cheaper than glibc's own check of each (a query, then maybe a set).
    return call(
        program,
        list(argv),
        env if isinstance(env, dict) else dict(env),
        file_actions=actions,
        setsid=True,
        setsigmask=(),
        setsigdef=_ALL_SIGNALS,
    )


_programs: dict[tuple[str, str | None], str | None] = {}


def _program_path(name: str) -> str | None:
    """Where ``posix_spawnp`` would find ``name`` on our ``PATH``, found once: it would try
    every directory before it in the child, at each spawn (None: let it search)."""
    if "/" in name:
        return None
    key = (name, os.environ.get("PATH"))
    if key not in _programs:
        if len(_programs) >= 64:
            _programs.clear()
        found = shutil.which(name, os.X_OK, key[1] if key[1] is not None else os.defpath)
        # A relative directory on PATH is searched from the shell's directory: not cached.
        _programs[key] = found if found is not None and os.path.isabs(found) else None
    return _programs[key]


# A full machine rather than a broken shell: no PTY (ENOSPC), fd (EMFILE, ENFILE) or process.
_RESOURCE_ERRORS = {errno.ENOSPC, errno.EMFILE, errno.ENFILE, errno.EAGAIN, errno.ENOMEM}


def _out_of_resources(exc: OSError) -> SpawnError:
    """The error for a failed PTY open or spawn: :class:`OutOfResources` when the machine is
    full (its message names what ran out), else a plain :class:`SpawnError`."""
    if exc.errno == errno.ENOSPC:
        return OutOfResources("no free PTY")
    if exc.errno in (errno.EMFILE, errno.ENFILE):
        return OutOfResources("no file descriptor left")
    if exc.errno in _RESOURCE_ERRORS:
        return OutOfResources("no process left")
    return SpawnError(f"cannot open a PTY: {exc.strerror}")


def session_members(sid: int) -> list[int] | None:
    """PIDs of every live or zombie process whose session id is ``sid``.

    None when this process is not a child subreaper: then only :func:`scan_all_processes` can
    tell (slow with thousands of processes: run it in a thread).

    As a subreaper, a process of the terminal's session either descends from its shell or was
    orphaned and handed to this process: walk down from those. Our other children are the other
    terminals' shells, each the leader of a session of its own: they are skipped unread, so the
    walk costs a few reads of ``/proc`` however many terminals there are.
    """
    if not _subreaper:
        return None
    own = _own_children()
    members: list[int] = []
    seen: set[int] = set()
    pending = [sid, *(child for child in own if child not in _shells)]
    while pending:
        pid = pending.pop()
        if pid in seen:
            continue
        seen.add(pid)
        if _session_id_of(pid) == sid:
            members.append(pid)
            pending.extend(_children_of(pid))
    return members


def _own_children() -> list[int]:
    # Shells are spawned by the event loop's thread; orphans are handed to the main thread (the
    # first live thread of a subreaper). Other threads of ours have no children to list.
    return _threads_children(os.getpid(), {os.getpid(), threading.get_native_id()})


def _children_of(pid: int) -> list[int]:
    try:
        return _threads_children(pid, os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return []


def _threads_children(pid: int, threads: Iterable[int | str]) -> list[int]:
    children: list[int] = []
    for tid in threads:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as handle:
                children.extend(int(child) for child in handle.read().split())
        except OSError:
            continue
    return children


def _session_id_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()
    return int(fields[3]) if len(fields) > 3 else None


def leads_a_session(pid: int) -> bool:
    """True when ``pid`` (running, or a zombie) leads its session: a terminal's shell."""
    return _session_id_of(pid) == pid


def scan_all_processes(sid: int) -> list[int]:
    """Every process of session ``sid``, by reading all of /proc (for tools and tests)."""
    names = [name for name in os.listdir("/proc") if name.isdigit()]
    return [int(name) for name in names if _session_id_of(int(name)) == sid]


def is_zombie_or_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (exited, possibly not yet reaped)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return True
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] in (b"Z", b"X")


def exists(pid: int) -> bool:
    """True while ``pid`` has a /proc entry (running, or a zombie not yet reaped)."""
    return os.path.exists(f"/proc/{pid}")


def signal_session(
    sid: int, signals: Sequence[int], members: Sequence[int] | None = None
) -> list[int]:
    """Send each of ``signals`` to every process of terminal session ``sid``; returns the PIDs.

    ``members``: the processes, when the caller has found them (else every entry of /proc is
    read: slow, call it in a thread).
    """
    found = list(members) if members is not None else scan_all_processes(sid)
    for pid in found:
        for signum in signals:
            # PermissionError: another account's process and no CAP_KILL (docs/operations.md);
            # the hang-up of its terminal still reaches it.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signum)
    return found


def reap(pids: Sequence[int]) -> None:
    """Collect the exit status of those ``pids`` that are our children (ignore the others)."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                _shells.discard(pid)


def reap_strays() -> list[int]:
    """Reap our children that are no terminal's shell and have ended (a session that was
    ending when an upgrade exec'ed: its shell and jobs are still our children, and nobody
    else waits for them); returns their PIDs."""
    reaped = []
    for pid in _own_children():
        if pid in _shells:
            continue
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                reaped.append(pid)
    return reaped


def release_free_memory() -> None:
    """Give freed heap memory back to the system (glibc keeps it otherwise)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


def become_subreaper() -> bool:
    """Make orphaned descendants (jobs of ended shells) our children, so that we reap them."""
    global _subreaper
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_child_subreaper = 36
        _subreaper = bool(libc.prctl(pr_set_child_subreaper, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        _subreaper = False
    return _subreaper


def make_undumpable() -> bool:
    """Forbid core dumps and same-account access to this process's memory and /proc entries
    (``environ``, ``mem``, ``fd``): they become root's. Shells reset it when they exec."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_dumpable = 4
        return bool(libc.prctl(pr_set_dumpable, 0, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def process_rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` in bytes (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0
