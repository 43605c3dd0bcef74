"""The aiohttp side of surviving the server process (docs/architecture.md, "Surviving the server
process"): once listening (on the socket :mod:`tether.server.starting` took over), answer
``POST /api/restart`` and run an upgrade on SIGUSR2.

The framework-neutral parts are :mod:`tether.server.upgrade` (check, hand over, exec, adopt)
and :mod:`tether.server.survival` (crash survival through the file-descriptor store).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Coroutine, Sequence
from typing import Any

from aiohttp import web

from tether.errors import HandoverError
from tether.server import logs, pty, survival, upgrade
from tether.server.aiohttp_front.api import json_error, require_operator
from tether.server.aiohttp_front.context import server_of
from tether.server.aiohttp_front.site import GuardedSite
from tether.server.config import Settings
from tether.server.core import Server
from tether.server.starting import listening_socket

STRAY_MARGIN = 5.0  # seconds past the kill grace to go on reaping strays after an upgrade


def start(server: Server, site: web.BaseSite, settings: Settings) -> None:
    """Once listening: make the upgrader, register SIGUSR2, announce ourselves as ready."""
    asyncio_server: Any = getattr(site, "_server", None)
    listen_fds = [s.fileno() for s in (asyncio_server.sockets if asyncio_server else [])]
    loop = asyncio.get_running_loop()

    def stop_accepting() -> None:
        # The upgrader holds duplicates of the listening fds: the sockets stay open and new
        # connections wait in their backlog for the next process.
        if asyncio_server is not None:
            asyncio_server.close()

    def resume_accepting(kept: Sequence[int]) -> None:
        # The exec failed after the check passed (rare): listen again on the same socket.
        if isinstance(site, GuardedSite) and kept:
            site._sock = listening_socket(os.dup(kept[0]))
            site._runner._unreg_site(site)
            _in_background(site.start())

    server.upgrader = upgrade.Upgrader(
        server.manager,
        server.connections,
        upgrade.upgrade_command(settings.upgrade_command),
        listen_fds,
        generation=lambda: server.generation,
        stop_accepting=stop_accepting,
        resume_accepting=resume_accepting,
        extra_fds=survival.inheritable_fds,
    )
    loop.add_signal_handler(signal.SIGUSR2, lambda: _upgrade_in_background(server))
    survival.serving(server.manager, listen_fds, server.generation)
    survival.watch_supervisor(_stop_as_on_sigterm)
    if server.generation > 1:
        _in_background(_reap_strays(server))


def _stop_as_on_sigterm() -> None:
    """Drain and end as SIGTERM does (once its handler is there: it comes after listening)."""
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        asyncio.get_running_loop().call_later(0.1, _stop_as_on_sigterm)
        return
    os.kill(os.getpid(), signal.SIGTERM)


async def _reap_strays(server: Server) -> None:
    """After an upgrade: the processes of sessions that were ending at the exec are still our
    children, unknown to this process; reap them while they end (bounded: their kill grace)."""
    deadline = server.clock.monotonic() + server.settings.kill_grace + STRAY_MARGIN
    while server.clock.monotonic() < deadline:
        if server.upgrader is None or not server.upgrader.running:  # its check is our child
            pty.reap_strays()
        await server.clock.sleep(0.5)


def _upgrade_in_background(server: Server) -> asyncio.Task[None] | None:
    upgrader = server.upgrader
    if upgrader is None or upgrader.running:
        return None

    async def run() -> None:
        try:
            await upgrader.upgrade()
        except HandoverError as error:
            server.last_upgrade_error = str(error)
            logs.log_at(logging.ERROR, "upgrade", ok=False, reason=str(error))

    return _in_background(run())


_tasks: set[asyncio.Task[None]] = set()


def _in_background(work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    task = asyncio.get_running_loop().create_task(work)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
    return task


async def restart(request: web.Request) -> web.StreamResponse:
    """``POST /api/restart`` (operator): check the new code, then upgrade in place. 202 once
    the check passed (the new generation follows); 409 with the reason when it failed."""
    refused = require_operator(request)
    if refused is not None:
        return refused
    server = server_of(request)
    upgrader = server.upgrader
    if upgrader is None:
        return json_error(409, "not_upgradable", "this server cannot upgrade in place")
    if upgrader.running:
        return json_error(409, "upgrade_running", "an upgrade is already under way")
    upgrader.running = True  # until the hand-over ends (it does not, when the exec works)
    try:
        await upgrade.precheck(upgrader.command)
    except HandoverError as error:
        upgrader.running = False
        logs.log_at(logging.ERROR, "upgrade", ok=False, reason=str(error))
        return json_error(409, "upgrade_refused", str(error))
    except BaseException:  # the request went away meanwhile: no upgrade
        upgrader.running = False
        raise
    body = {"status": "restarting", "pid": os.getpid(), "generation": server.generation}
    response = web.json_response(body, status=202, headers={"Connection": "close"})
    await response.prepare(request)
    await response.write_eof()
    _in_background(_hand_over(server, upgrader))
    return response


async def _hand_over(server: Server, upgrader: upgrade.Upgrader) -> None:
    try:
        await upgrader.hand_over()
    except HandoverError as error:
        logs.log_at(logging.ERROR, "upgrade", ok=False, reason=str(error))
    finally:
        upgrader.running = False
