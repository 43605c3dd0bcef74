"""Upgrade in place: the worker replaces itself with the code now installed, keeping every
session (docs/architecture.md, "Surviving the server process").

1. **Pre-check** in a child process: the upgrade command (by default the command line this
   process started with, ``sys.orig_argv``) runs with ``TETHER_UPGRADE_CHECK=1``: the new code
   imports the whole server, reads its settings, loads keys and certificates, tells whether it
   reads this hand-over version, and exits. Anything else (a syntax or import error, a bad
   config, an unknown version) refuses the upgrade with the child's last line of output, and
   this process keeps serving.
2. Stop accepting (the listening socket stays open in a duplicate: connections wait in its
   backlog), close every client with 1012 (they resume at once), and wait until every close
   frame is in the kernel — not for the clients' replies (docs/architecture.md).
3. Snapshot every session into a :mod:`~tether.server.handover` memfd, clear close-on-exec on
   the PTY masters, the listening sockets and the memfd, and ``execve`` the upgrade command:
   the same pid, so the shells stay our children.
4. The new process (:func:`adopt`) reads the hand-over, re-adopts the sessions and serves on
   the inherited sockets with the generation one higher.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import shutil
import sys
from collections import OrderedDict
from collections.abc import Callable, Sequence

from tether.errors import HandoverError
from tether.protocol.modes import ModeTracker
from tether.protocol.ring import RingBuffer
from tether.server import handover, logs, pty
from tether.server.front import Front
from tether.server.handover import Handover, SessionHandover
from tether.server.manager import SessionManager
from tether.server.session import Session, SessionInfo, SessionState
from tether.server.store import Tombstone

CHECK_ENV = "TETHER_UPGRADE_CHECK"  # set: check the code and settings, then exit
CHECK_OK = "tether: upgrade check ok"
CHECK_TIMEOUT = 60.0  # seconds the pre-check may take (a cold import of the new code)
CLOSE_WAIT = 3.0  # seconds at most until every 1012 has left (or its connection ended)
CLOSE_POLL = 0.005  # seconds between looks at whether every 1012 has left
RESTART_REASON = "server restarting"


def upgrade_command(configured: str | None) -> list[str]:
    """The command the upgrade runs: ``configured`` (shell words), else our own command line."""
    return shlex.split(configured) if configured else list(sys.orig_argv)


def check_requested(environ: os._Environ[str] | dict[str, str]) -> bool:
    return environ.get(CHECK_ENV) == "1"


def check_version(environ: os._Environ[str] | dict[str, str]) -> None:
    """In the pre-check child: refuse a hand-over version this code cannot read."""
    version = environ.get(CHECK_ENV + "_VERSION", str(handover.HANDOVER_VERSION))
    if not version.isdigit() or int(version) not in handover.READABLE_VERSIONS:
        raise HandoverError(f"this tether cannot read hand-over version {version}")


async def precheck(command: Sequence[str], timeout: float = CHECK_TIMEOUT) -> None:
    """Run ``command`` in check mode; HandoverError (one line why) unless it passed."""
    env = dict(os.environ) | {
        CHECK_ENV: "1",
        CHECK_ENV + "_VERSION": str(handover.HANDOVER_VERSION),
    }
    env.pop("NOTIFY_SOCKET", None)
    try:
        child = await asyncio.create_subprocess_exec(
            *command,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    except OSError as exc:
        raise HandoverError(f"cannot run the upgrade command: {exc.strerror}") from None
    try:
        output, _ = await asyncio.wait_for(child.communicate(), timeout)
    except TimeoutError:
        child.kill()
        await child.wait()
        raise HandoverError(f"the upgrade check took longer than {timeout:g} s") from None
    lines = [line.strip() for line in output.decode(errors="replace").splitlines() if line.strip()]
    if child.returncode != 0 or CHECK_OK not in lines:
        why = lines[-1] if lines else f"exit status {child.returncode}"
        raise HandoverError(f"the new code failed its check: {why}"[:300])


# ----------------------------------------------------------------------------- snapshot
def snapshot_session(session: Session, now: float) -> SessionHandover:
    info = session.info
    facts = {
        "key": info.key,
        "session_id": info.session_id,
        "project": info.project,
        "owner": info.owner,
        "created_at": info.created_at,
        "cols": info.cols,
        "rows": info.rows,
        "pid": info.pid,
        "idle_for": max(0.0, now - info.last_activity),
        "input_counts": [[client, count] for client, count in info.input_counts.items()],
        "name": info.name,
    }
    detached = session.state is SessionState.DETACHED
    observer = session.observer
    return SessionHandover(
        info=facts,
        fd=session.process.fd,
        head=session.ring.head,
        held=session.ring.held(),
        tail_modes=session.tail_modes.to_state(),
        detached_for=max(0.0, now - session.detached_since) if detached else 0.0,
        input_bytes=session.input_bytes,
        state_fd=getattr(observer, "state_fd", -1),
        store_name=getattr(observer, "store_name", ""),
    )


def snapshot(
    manager: SessionManager, generation: int, listen_fds: Sequence[int], now: float
) -> Handover:
    sessions = tuple(
        snapshot_session(s, now) for s in manager.sessions.values() if s.process.fd >= 0
    )
    tombstones = tuple(
        {"key": t.key, "owner": t.owner, "code": t.code, "reason": t.reason,
         "expires_in": t.expires_at - now}
        for t in manager.tombstones.entries()
        if not t.is_expired(now)
    )  # fmt: skip
    return Handover(generation, tuple(listen_fds), sessions, tombstones)


# ----------------------------------------------------------------------------- adopt
def adopt(manager: SessionManager, taken: Handover, now: float) -> list[Session]:
    """Re-create the sessions of a hand-over in ``manager`` (the new process's side)."""
    adopted = []
    for entry in taken.sessions:
        session = adopt_session(manager, entry, now)
        manager.adopt(session)
        adopted.append(session)
    for t in taken.tombstones:
        expires = now + float(t["expires_in"])
        tombstone = Tombstone(t["key"], t["owner"], t["code"], t["reason"], now, expires)
        manager.tombstones.put(tombstone)
    return adopted


def adopt_session(manager: SessionManager, entry: SessionHandover, now: float) -> Session:
    facts = entry.info
    info = SessionInfo(
        key=facts["key"],
        session_id=facts["session_id"],
        project=facts["project"],
        owner=facts["owner"],
        created_at=float(facts["created_at"]),
        cols=int(facts["cols"]),
        rows=int(facts["rows"]),
        pid=int(facts["pid"]),
        last_activity=now - float(facts["idle_for"]),
        input_counts=OrderedDict((str(c), int(n)) for c, n in facts["input_counts"]),
        name=str(facts.get("name", "")),  # absent in a hand-over from before display names
    )
    capacity = manager.settings.buffer_size
    tail_modes = ModeTracker.from_state(entry.tail_modes)
    if len(entry.held) > capacity:  # a smaller buffer now: the modes of what is dropped count
        tail_modes.feed(entry.held[: len(entry.held) - capacity])
    ring = RingBuffer.restored(capacity, entry.head, entry.held)
    process = pty.adopt(info.pid, entry.fd)
    session = Session(info, process, capacity, manager.clock, _no_exit, adopted=(ring, tail_modes))
    session.detached_since = now - entry.detached_for
    session.input_bytes = entry.input_bytes
    return session


def _no_exit(_session: Session, _code: int | None, _signal: int | None) -> None:
    """Replaced by the manager's handler when it adopts the session."""


# ----------------------------------------------------------------------------- exec
class Upgrader:
    """Runs one upgrade at a time for a worker; see the module docstring for the steps."""

    def __init__(
        self,
        manager: SessionManager,
        connections: set[Front],
        command: Sequence[str],
        listen_fds: Sequence[int],
        *,
        generation: Callable[[], int],
        stop_accepting: Callable[[], None],
        resume_accepting: Callable[[Sequence[int]], None],
        extra_fds: Callable[[], Sequence[int]] = tuple,
    ) -> None:
        self.manager = manager
        self.connections = connections
        self.command = list(command)
        self.listen_fds = list(listen_fds)
        self._generation = generation
        self._stop_accepting = stop_accepting
        self._resume_accepting = resume_accepting
        self._extra_fds = extra_fds
        self.running = False

    async def upgrade(self) -> None:
        """Check, hand over and exec; returns only by raising HandoverError (still serving)."""
        if self.running:
            raise HandoverError("an upgrade is already under way")
        self.running = True
        try:
            await precheck(self.command)
            logs.log_event("upgrade", step="checked", generation=self._generation())
            await self.hand_over()
        finally:
            self.running = False

    async def hand_over(self) -> None:
        """Steps 2 and 3 (the check passed): returns only by raising (still serving)."""
        kept = [_inheritable(os.dup(fd)) for fd in self.listen_fds]
        self._stop_accepting()
        try:
            await self._close_clients()
            logs.log_event("upgrade", step="closed", clients_left=len(self.connections))
            await self._flush_store()
            now = self.manager.clock()
            taken = snapshot(self.manager, self._generation(), kept, now)
            fd = handover.write(taken)
            inheritable = [s.fd for s in taken.sessions] + [*self._extra_fds()]
            for session_fd in inheritable:
                os.set_inheritable(session_fd, True)
            logs.log_event("upgrade", step="exec", sessions=len(taken.sessions))
            _flush_logs()
            self._exec(fd)
        except BaseException:
            for session in self.manager.sessions.values():
                if session.process.fd >= 0:
                    os.set_inheritable(session.process.fd, False)
            for extra in self._extra_fds():  # or the next shells would inherit them
                with contextlib.suppress(OSError):
                    os.set_inheritable(extra, False)
            self._resume_accepting(kept)
            for held in kept:
                os.close(held)
            raise

    async def _close_clients(self) -> None:
        """Tell every client 1012 and wait until each close frame is on the wire (its
        connection gone, or its front says the frame left): the replies are not awaited."""
        for front in list(self.connections):
            front.close(1012, RESTART_REASON)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CLOSE_WAIT
        while loop.time() < deadline and not all(f.close_sent for f in list(self.connections)):
            await asyncio.sleep(CLOSE_POLL)

    async def _flush_store(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.manager.flush_store(), 2.0)

    def _exec(self, fd: int) -> None:
        path = shutil.which(self.command[0]) or self.command[0]
        env = dict(os.environ) | {handover.ENV_FD: str(fd)}
        try:
            os.execve(path, self.command, env)
        except OSError as exc:
            os.close(fd)
            raise HandoverError(f"cannot exec the upgrade command: {exc.strerror}") from None


def _inheritable(fd: int) -> int:
    os.set_inheritable(fd, True)
    return fd


def _flush_logs() -> None:
    for handler in logging.getLogger().handlers + logging.getLogger(logs.LIFECYCLE_LOGGER).handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
