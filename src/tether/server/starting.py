"""The start of ``tether serve``'s worker, up to the web framework: settings checked, the server
core made, the log opened, and what a previous process of this server left taken over.

After an upgrade in place or a crash there are clients waiting to resume (1,000 of them in the
benchmark, docs/benchmarks.md). The worker then listens on the inherited socket with the direct
front alone (:class:`~tether.server.direct_front.listener.Listener`) as soon as the sessions
are adopted, and imports aiohttp — a third of its start — only once that burst of resumes has
passed: requests for the rest (the API, the page) wait for it, parked, ``SETTLE_LONGEST`` at
most. A fresh start, and a cluster node (whose ``/ws/terminal`` is aiohttp's), listen once
everything is there, as before (docs/architecture.md, "Surviving the server process").
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import ssl
from dataclasses import dataclass, field

from tether.errors import ConfigError
from tether.server import handover, logs, pty, survival, upgrade
from tether.server.config import Settings
from tether.server.core import Server
from tether.server.direct_front.listener import Fallback, Listener
from tether.server.files import check_private

# 1,000 clients resume at once after an upgrade: they must wait in the backlog, not be refused
# (aiohttp's default is 128; the kernel caps it at net.core.somaxconn, 4096 here).
LISTEN_BACKLOG = 4096
HELD_SIGNALS = (signal.SIGUSR2, signal.SIGHUP)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)  # held while terminals are served early


@dataclass
class Start:
    """What the worker's start made before the web framework comes in."""

    settings: Settings
    server: Server
    ssl_context: ssl.SSLContext | None
    log_handlers: list[logging.Handler]
    inherited: list[socket.socket] = field(default_factory=list)  # listening sockets
    listener: Listener | None = None  # listening already (the direct front alone)
    held: list[int] = field(default_factory=list)  # signals that came before their handlers

    def hold_signals(self, signals: tuple[int, ...] = HELD_SIGNALS) -> None:
        """Until the server's handlers are there, SIGUSR2 (upgrade) and SIGHUP (reload) are
        remembered, not fatal (their default action ends the process, and with it, without a
        supervisor, every session): :meth:`release_signals` sends them again. While terminals
        are served early, SIGTERM and SIGINT are held too, so that they drain as they do later
        (clients told 1001, shells ended after the drain grace) instead of cutting everything."""
        for signum in signals:
            signal.signal(signum, lambda signum, _frame: self.held.append(signum))

    def release_signals(self) -> None:
        """The handlers are there: what came meanwhile is sent again, once each. A stop wins
        over an upgrade asked for with it (the upgrade is dropped)."""
        held, self.held = to_resend(self.held), []
        if held:
            logs.log_event("signals", held=[signal.Signals(n).name for n in held])
        for signum in held:
            os.kill(os.getpid(), signum)

    def close(self) -> None:
        """Undo it, when the rest of the start failed."""
        if self.listener is not None:
            self.listener.close()
        for sock in self.inherited:
            sock.close()
        logs.remove(self.log_handlers)


def to_resend(held: list[int]) -> list[int]:
    """The signals to send again, in order, of those held: each once, an upgrade dropped when a
    stop came too (the stop wins)."""
    signals = sorted(set(held))
    if signal.SIGUSR2 in signals and any(signum in STOP_SIGNALS for signum in signals):
        signals.remove(signal.SIGUSR2)
    return signals


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The server's TLS context from ``--certfile``/``--keyfile`` (None: plain HTTP)."""
    if settings.certfile is None:
        return None
    if settings.keyfile is not None:
        check_private(settings.keyfile, "keyfile")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.certfile, settings.keyfile)
    except OSError as exc:
        reason = exc.strerror or getattr(exc, "reason", None) or "unreadable or mismatched"
        raise ConfigError("certfile", f"cannot load certificate and key: {reason}") from None
    return context


def begin(settings: Settings, *, server: Server | None = None) -> Start:
    """Make the server core, open the log and take over what a previous process left;
    ConfigError before that when a key, certificate or tokens file is unusable."""
    # Before any secret is read: processes of our own account (shells, with
    # --allow-same-user-shells) may not read our memory or /proc/<pid>/environ.
    pty.make_undumpable()
    ssl_context = tls_context(settings)
    server = server or Server(settings)
    handlers = logs.configure(
        settings.log_file,
        settings.log_level,
        settings.log_max_bytes,
        settings.log_backups,
        stderr=settings.log_stderr_level != "off",
        # With a log file, stderr carries warnings and errors only: formatting every event
        # twice cost a third of a re-attach's CPU (docs/benchmarks.md).
        stderr_level=settings.log_stderr_level or ("warning" if settings.log_file else None),
    )
    start = Start(settings, server, ssl_context, handlers)
    start.hold_signals()
    try:
        start.inherited = take_over(server)
    except BaseException:
        start.close()
        raise
    return start


async def listen_early(start: Start) -> None:
    """With sessions taken over (and no cluster): listen with the direct front alone, then
    return once the clients' burst of resumes has passed."""
    server = start.server
    if not start.inherited or server.cluster is not None or not server.manager.sessions:
        return
    start.hold_signals(STOP_SIGNALS)  # released with the others, once the handlers are there
    listener = Listener(server.pending, server, Fallback())
    await listener.listen(
        sock=start.inherited[0], ssl_context=start.ssl_context, backlog=LISTEN_BACKLOG
    )
    start.listener = listener
    logs.log_event("listen", early=True, sessions=len(server.manager.sessions))
    await listener.settle()


def take_over(server: Server) -> list[socket.socket]:
    """Adopt what the previous process of this server left: the hand-over of an upgrade, or
    the file-descriptor store after a crash. Returns the inherited listening sockets."""
    survival.watch(server.manager)
    fd = handover.inherited_fd(os.environ)
    now = server.clock.monotonic()
    if fd is not None:
        taken = handover.read(fd)
        survival.handed_over()
        sessions = upgrade.adopt(server.manager, taken, now)
        capacity = server.settings.buffer_size
        for session, entry in zip(sessions, taken.sessions, strict=True):
            survival.keep_after_upgrade(session, entry, capacity)
        server.generation = taken.generation + 1
        generation = server.generation
        logs.log_event("adopt", reason="upgrade", sessions=len(sessions), generation=generation)
        return [listening_socket(fd) for fd in taken.listen_fds]
    recovered = survival.recover(server.manager, now)
    if recovered is None:
        return []
    server.generation = recovered.generation
    logs.log_event(
        "adopt", reason="recovery", sessions=recovered.sessions, generation=server.generation
    )
    return [listening_socket(fd) for fd in recovered.listen_fds]


def listening_socket(fd: int) -> socket.socket:
    sock = socket.socket(fileno=fd)
    sock.set_inheritable(False)
    return sock
