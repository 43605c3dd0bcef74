"""Ending a terminal's processes (docs/protocol.md, section 5): every process of its session.

Jobs started by the shell live in process groups of their own, so signalling the shell's group
would miss them: every process whose session id is the shell's gets SIGHUP and SIGCONT (a stopped
job must wake up to die), then SIGKILL after a grace period. Every child is reaped, including
orphaned jobs handed to the server as a child subreaper, and the terminal's fds are closed.
"""

from __future__ import annotations

import asyncio
import signal

from tether.server import pty

HANG_UP = (signal.SIGHUP, signal.SIGCONT)
KILL = (signal.SIGKILL,)
KILL_WAIT = 2.0  # seconds to wait for SIGKILLed processes to be gone
_POLL = 0.02
_REAP_ROUNDS, _REAP_POLL = 50, 0.01


async def end_processes(process: pty.PtyProcess, kill_grace: float) -> None:
    """End every process of ``process``'s terminal session, reap them, close its fds.

    Processes still running ``kill_grace`` seconds after SIGHUP are killed. The fds are closed
    even if this is cancelled.
    """
    sid = process.pid
    everyone: set[int] = {sid}
    try:
        found = await signal_session(sid, HANG_UP)
        everyone.update(found)
        if await still_running(found, kill_grace):
            found = await signal_session(sid, KILL)
            everyone.update(found)
            await still_running(found, KILL_WAIT)
        await reap_all(everyone)
    finally:
        process.close_fds()


async def signal_session(sid: int, signals: tuple[int, ...]) -> list[int]:
    """Send ``signals`` to every process of terminal session ``sid``; returns their PIDs."""
    # As a subreaper the server finds the session's processes in a few reads of /proc; else it
    # must read all of /proc, slow with thousands of processes: in a thread.
    members = pty.session_members(sid)
    if members is None:
        return await asyncio.to_thread(pty.signal_session, sid, signals)
    return pty.signal_session(sid, signals, members)


async def still_running(pids: list[int], timeout: float) -> list[int]:
    """Wait up to ``timeout`` seconds for ``pids`` to end (reaping ours); returns those left."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    running = list(pids)
    while running:
        pty.reap(running)
        running = [pid for pid in running if not pty.is_zombie_or_gone(pid)]
        if not running or loop.time() >= deadline:
            break
        await asyncio.sleep(_POLL)
    return running


async def reap_all(pids: set[int]) -> None:
    """Collect the exit status of those of ``pids`` that are our children, for a short while."""
    # The server is a child subreaper, so orphaned jobs are its children: collect them. A process
    # that is not ours disappears when its own parent reaps it; the wait is bounded either way.
    for _ in range(_REAP_ROUNDS):
        pty.reap(list(pids))
        pids = {pid for pid in pids if pty.exists(pid)}
        if not pids:
            return
        await asyncio.sleep(_REAP_POLL)
